#!/bin/sh
# flower.sh BUILD — Artificien's federation against Flower's, side by side, in the same window
# (bench/run.sh calls it last; a benchmark, not a test). Both sides run N device processes on
# loopback, N of N per round, R rounds of FedAvg (1 local epoch, batch 10, SGD lr 0.05, 1
# thread) on the same Dirichlet(0.5) shards of Fashion-MNIST from the same initial weights:
#   Artificien  `artificien serve` (HTTP + SQLite) + N × `artificien worker`, once per
#               --retry-after in FLOWER_BENCH_RETRY_AFTER (pace steering: how long a device
#               waits before checking in again; Flower pushes, so this is ours alone)
#   Flower      bench/peers/flower_fedavg.py: start_server (gRPC) + N × start_client, torch
# and each side's training alone (one round's worth, 1 thread, no federation). Prints a table
# (bench/flower_report.py), writes BUILD/bench/flower.json and the raw files under
# BUILD/bench/flower/. Flower comes from pip into BUILD/flower-venv (over Debian's torch);
# without network, or without /usr/bin/python3's torch, it says so and exits 0. Everything it
# starts is stopped on exit; every wait is bounded. Env: FLOWER_BENCH_CLIENTS (10),
# FLOWER_BENCH_ROUNDS (5), FLOWER_BENCH_RETRY_AFTER ("0.2 1"), FLOWER_PIP (flwr==1.42.*),
# FLOWER_BENCH_KEEP=1 (keep the logs and databases). Run from the repository root.
set -u
BUILD=${1:-build}
BIN=$BUILD/artificien
N=${FLOWER_BENCH_CLIENTS:-10}
R=${FLOWER_BENCH_ROUNDS:-5}
RAS=${FLOWER_BENCH_RETRY_AFTER:-0.2 1}
PART=dirichlet:0.5
SEED=1
RAW=$BUILD/bench/flower
VENV=$BUILD/flower-venv
VPY=$VENV/bin/python
SYSPY=/usr/bin/python3
PEER=bench/peers/flower_fedavg.py
# Flower's telemetry would phone home at every start; nothing here needs the network
FLWR_TELEMETRY_ENABLED=0
export FLWR_TELEMETRY_ENABLED

echo "== federation against Flower: $N device processes, $R rounds, $PART, loopback"
[ -x "$BIN" ] || { echo "flower.sh: $BIN not built" >&2; exit 1; }

# ---- Flower in a venv that sees Debian's torch ----
# numpy<2: Debian's torch 1.13 is built against numpy 1.x and fails on numpy 2's ABI;
# flwr itself needs numpy >= 1.26 (Debian 12 has 1.24), hence the venv's own numpy.
flower_ok() {
    [ -x "$VPY" ] && "$VPY" -c 'import flwr, torch, numpy
from flwr.server import start_server
from flwr.client import start_client
numpy.zeros(1); torch.from_numpy(numpy.zeros(1))' >/dev/null 2>&1
}
if ! flower_ok; then
    if ! "$SYSPY" -c 'import torch, numpy' >/dev/null 2>&1; then
        echo "== Flower: skipped — /usr/bin/python3 has no torch (apt-get install python3-torch python3-numpy)"
        exit 0
    fi
    spec=${FLOWER_PIP:-flwr==1.42.*}
    echo "installing $spec into $VENV (pip, over Debian's torch)"
    if [ ! -x "$VPY" ] && ! "$SYSPY" -m venv --system-site-packages "$VENV"; then
        echo "== Flower: skipped — python3 -m venv failed (apt-get install python3-venv)"
        exit 0
    fi
    if ! "$VENV/bin/pip" install -q --retries 1 --timeout 15 "$spec" 'numpy<2'; then
        echo "== Flower: skipped — pip could not install $spec (no network?)"
        exit 0
    fi
    flower_ok || { echo "== Flower: skipped — flwr installed but flwr/torch/numpy do not import together in $VENV"; exit 0; }
fi

rm -rf "$RAW"
mkdir -p "$RAW"
dir=$(mktemp -d "${TMPDIR:-/tmp}/artificien-flower.XXXXXX")
PIDS=""
stop() { # stop PIDS: SIGTERM, up to 10 s, then SIGKILL
    [ -n "$*" ] || return 0
    kill "$@" 2>/dev/null
    n=0
    while [ $n -lt 100 ]; do
        alive=""
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
        [ -z "$alive" ] && break
        sleep 0.1
        n=$((n + 1))
    done
    for p in "$@"; do kill -9 "$p" 2>/dev/null; done
    wait "$@" 2>/dev/null
    return 0
}
cleanup() {
    # shellcheck disable=SC2086
    stop $PIDS
    if [ "${FLOWER_BENCH_KEEP:-0}" = 1 ]; then echo "files kept in $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "flower.sh: $*" >&2; exit 1; }
hwm_kib() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status" 2>/dev/null; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null; }
# the machine's busy ticks (user nice system irq softirq steal), to tell others' load from ours
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# wait_for SECONDS CMD...: polls CMD every 0.1 s; 1 on timeout
wait_for() {
    end=$(($(date +%s) + $1)); shift
    until "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.1; done
}
gone() { # gone PIDS...: none of them is running
    for p in "$@"; do kill -0 "$p" 2>/dev/null && return 1; done
    return 0
}
all_logged() { # all_logged PATTERN FILES...: every file has the pattern
    pat=$1; shift
    for f in "$@"; do grep -q "$pat" "$f" 2>/dev/null || return 1; done
}
json_get() { "$SYSPY" -c 'import json, sys; s = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$@"; }
printf '{"clients": %d, "rounds": %d, "partition": "%s", "seed": %d, "cores": %d, "clk_tck": %d, "retry_after": "%s"}\n' \
    "$N" "$R" "$PART" "$SEED" "$(nproc)" "$(getconf CLK_TCK)" "$RAS" >"$RAW/meta.json"

# ---- (a) Artificien: serve + N workers, once per --retry-after ----
# Workers start first and load their shards while no project exists; the project is created
# once all have loaded, so round 1 does not wait for data loading (Flower's clients also load
# before they connect). Held-out share 0 and eval_every 0: every device trains on its whole
# shard and nobody evaluates during the rounds, as on Flower's side.
PLAN="{\"strategy\": \"fedavg\", \"rounds\": $R, \"devices_per_round\": $N, \"min_reports\": $N,
 \"over_selection\": 1, \"round_deadline_s\": 120, \"local_epochs\": 1, \"batch\": 10,
 \"optimizer\": \"sgd\", \"lr\": 0.05, \"eval_every\": 0, \"dataset\": \"fashion-mnist\", \"seed\": 1}"
for ra in $RAS; do
    tag=ours_ra$ra
    d=$dir/$tag
    mkdir -p "$d"
    cut -d' ' -f1-3 /proc/loadavg >"$RAW/$tag.load"
    "$BIN" serve --db "$d/a.db" --listen 127.0.0.1:0 --retry-after "$ra" >"$d/serve.out" 2>"$d/serve.log" &
    spid=$!
    PIDS="$PIDS $spid"
    wait_for 20 grep -q '^listening on ' "$d/serve.out" || fail "the coordinator did not start (see $d/serve.log)"
    url=$(sed -n 's/^listening on //p' "$d/serve.out")
    "$BIN" admin create-owner --server "$url" --admin-key-file "$d/a.db.admin-key" --name bench \
        >"$d/owner.key" || fail "cannot create the owner"
    printf '%s\n' "$PLAN" >"$d/plan.json"
    wpids=""
    logs=""
    i=0
    while [ $i -lt "$N" ]; do
        "$BIN" worker --server "$url" --enroll "$(cat "$d/a.db.enroll-secret")" --data fashion-mnist \
            --partition "$PART" --shard "$i/$N" --seed "$SEED" --heldout 0 --threads 1 \
            --no-done-exit --token-file "$d/w$i.token" >"$d/w$i.log" 2>&1 &
        wpids="$wpids $!"
        logs="$logs $d/w$i.log"
        i=$((i + 1))
    done
    PIDS="$PIDS $wpids"
    # shellcheck disable=SC2086
    wait_for 120 all_logged 'loaded in' $logs || fail "the workers did not load their shards in 120 s"
    c0=$(cpu_ticks "$spid")
    w0=0
    for p in $wpids; do w0=$((w0 + $(cpu_ticks "$p"))); done
    b0=$(busy_ticks)
    t0=$(date +%s)
    id=$("$BIN" project create --server "$url" --key-file "$d/owner.key" --model models/fashion_cnn.json \
        --plan "$d/plan.json" --name flower-bench) || fail "cannot create the project"
    [ -f "$RAW/init.safetensors" ] || "$BIN" project pull --server "$url" --key-file "$d/owner.key" "$id" \
        --round 0 --out "$RAW/init.safetensors" >/dev/null || fail "cannot pull the initial weights"
    st=""
    while :; do
        [ $(($(date +%s) - t0)) -lt $((R * 60 + 60)) ] || fail "$tag: the project did not finish"
        kill -0 "$spid" 2>/dev/null || fail "$tag: the coordinator exited"
        st=$("$BIN" project status --server "$url" --key-file "$d/owner.key" "$id" --json 2>/dev/null)
        case "$st" in *'"status": "done"'* | *'"status":"done"'*) break ;; esac
        sleep 0.5
    done
    b1=$(busy_ticks)
    c1=$(cpu_ticks "$spid")
    w1=0
    for p in $wpids; do w1=$((w1 + $(cpu_ticks "$p"))); done
    shwm=$(hwm_kib "$spid")
    whwm=""
    for p in $wpids; do whwm="$whwm${whwm:+, }$(hwm_kib "$p")"; done
    printf '%s\n' "$st" >"$RAW/$tag.status.json"
    printf '{"retry_after": %s, "coord_cpu_rounds_ticks": %d, "coord_cpu_total_ticks": %d, "coord_vm_hwm_kib": %d, "worker_vm_hwm_kib": [%s], "workers_cpu_rounds_ticks": %d, "machine_busy_ticks": %d}\n' \
        "$ra" $((c1 - c0)) "$c1" "$shwm" "$whwm" $((w1 - w0)) $((b1 - b0)) >"$RAW/$tag.proc.json"
    "$BIN" project pull --server "$url" --key-file "$d/owner.key" "$id" --out "$d/model.safetensors" \
        >/dev/null || fail "$tag: cannot pull the model"
    "$BIN" eval --model "$d/model.safetensors" --data fashion-mnist --json >"$RAW/$tag.eval.json" ||
        fail "$tag: cannot evaluate the model"
    # shellcheck disable=SC2086
    stop $wpids $spid
    echo "  Artificien, --retry-after $ra: $(json_get "$RAW/$tag.status.json" \
        '"%.2f s for %d rounds" % (max(r["closed_at"] for r in s["rounds"]) - min(r["opened_at"] for r in s["rounds"]), len(s["rounds"]))')"
done
# our training alone: all N shards trained once in one process, 1 thread (the same training
# code as the workers, no network), in CPU seconds, which others' load inflates less than
# wall time: a 2-round simulation minus a 1-round one (both load the data and evaluate once)
cpu_of() { # cpu_of OUTFILE CMD...: runs CMD, stdout to OUTFILE; prints its CPU seconds
    "$SYSPY" -c 'import resource, subprocess, sys
with open(sys.argv[1], "w") as f:
    rc = subprocess.run(sys.argv[2:], stdout=f).returncode
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.4f" % (u.ru_utime + u.ru_stime))
sys.exit(rc)' "$@"
}
cut -d' ' -f1-3 /proc/loadavg >"$RAW/ours_local.load"
cpu1=$(cpu_of "$dir/sim1.json" "$BIN" sim --clients "$N" --per-round "$N" --rounds 1 --partition "$PART" \
    --seed "$SEED" --heldout 0 --eval-every 0 --threads 1 --quiet --json --init "$RAW/init.safetensors") ||
    fail "artificien sim (training alone) failed"
cpu2=$(cpu_of "$dir/sim2.json" "$BIN" sim --clients "$N" --per-round "$N" --rounds 2 --partition "$PART" \
    --seed "$SEED" --heldout 0 --eval-every 0 --threads 1 --quiet --json --init "$RAW/init.safetensors" \
    --out "$dir/sim") || fail "artificien sim (training alone) failed"
printf '{"train_cpu_s": %s, "cpu_1_round_s": %s, "cpu_2_rounds_s": %s, "sim_2_rounds": %s}\n' \
    "$(awk -v a="$cpu1" -v b="$cpu2" 'BEGIN { printf "%.4f", b - a }')" "$cpu1" "$cpu2" \
    "$(tail -n 1 "$dir/sim2.json")" >"$RAW/ours_local.json"
# Flower's clients take their shards from bench/peers/af_partition.py, a port of ours: check
# it against the per-device class counts of this very build
if "$SYSPY" bench/peers/af_partition.py selfcheck "$dir/sim/partition.csv" "$PART" "$SEED" 0; then
    echo true >"$RAW/shards_identical"
else
    echo false >"$RAW/shards_identical"
    echo "  WARNING: af_partition.py no longer reproduces our partition: Flower trains on other shards"
fi

# ---- (b) Flower: start_server + N start_client processes over gRPC ----
cut -d' ' -f1-3 /proc/loadavg >"$RAW/flower.load"
port=$("$SYSPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
COMMON="--clients $N --partition $PART --seed $SEED --heldout 0 --epochs 1 --batch 10 --lr 0.05 --threads 1"
# shellcheck disable=SC2086
"$VPY" "$PEER" server --port "$port" $COMMON --rounds "$R" --init "$RAW/init.safetensors" \
    >"$dir/flower_server.log" 2>&1 &
fpid=$!
PIDS="$PIDS $fpid"
wait_for 60 grep -q 'gRPC server running' "$dir/flower_server.log" || {
    tail -n 20 "$dir/flower_server.log" >&2
    fail "the Flower server did not start"
}
cpids=""
i=0
while [ $i -lt "$N" ]; do
    # shellcheck disable=SC2086
    "$VPY" "$PEER" client --port "$port" $COMMON --shard "$i/$N" >"$dir/flower_c$i.log" 2>&1 &
    cpids="$cpids $!"
    i=$((i + 1))
done
PIDS="$PIDS $cpids"
wait_for $((R * 120 + 120)) gone "$fpid" || fail "Flower did not finish"
wait "$fpid"
frc=$?
sed -n 's/^JSON //p' "$dir/flower_server.log" >"$RAW/flower_server.json"
if [ "$frc" != 0 ] || [ ! -s "$RAW/flower_server.json" ]; then
    tail -n 30 "$dir/flower_server.log" >&2
    fail "the Flower server failed (status $frc)"
fi
# the server's end sends every client a reconnect(None): they report and exit
# shellcheck disable=SC2086
wait_for 30 gone $cpids || echo "  (some Flower clients did not exit within 30 s of the server; stopped)"
# shellcheck disable=SC2086
stop $cpids
cat "$dir"/flower_c*.log | sed -n 's/^CLIENT //p' >"$RAW/flower_clients.jsonl"
echo "  Flower: $(json_get "$RAW/flower_server.json" '"%.2f s for %d rounds" % (s["wall_s"], s["rounds_done"])')"
cut -d' ' -f1-3 /proc/loadavg >"$RAW/flower_local.load"
# shellcheck disable=SC2086
"$VPY" "$PEER" local $COMMON --init "$RAW/init.safetensors" >"$dir/flower_local.log" 2>&1 ||
    { tail -n 20 "$dir/flower_local.log" >&2; fail "Flower's training alone failed"; }
sed -n 's/^JSON //p' "$dir/flower_local.log" >"$RAW/flower_local.json"

"$SYSPY" bench/flower_report.py "$RAW" "$BUILD/bench/flower.json"
