#!/bin/sh
# test_cli.sh — the `artificien` command end to end: --help everywhere, a short train run and
# its RUN_DIR (checkpoint, metrics.csv, metrics.json, the --json line), eval/predict/inspect on
# that checkpoint, the checkpoint read by plain Python, a two-run sweep, and every kind of bad
# input (missing or corrupt IDX files, lying safetensors, bad specs, bad options), each of
# which must end with one clear line on stderr, a non-zero status, no crash and nothing left
# in --out. POSIX sh; AF_BIN is the binary (tests/run.sh sets it); run from the repository
# root. Prints one line per check and "N passed, N failed"; exits 1 on any failure.
AF_BIN=${AF_BIN:-build/artificien}
pass=0; fail=0
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT INT TERM
ERR=$T/stderr
ok() { pass=$((pass + 1)); echo "ok   $1"; }
ko() { fail=$((fail + 1)); echo "FAIL $1"; }
# check NAME CMD...: passes when CMD exits 0
check() { name=$1; shift; if "$@" >/dev/null 2>&1; then ok "$name"; else ko "$name"; fi; }
# py CODE ARGS...: runs a Python snippet (plain python3, no packages)
py() { code=$1; shift; python3 -c "$code" "$@"; }
# lastjson FILE: the last line of FILE (the --json object)
lastjson() { tail -n 1 "$1"; }

# refused NAME PATTERNS OUTDIR CMD...: CMD fails (status 1..125, not a signal), writes exactly
# one line to stderr that contains every '|'-separated fixed string of PATTERNS, and OUTDIR
# (if not "-") does not exist afterwards.
refused() {
    name=$1; pats=$2; outdir=$3; shift 3
    "$@" >"$T/stdout" 2>"$ERR"; st=$?
    lines=$(wc -l <"$ERR")
    why=""
    if [ "$st" = 0 ]; then why="exit status 0"
    elif [ "$st" -ge 126 ]; then why="crashed (status $st)"
    elif [ "$lines" != 1 ]; then why="$lines lines on stderr"
    elif [ "$outdir" != - ] && [ -e "$outdir" ]; then why="left $outdir behind: $(ls -A "$outdir" | tr '\n' ' ')"
    else
        rest=$pats
        while [ -n "$rest" ]; do
            pat=${rest%%|*}
            case $rest in *'|'*) rest=${rest#*|} ;; *) rest= ;; esac
            grep -qF -- "$pat" "$ERR" || { why="message lacks '$pat'"; break; }
        done
    fi
    if [ -z "$why" ]; then ok "$name"; else ko "$name: $why; stderr: $(head -c 400 "$ERR")"; fi
}

# Where the Fashion-MNIST files are (as the engine looks for them).
SRC=/usr/share/datasets/fashion-mnist
for d in "${ARTIFICIEN_DATA:-}" "${ARTIFICIEN_DATA:-}/fashion-mnist"; do
    if [ -n "${ARTIFICIEN_DATA:-}" ] && [ -f "$d/t10k-images-idx3-ubyte.gz" ]; then SRC=$d; break; fi
done
check "Fashion-MNIST present in $SRC (apt-get install dataset-fashion-mnist)" \
    test -f "$SRC/train-images-idx3-ubyte.gz" -a -f "$SRC/t10k-images-idx3-ubyte.gz"

# ---- help and usage errors -----------------------------------------------------------------
for c in train eval predict inspect sweep; do
    "$AF_BIN" "$c" --help >"$T/stdout" 2>"$ERR"; st=$?
    if [ "$st" = 0 ] && grep -q "^usage: artificien $c" "$T/stdout" && [ ! -s "$ERR" ]; then
        ok "$c --help exits 0 with a usage line"; else ko "$c --help (status $st)"; fi
done
check "artificien --help exits 0" "$AF_BIN" --help
refused "unknown command: one line, non-zero" "unknown command 'frobnicate'" - "$AF_BIN" frobnicate
refused "unknown option: one line, non-zero" "unknown option '--frob'" - "$AF_BIN" train --frob 1
refused "option without its value" "--epochs needs a value" - "$AF_BIN" train --epochs
refused "non-numeric option value" "--lr expects a number, got 'fast'" - "$AF_BIN" train --lr fast

# ---- a short training run --------------------------------------------------------------------
RUN=$T/run
"$AF_BIN" train --limit 2000 --epochs 1 --json --out "$RUN" >"$T/train.out" 2>"$T/train.err"
st=$?
check "train --limit 2000 --epochs 1 --json --out exits 0" test "$st" = 0
check "RUN_DIR has model.safetensors" test -s "$RUN/model.safetensors"
check "RUN_DIR has metrics.csv and metrics.json" test -s "$RUN/metrics.csv" -a -s "$RUN/metrics.json"
check "no temp files left in RUN_DIR" sh -c "! ls -A '$RUN' | grep -q '\.tmp'"
check "metrics.csv: a header and one row per epoch (1)" test "$(wc -l <"$RUN/metrics.csv")" = 2
check "metrics.csv header names the run, epoch, metrics and hyperparameters" py '
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
need = "run epoch loss accuracy test_loss test_accuracy epoch_seconds run_seconds images_per_sec lr batch epochs optimizer momentum nesterov weight_decay threads seed model".split()
assert len(rows) == 1 and all(k in rows[0] for k in need), rows
r = rows[0]
assert r["epoch"] == "1" and r["batch"] == "100" and r["optimizer"] == "adam" and float(r["lr"]) == 0.01
assert 0 < float(r["test_accuracy"]) <= 1 and float(r["loss"]) > 0 and float(r["images_per_sec"]) > 0
' "$RUN/metrics.csv"
check "metrics.json: one row per epoch, same numbers as the csv" py '
import csv, json, sys
rows = json.load(open(sys.argv[1])); c = list(csv.DictReader(open(sys.argv[2])))
assert isinstance(rows, list) and len(rows) == 1
assert rows[0]["epoch"] == 1 and abs(rows[0]["test_accuracy"] - float(c[0]["test_accuracy"])) < 1e-6
' "$RUN/metrics.json" "$RUN/metrics.csv"
check "train --json: last stdout line is JSON with the documented keys" py '
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
assert j["params"] == 32998, j["params"]
assert 0.3 < j["test_accuracy"] <= 1 and j["test_loss"] > 0
e = j["epochs"]; assert len(e) == 1 and e[0]["epoch"] == 1
assert e[0]["images_per_sec"] > 0 and e[0]["seconds"] > 0 and 0 <= e[0]["accuracy"] <= 1
assert j["model"] == sys.argv[2] + "/model.safetensors"
' "$T/train.out" "$RUN"
TRAIN_ACC=$(py 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["test_accuracy"])' "$T/train.out" 2>/dev/null)

# ---- eval, predict, inspect on that checkpoint -------------------------------------------------
"$AF_BIN" eval --model "$RUN/model.safetensors" --json >"$T/eval.out" 2>"$ERR"
check "eval --json exits 0" test $? = 0
check "eval --json: 10x10 confusion summing to 10000, accuracy = trace/10000 = train's" py '
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
c = j["confusion"]
assert len(c) == 10 and all(len(r) == 10 for r in c)
assert sum(map(sum, c)) == 10000
tr = sum(c[i][i] for i in range(10))
assert abs(j["accuracy"] - tr / 10000) < 1e-6, (j["accuracy"], tr)
assert abs(j["accuracy"] - float(sys.argv[2])) < 1e-6, (j["accuracy"], sys.argv[2])
' "$T/eval.out" "$TRAIN_ACC"
"$AF_BIN" eval --model "$RUN/model.safetensors" >"$T/eval.txt" 2>"$ERR"
check "eval prints the confusion matrix and per-class P/R/F1 with class names" sh -c \
    "grep -q 'confusion matrix' '$T/eval.txt' && grep -q 'Ankle boot' '$T/eval.txt' && grep -q 'precision' '$T/eval.txt'"
"$AF_BIN" predict --model "$RUN/model.safetensors" --index 17 >"$T/pred.out" 2>"$ERR"
check "predict --index 17 exits 0" test $? = 0
check "predict --index 17 names a predicted class" grep -qE \
    "predicted [0-9] (T-shirt/top|Trouser|Pullover|Dress|Coat|Sandal|Shirt|Sneaker|Bag|Ankle boot)" "$T/pred.out"
"$AF_BIN" predict --model "$RUN/model.safetensors" --index 17 --json >"$T/pred.json" 2>"$ERR"
check "predict --json: probabilities sum to 1, class matches the argmax" py '
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
p = j["probabilities"]; assert len(p) == 10 and abs(sum(p) - 1) < 1e-4
assert j["index"] == 17 and p.index(max(p)) == j["predicted"]
' "$T/pred.json"
refused "predict --index out of range" "--index 10000 out of range" - \
    "$AF_BIN" predict --model "$RUN/model.safetensors" --index 10000
"$AF_BIN" inspect models/fashion_cnn.json >"$T/insp.out" 2>"$ERR"
check "inspect SPEC: exits 0, 32998 parameters, state_dict tensors" sh -c \
    "grep -q 'parameters: 32998' '$T/insp.out' && grep -qF 'conv1.weight[6,1,5,5]' '$T/insp.out' && grep -qF 'out.bias[10]' '$T/insp.out'"
"$AF_BIN" inspect "$RUN/model.safetensors" >"$T/insp2.out" 2>"$ERR"
check "inspect CHECKPOINT: exits 0, layers and metadata" sh -c \
    "grep -q 'parameters: 32998' '$T/insp2.out' && grep -q 'metadata' '$T/insp2.out' && grep -q 'optimizer' '$T/insp2.out'"
"$AF_BIN" inspect "$RUN/model.safetensors" --json >"$T/insp3.out" 2>"$ERR"
check "inspect --json parses, params 32998" py '
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); assert j["params"] == 32998 and j["spec"]["layers"]
' "$T/insp3.out"

# ---- the checkpoint in plain Python ---------------------------------------------------------
check "checkpoint loads with struct+json: state_dict names, shapes, F32, contiguous data" py '
import json, struct, sys, math
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); meta = h.pop("__metadata__")
want = [("conv1.weight", [6, 1, 5, 5]), ("conv1.bias", [6]), ("conv2.weight", [12, 6, 5, 5]),
        ("conv2.bias", [12]), ("fc1.weight", [120, 192]), ("fc1.bias", [120]),
        ("fc2.weight", [60, 120]), ("fc2.bias", [60]), ("out.weight", [10, 60]), ("out.bias", [10])]
got = sorted(((k, v) for k, v in h.items()), key=lambda kv: kv[1]["data_offsets"][0])
assert [(k, v["shape"]) for k, v in got] == want, got
end = 0
for k, v in got:
    assert v["dtype"] == "F32"
    a, z = v["data_offsets"]; assert a == end; end = z
    cnt = 1
    for d in v["shape"]: cnt *= d
    assert z - a == 4 * cnt
    vals = struct.unpack("<%df" % cnt, b[8 + n + a:8 + n + z])
    assert all(math.isfinite(x) for x in vals) and any(x != 0 for x in vals)
assert 8 + n + end == len(b) and n % 8 == 0
spec = json.loads(meta["spec"]); assert len(spec["layers"]) == 12 and meta["format"] == "artificien/1"
' "$RUN/model.safetensors"

# ---- sweep -------------------------------------------------------------------------------------
SW=$T/sweep
"$AF_BIN" sweep --lr 0.01,0.001 --batch 100 --limit 1000 --max-steps 5 --out "$SW" >"$T/sweep.out" 2>"$ERR"
check "sweep exits 0" test $? = 0
check "sweep.csv: 2 runs ranked best first, each with its RUN_DIR" py '
import csv, os, sys
rows = list(csv.DictReader(open(os.path.join(sys.argv[1], "sweep.csv"))))
assert len(rows) == 2 and [r["rank"] for r in rows] == ["1", "2"]
acc = [float(r["test_accuracy"]) for r in rows]; assert acc[0] >= acc[1]
assert sorted(float(r["lr"]) for r in rows) == [0.001, 0.01]
for r in rows:
    assert os.path.getsize(os.path.join(sys.argv[1], r["run"], "model.safetensors")) > 32998 * 4
' "$SW"
refused "sweep with a bad list item" "--lr: 'x' is not a positive number" "$T/sweep_bad" \
    "$AF_BIN" sweep --lr 0.01,x --out "$T/sweep_bad"

# ---- bad data -----------------------------------------------------------------------------------
O=$T/out  # must never appear
refused "train --data /nonexistent" "/nonexistent" "$O" "$AF_BIN" train --data /nonexistent --out "$O"
refused "eval --data /nonexistent" "/nonexistent" - "$AF_BIN" eval --model "$RUN/model.safetensors" --data /nonexistent
mkdir -p "$T/empty"
refused "a folder without IDX files" "train-images-idx3-ubyte" "$O" "$AF_BIN" train --data "$T/empty" --out "$O"

# A copy of the dataset folder (links) with one file replaced.
mkdata() { # mkdata DIR: DIR with links to every file of the real dataset
    mkdir -p "$1"; for f in "$SRC"/*; do ln -sf "$f" "$1/"; done
}
D1=$T/trunc; mkdata "$D1"; rm "$D1/train-images-idx3-ubyte.gz"
head -c 200000 "$SRC/train-images-idx3-ubyte.gz" >"$D1/train-images-idx3-ubyte.gz"
refused "truncated gzip images file" "train-images-idx3-ubyte.gz" "$O" \
    "$AF_BIN" train --data "$D1" --limit 100 --out "$O"
D2=$T/garbage; mkdata "$D2"; rm "$D2/train-images-idx3-ubyte.gz"
py 'import sys, random; r = random.Random(1)
open(sys.argv[1], "wb").write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(r.randrange(256) for _ in range(5000)))' \
    "$D2/train-images-idx3-ubyte.gz"
refused "garbage gzip images file" "train-images-idx3-ubyte.gz" "$O" \
    "$AF_BIN" train --data "$D2" --limit 100 --out "$O"
D3=$T/rawtrunc; mkdata "$D3"; rm "$D3/t10k-images-idx3-ubyte.gz"
# a raw IDX header for 10000 28x28 images followed by 1000 bytes only
py 'import struct, sys; open(sys.argv[1], "wb").write(b"\0\0\x08\x03" + struct.pack(">III", 10000, 28, 28) + bytes(1000))' \
    "$D3/t10k-images-idx3-ubyte"
refused "truncated raw IDX test images" "t10k-images-idx3-ubyte" - \
    "$AF_BIN" eval --model "$RUN/model.safetensors" --data "$D3"
D4=$T/labels; mkdata "$D4"; rm "$D4/t10k-labels-idx1-ubyte.gz"
py 'import struct, sys; open(sys.argv[1], "wb").write(b"\0\0\x08\x01" + struct.pack(">I", 9999) + bytes(9999))' \
    "$D4/t10k-labels-idx1-ubyte"
refused "label count differs from image count" "labels" - \
    "$AF_BIN" eval --model "$RUN/model.safetensors" --data "$D4"

# ---- bad checkpoints ------------------------------------------------------------------------------
CK=$RUN/model.safetensors
head -c 1000 "$CK" >"$T/trunc.safetensors"
refused "truncated safetensors" "trunc.safetensors" - "$AF_BIN" eval --model "$T/trunc.safetensors"
head -c 5 "$CK" >"$T/tiny.safetensors"
refused "5-byte safetensors" "tiny.safetensors" - "$AF_BIN" predict --model "$T/tiny.safetensors"
# rewrite NAME.safetensors from CK with the header changed by a Python expression on h
craft() { # craft OUT PYTHON-STATEMENTS (h: header dict, d: data bytes)
    py 'import json, struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); d = b[8 + n:]
exec(sys.argv[3])
s = json.dumps(h, separators=(",", ":")).encode(); s += b" " * (-len(s) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(s)) + s + d)' "$CK" "$1" "$2"
}
py 'import struct, sys
b = bytearray(open(sys.argv[1], "rb").read()); b[:8] = struct.pack("<Q", len(b) + 100)
open(sys.argv[2], "wb").write(b)' "$CK" "$T/longhdr.safetensors"
refused "header length past the end of the file" "longhdr.safetensors" - "$AF_BIN" eval --model "$T/longhdr.safetensors"
craft "$T/dtype.safetensors" 'h["fc2.bias"]["dtype"] = "F31"'
refused "unknown dtype" "dtype.safetensors|F31" - "$AF_BIN" eval --model "$T/dtype.safetensors"
craft "$T/overlap.safetensors" 'a = h["conv1.weight"]["data_offsets"][0]; h["conv1.bias"]["data_offsets"] = [a, a + 24]'
refused "overlapping tensor offsets" "overlap.safetensors|overlaps" - "$AF_BIN" eval --model "$T/overlap.safetensors"
craft "$T/past.safetensors" 'h["out.bias"]["data_offsets"][1] += 4'
refused "tensor data past the end" "past.safetensors|out.bias" - "$AF_BIN" inspect "$T/past.safetensors"
craft "$T/shape.safetensors" 'h["fc1.weight"]["shape"] = [192, 120]'
refused "transposed weight vs the spec in the checkpoint" "shape.safetensors|fc1.weight" - "$AF_BIN" eval --model "$T/shape.safetensors"
craft "$T/nospec.safetensors" 'del h["__metadata__"]["spec"]'
refused "checkpoint without a spec and no --spec" "spec" - "$AF_BIN" eval --model "$T/nospec.safetensors"
"$AF_BIN" eval --model "$T/nospec.safetensors" --spec models/fashion_cnn.json --json >"$T/nospec.out" 2>"$ERR"
check "the same checkpoint loads with --spec (the PyTorch case)" test $? = 0
sed 's/"out_features": 120/"out_features": 100/; s/"in_features": 120/"in_features": 100/' \
    models/fashion_cnn.json >"$T/other.json"
check "the other spec is really different" sh -c "! cmp -s models/fashion_cnn.json '$T/other.json'"
refused "a checkpoint that does not match --spec" "nospec.safetensors|fc1.weight" - \
    "$AF_BIN" eval --model "$T/nospec.safetensors" --spec "$T/other.json"
refused "a missing checkpoint" "none.safetensors" - "$AF_BIN" eval --model "$T/none.safetensors"

# ---- bad specs and options -----------------------------------------------------------------------
sed 's/"type": "relu"}/"type": "swish"}/' models/fashion_cnn.json >"$T/unknown.json"
refused "train with an unknown layer, naming the spec file" "unknown.json|unknown layer type \"swish\"" "$O" \
    "$AF_BIN" train --model "$T/unknown.json" --limit 100 --out "$O"
refused "inspect a spec with an unknown layer" "swish" - "$AF_BIN" inspect "$T/unknown.json"
sed 's/"kernel": 5}/"kernel": 50}/' models/fashion_cnn.json >"$T/shapes.json"
refused "train with impossible shapes" "shapes.json|does not fit" "$O" \
    "$AF_BIN" train --model "$T/shapes.json" --limit 100 --out "$O"
printf '{"input": [1, 28, 28], "layers": [' >"$T/notjson.json"
refused "a spec that is not JSON" "not valid JSON" "$O" "$AF_BIN" train --model "$T/notjson.json" --out "$O"
printf '{"input": [100], "layers": [{"type": "linear", "name": "fc", "out_features": 10}]}' >"$T/small.json"
refused "a spec for another input size" "784" "$O" "$AF_BIN" train --model "$T/small.json" --limit 100 --out "$O"
refused "--epochs 0" "--epochs" "$O" "$AF_BIN" train --epochs 0 --limit 100 --out "$O"
refused "--lr -1" "learning rate" "$O" "$AF_BIN" train --lr -1 --limit 100 --out "$O"
refused "--threads 0" "--threads" "$O" "$AF_BIN" train --threads 0 --limit 100 --out "$O"
refused "--opt foo" "unknown optimizer 'foo'" "$O" "$AF_BIN" train --opt foo --limit 100 --out "$O"
refused "--batch 0" "--batch" "$O" "$AF_BIN" train --batch 0 --limit 100 --out "$O"
refused "--nesterov without momentum" "nesterov" "$O" \
    "$AF_BIN" train --opt sgd --momentum 0 --nesterov --limit 100 --out "$O"
printf 'x' >"$T/afile"
refused "--out under a regular file" "afile" - \
    "$AF_BIN" train --limit 200 --max-steps 1 --epochs 1 --quiet --out "$T/afile/run"
refused "eval without --model" "--model is required" - "$AF_BIN" eval

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
