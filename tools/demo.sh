#!/bin/sh
# demo.sh BUILD — `make demo`: federated learning over HTTP on this machine. Starts a
# coordinator on a free loopback port with a fresh database, creates an owner and the CNN
# project (FedAvg, 10 rounds, 10 devices per round), starts 20 worker processes each holding
# one shard of a Dirichlet(0.5) split of Fashion-MNIST, prints a line per round, pulls the
# trained model and evaluates it on the test set. Everything it starts is stopped on exit
# (trap), whatever happens; every wait is bounded. Env: DEMO_WORKERS, DEMO_ROUNDS, DEMO_KEEP=1
# (keep the temporary folder with the database and the logs), DEMO_SECAGG=1 (the rounds run
# with secure aggregation: the coordinator only ever sees sums of masked updates),
# DEMO_HOLD=1 (keep the coordinator serving afterwards, for the dashboard, until Ctrl-C).
set -u
BUILD=${1:-build}
BIN=$BUILD/artificien
WORKERS=${DEMO_WORKERS:-20}
ROUNDS=${DEMO_ROUNDS:-10}
SECAGG=""
[ "${DEMO_SECAGG:-0}" = 1 ] && SECAGG=', "secagg": true' 
PY=python3
[ -x "$BIN" ] || { echo "demo: $BIN not built (run make)" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/artificien-demo.XXXXXX")
spid=""
wpids=""

# stop PIDS: SIGTERM, up to 10 s for them to exit, then SIGKILL
stop() {
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
    stop $wpids
    stop $spid
    if [ "${DEMO_KEEP:-0}" = 1 ]; then echo "demo: files kept in $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() {
    echo "demo: $*" >&2
    [ -f "$dir/serve.log" ] && { echo "--- coordinator log (last lines)" >&2; tail -n 15 "$dir/serve.log" >&2; }
    exit 1
}
t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }

echo "== coordinator"
"$BIN" serve --db "$dir/a.db" --listen 127.0.0.1:0 --retry-after 2 >"$dir/serve.out" 2>"$dir/serve.log" &
spid=$!
url=""
n=0
while [ -z "$url" ] && [ $n -lt 200 ]; do
    kill -0 "$spid" 2>/dev/null || fail "the coordinator exited"
    url=$(sed -n 's/^listening on //p' "$dir/serve.out")
    [ -z "$url" ] && sleep 0.1
    n=$((n + 1))
done
[ -n "$url" ] || fail "the coordinator did not say where it listens within 20 s"
echo "artificien serve --db $dir/a.db on $url"

echo "== owner and project"
"$BIN" admin create-owner --server "$url" --admin-key-file "$dir/a.db.admin-key" --name demo \
    >"$dir/owner.key" || fail "cannot create the owner"
cat >"$dir/plan.json" <<EOF
{"strategy": "fedavg", "rounds": $ROUNDS, "devices_per_round": 10, "min_reports": 8,
 "over_selection": 1.3, "round_deadline_s": 60, "local_epochs": 1, "batch": 10,
 "optimizer": "sgd", "lr": 0.05, "dataset": "fashion-mnist"$SECAGG}
EOF
id=$("$BIN" project create --server "$url" --key-file "$dir/owner.key" \
    --model models/fashion_cnn.json --plan "$dir/plan.json" --name fashion-cnn-demo) ||
    fail "cannot create the project"
echo "project $id: models/fashion_cnn.json, plan $(tr -d '\n' <"$dir/plan.json")"
echo "dashboard: open $url/ in a browser with the owner key in $dir/owner.key"

echo "== $WORKERS workers, Dirichlet(0.5) shards of Fashion-MNIST"
secret=$(cat "$dir/a.db.enroll-secret")
i=0
while [ $i -lt "$WORKERS" ]; do
    "$BIN" worker --server "$url" --enroll "$secret" --data fashion-mnist --partition dirichlet:0.5 \
        --shard "$i/$WORKERS" --seed 1 --token-file "$dir/w$i.token" >"$dir/w$i.log" 2>&1 &
    wpids="$wpids $!"
    i=$((i + 1))
done

echo "== rounds"
printf '%5s %8s %8s %11s %15s %17s %8s\n' round attempts reports train_loss "fed. eval acc" "worst 10% device" "time s"
shown=0
deadline=$((t0 + 900))
while :; do
    [ "$(date +%s)" -lt $deadline ] || fail "the project did not finish within 15 minutes"
    kill -0 "$spid" 2>/dev/null || fail "the coordinator exited"
    st=$("$BIN" project status --server "$url" --key-file "$dir/owner.key" "$id" --json 2>/dev/null)
    if [ -n "$st" ]; then
        out=$(printf '%s\n' "$st" | $PY -c '
import json, sys
shown, t = int(sys.argv[1]), sys.argv[2]
s = json.load(sys.stdin)
done = [r for r in s["rounds"] if r["state"] == "committed"]
for r in done[shown:]:
    tries = sum(1 for x in s["rounds"] if x["number"] == r["number"])
    acc = "%.4f" % r["eval_accuracy"] if r.get("eval_accuracy") is not None else "-"
    tl = "%.4f" % r["train_loss"] if r.get("train_loss") is not None else "-"
    da = r.get("device_accuracy")
    p10 = "%.4f" % da["p10"] if da else "-"
    print("%5d %8d %8d %11s %15s %17s %8s" % (r["number"], tries, r["reports"], tl, acc, p10, t))
print("STATE %d %s" % (len(done), s["status"]))
' "$shown" "$(elapsed)") || fail "cannot read the project status"
        printf '%s\n' "$out" | grep -v '^STATE'
        state=$(printf '%s\n' "$out" | sed -n 's/^STATE //p')
        shown=${state%% *}
        [ "${state#* }" = done ] && break
    fi
    sleep 1
done
echo "(fed. eval acc: the round's received model on the devices' held-out data, pooled;"
echo " worst 10% device: the 10th percentile of the devices' own accuracies)"

echo "== pull and evaluate on the Fashion-MNIST test set"
"$BIN" project pull --server "$url" --key-file "$dir/owner.key" "$id" --out "$dir/model.safetensors" ||
    fail "pull failed"
"$BIN" eval --model "$dir/model.safetensors" --data fashion-mnist || fail "eval failed"
"$BIN" project status --server "$url" --key-file "$dir/owner.key" "$id" | sed -n '/population confusion/,$p'
rss=$(cat "$dir"/w*.log | sed -n 's/.*rss \([0-9]*\) MiB (peak \([0-9]*\)).*/\1 \2/p' | sort -n | tail -n 1)
echo "== done in $(elapsed) s (largest worker RSS during a round: ${rss%% *} MiB; peak ${rss##* } MiB)"
if [ "${DEMO_HOLD:-0}" = 1 ]; then
    # keep the coordinator up for the dashboard: open the URL, paste the owner key
    echo "== the coordinator keeps serving: open $url/ and paste this owner key:"
    cat "$dir/owner.key"
    echo "   (Ctrl-C stops it and cleans up)"
    wait "$spid"
fi
exit 0
