#!/bin/sh
# fed.sh BUILD — the federated-simulation half of `make bench` (bench/run.sh calls it last).
# 1. The FedAvg paper's setting on Fashion-MNIST (100 devices, C=0.1, E=1, B=10, SGD lr 0.05,
#    IID, 20 rounds): the plain PyTorch loop (bench/peers/torch_fedavg.py, 1 thread) against
#    `artificien sim` at 1 and 2 threads — accuracy per round side by side, seconds per round
#    (evaluation included, median of FED_REPS runs) and the speed-up.
# 2. Strategies under strong label skew (100 devices, 10 per round, FED_SKEW_ROUNDS rounds on
#    FED_PARTITION, seeds FED_SEEDS): final, best and last-5-round accuracy per strategy.
#    Takes several minutes (about 45 runs of 50 rounds).
# Raw JSON goes to BUILD/bench/fed/; bench/fed_report.py prints the tables (and writes them
# as Markdown to BUILD/bench/fed/report.md). Shared machines are noisy: compare within a run.
set -u
BUILD=${1:-build}
BIN="$BUILD/artificien"
OUT="$BUILD/bench/fed"
PY=/usr/bin/python3
ROUNDS=${FED_ROUNDS:-20}
SKEW_ROUNDS=${FED_SKEW_ROUNDS:-50}
PARTITION=${FED_PARTITION:-dirichlet:0.1}
SEEDS=${FED_SEEDS:-1 2 3}
REPS=${FED_REPS:-3}
mkdir -p "$OUT"
load() { cut -d' ' -f1-3 /proc/loadavg >"$OUT/$1.load"; }

# ---- 1. IID FedAvg, side by side ----
# --heldout 0: every device trains on all of its 600 samples, as in the PyTorch loop (our
# federated evaluation needs held-out data, so it is off here; the _fedeval run shows its cost).
# FED_REPS repetitions, interleaved (PyTorch, 1 thread, 2 threads) so that load from other
# processes hits all three alike; the report takes the median seconds per round.
SET="--rounds $ROUNDS --clients 100 --frac 0.1 --batch 10 --lr 0.05"
rm -rf "$OUT"/torch_iid* "$OUT"/ours_iid*
echo "== federated: FedAvg, IID, $ROUNDS rounds (K=100, C=0.1, E=1, B=10, lr 0.05), $REPS repetitions"
have_torch=0
if [ -x "$PY" ] && "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
    have_torch=1
else
    echo "PyTorch not installed (apt-get install python3-torch python3-numpy): no side-by-side"
fi
rep=1
while [ "$rep" -le "$REPS" ]; do
    if [ "$have_torch" = 1 ]; then
        load "torch_iid_t1_r$rep"
        "$PY" bench/peers/torch_fedavg.py $SET --epochs 1 --threads 1 | sed -n 's/^JSON //p' \
            >"$OUT/torch_iid_t1_r$rep.json"
    fi
    for t in 1 2; do
        load "ours_iid_t${t}_r$rep"
        "$BIN" sim $SET --local-epochs 1 --opt sgd --partition iid --heldout 0 --strategy fedavg \
            --threads "$t" --seed 1 --quiet --json --out "$OUT/ours_iid_t$t" \
            >"$OUT/ours_iid_t${t}_r$rep.json" || exit 1
    done
    rep=$((rep + 1))
done
load ours_iid_t1_fedeval
"$BIN" sim $SET --local-epochs 1 --opt sgd --partition iid --strategy fedavg --threads 1 \
    --seed 1 --quiet --json >"$OUT/ours_iid_t1_fedeval.json" || exit 1

# ---- 2. strategies under label skew ----
# name, strategy, options ("-": defaults), local lr, local epochs. Defaults first, then the
# server learning rates that did best in a sweep for this case (docs/simulation.md), then
# FedAvg and SCAFFOLD at a lower local lr, where SCAFFOLD stays stable, then FedAvg and FedProx
# with 5 local epochs (more client drift, where FedProx's paper finds the proximal term helps).
# FED_SKEW_ROUNDS=0 skips this part (keeping the results of the last run that did it).
if [ "$SKEW_ROUNDS" -gt 0 ]; then
    echo "== federated: strategies on $PARTITION, $SKEW_ROUNDS rounds, seeds $SEEDS"
    rm -f "$OUT"/skew_*.json
    while read -r name strat opts lr epochs; do
        [ -n "$name" ] || continue
        [ "$opts" = - ] && opts=""
        for s in $SEEDS; do
            "$BIN" sim --clients 100 --frac 0.1 --rounds "$SKEW_ROUNDS" --local-epochs "$epochs" \
                --batch 10 --lr "$lr" --partition "$PARTITION" --strategy "$strat" \
                ${opts:+--strategy-opts "$opts"} --threads 2 --seed "$s" --quiet --json \
                >"$OUT/skew_${name}_s$s.json" || exit 1
        done
        echo "  $name done"
    done <<'EOF'
fedavg fedavg - 0.05 1
fedprox fedprox mu=0.01 0.05 1
fedprox_mu0.1 fedprox mu=0.1 0.05 1
scaffold scaffold - 0.05 1
fednova fednova - 0.05 1
fedavgm fedavgm - 0.05 1
fedavgm_eta0.3 fedavgm beta=0.9,eta=0.3 0.05 1
fedadam fedadam - 0.05 1
fedadam_eta0.03 fedadam eta=0.03 0.05 1
fedyogi fedyogi - 0.05 1
fedavg_lr0.02 fedavg - 0.02 1
scaffold_lr0.02 scaffold - 0.02 1
fedavg_E5 fedavg - 0.05 5
fedprox_E5 fedprox mu=0.01 0.05 5
fedprox_mu0.1_E5 fedprox mu=0.1 0.05 5
EOF
fi

python3 bench/fed_report.py "$OUT" "$PARTITION"
