#!/bin/sh
# run.sh BUILD — `make bench`: Artificien side by side with PyTorch in the same run.
# Training images/s at batch 100 and 10 (1 and 2 threads), inference images/s at batch 1000,
# the BLAS SGEMM rate and the fraction of it training reaches; then the ratios to PyTorch
# (Debian's python3-torch via /usr/bin/python3, when installed). Results also go to
# BUILD/bench/*.json. Machines are shared and noisy: compare the ratios, not absolute values.
set -u
BUILD=${1:-build}
BIN="$BUILD/artificien"
OUT="$BUILD/bench"
mkdir -p "$OUT"
PY=/usr/bin/python3
have_torch=0
if [ -x "$PY" ] && "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then have_torch=1; fi

echo "== engine (artificien bench)"
"$BIN" bench --batch 100 --threads 1 --steps 600 > "$OUT/ours_b100_t1.json" || exit 1
"$BIN" bench --batch 100 --threads 2 --steps 600 --gemm 0 > "$OUT/ours_b100_t2.json" || exit 1
"$BIN" bench --batch 10 --threads 1 --steps 3000 --infer-reps 0 --gemm 0 > "$OUT/ours_b10_t1.json" || exit 1
"$BIN" bench --batch 10 --threads 2 --steps 3000 --infer-reps 0 --gemm 0 > "$OUT/ours_b10_t2.json" || exit 1
cat "$OUT"/ours_*.json

if [ "$have_torch" = 1 ]; then
    echo "== PyTorch $("$PY" -c 'import torch; print(torch.__version__)') (bench/peers/torch_central.py)"
    "$PY" bench/peers/torch_central.py --threads 1 --batch 100 --epochs 1 --infer-reps 3 \
        | sed -n 's/^JSON //p' > "$OUT/torch_b100_t1.json"
    "$PY" bench/peers/torch_central.py --threads 2 --batch 100 --epochs 1 --infer-reps 3 \
        | sed -n 's/^JSON //p' > "$OUT/torch_b100_t2.json"
    "$PY" bench/peers/torch_central.py --threads 1 --batch 10 --epochs 1 --max-steps 3000 --infer-reps 0 \
        | sed -n 's/^JSON //p' > "$OUT/torch_b10_t1.json"
else
    echo "== PyTorch not installed (apt-get install python3-torch python3-numpy): ratios skipped"
fi

python3 bench/report.py "$OUT"
[ -f bench/fed.sh ] && sh bench/fed.sh "$BUILD"
[ -f bench/load.sh ] && sh bench/load.sh "$BUILD"
[ -x "$BUILD/bench-secagg" ] && "$BUILD/bench-secagg" --json "$OUT/secagg.json"
# the same over HTTP against `artificien serve`, 100 devices, 0 and 10% dropping before they
# unmask (~5 s); 500 devices: docs/privacy.md §3.6
[ -x "$BUILD/bench-secagg-http" ] && "$BUILD/bench-secagg-http" --devices 100 --dropout 0,0.1 \
    --deadline 20 --json "$OUT/secagg_http.json"
[ -f bench/flower.sh ] && sh bench/flower.sh "$BUILD"
exit 0
