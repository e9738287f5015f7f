#!/bin/sh
# test_secagg_http.sh — privacy over HTTP with the real binaries: a coordinator and 10 worker
# processes (IID shards of Fashion-MNIST) first answer a population label-statistics query
# (secure aggregation + DP noise: the noisy label shares come back near 1/10 each, with ε),
# then train the CNN with secure aggregation for 5 rounds — two workers are killed after the
# second round and the rounds go on with the rest (>= t) — and then 2 rounds of DP-FedAvg
# with noise split across the devices. The model reaches the accuracy bar, the status shows
# ε, and the coordinator's log shows masked inputs only.
# POSIX sh; AF_BIN is the binary (tests/run.sh sets it). One line per check, then
# "N passed, N failed"; exits 1 on any failure.
cd "$(dirname "$0")/../.." || exit 1
. tests/cli/fl_lib
trap fl_cleanup EXIT
trap 'exit 1' INT TERM
fl_watchdog 600
FL_DB="$FL_DIR/s.db"
N=10
MIN_ACC=0.75
WOPTS=""
if [ "$FL_SLOW" = 1 ]; then
    MIN_ACC=0.60
    WOPTS="--max-samples 1000"
    echo "note sanitizer build: each device keeps 1,000 training samples, accuracy bar $MIN_ACC"
fi

check "coordinator listens" fl_serve "$FL_DB" 127.0.0.1:0 "$FL_DIR/serve.log"
[ -n "$FL_URL" ] || { finish; exit 1; }
# served in creation order: the devices answer the statistics first, then train
"$AF_BIN" admin create-owner --server "$FL_URL" --admin-key-file "$FL_DB.admin-key" --name tests \
    >"$FL_DIR/owner.key"
ls_id=$("$AF_BIN" project stats --server "$FL_URL" --key-file "$FL_DIR/owner.key" \
  --model models/fashion_cnn.json --devices 10 --min-devices 8 --bound 500 --noise 0.2 --deadline 30)
check "label_stats project created (id '$ls_id')" test -n "$ls_id"
sa_id=$(fl_project sa '{"rounds": 5, "devices_per_round": 8, "min_reports": 6,
  "over_selection": 1.25, "round_deadline_s": 40, "local_epochs": 1, "batch": 10, "lr": 0.05,
  "dataset": "fashion-mnist", "secagg": true, "secagg_threshold": 6}')
check "secure-aggregation project created (id '$sa_id')" test -n "$sa_id"
[ -n "$ls_id" ] && [ -n "$sa_id" ] || { tail -n 20 "$FL_DIR/serve.log"; finish; exit 1; }

i=0
# shellcheck disable=SC2086
while [ $i -lt $N ]; do fl_worker w$i $i/$N iid $WOPTS; i=$((i + 1)); done

check "the label statistics are released within 120 s" fl_wait_for 120 "$ls_id" 's["status"] == "done"'
st=$FL_ST
check "  ... from at least 8 devices" test "$(printf '%s' "$st" | jget 's["label_stats"]["devices"] >= 8')" = True
check "  ... with a finite epsilon" test "$(printf '%s' "$st" | jget '0 < s["label_stats"]["epsilon"] < 100')" = True
echo "     label shares: $(printf '%s' "$st" | jget '" ".join("%.3f±%.3f" % (a, b) for a, b in zip(s["label_stats"]["share"], s["label_stats"]["share_std"]))')"
check "  ... IID shards: every label share within 4 noise std (+0.01) of 1/10" test "$(printf '%s' "$st" | jget 'all(abs(x - 0.1) < 4 * e + 0.01 for x, e in zip(s["label_stats"]["share"], s["label_stats"]["share_std"]))')" = True
check "  ... and the noise std is what z = 0.2 over >= 8 devices implies (< 0.03)" test "$(printf '%s' "$st" | jget 'max(s["label_stats"]["share_std"]) < 0.03')" = True
check "  ... the total is about devices × bound (each device scaled to 500 samples)" test "$(printf '%s' "$st" | jget 'abs(s["label_stats"]["total"] - 500 * s["label_stats"]["devices"]) < 6 * s["label_stats"]["total_std"] + 1')" = True
"$AF_BIN" project status --server "$FL_URL" --key-file "$FL_DIR/owner.key" "$ls_id" >"$FL_DIR/ls.txt" 2>&1
check "project status prints the label statistics" grep -q "label statistics of" "$FL_DIR/ls.txt"

check "secure-aggregation round 2 commits within 200 s" fl_wait_for 200 "$sa_id" 's["version"] >= 2'
# two devices vanish: the rounds go on with 8 >= t = 6
set -- $FL_WPIDS
kill -9 "$1" "$2" 2>/dev/null
check "the project is done within 300 s after 2 workers were killed" fl_wait_for 300 "$sa_id" 's["status"] == "done"'
st=$FL_ST
check "5 committed rounds" test "$(printf '%s' "$st" | jget 'sum(r["state"] == "committed" for r in s["rounds"])')" = 5
check "every committed round unmasked >= 6 devices" test "$(printf '%s' "$st" | jget 'all(r["reports"] >= 6 for r in s["rounds"] if r["state"] == "committed")')" = True
check "federated evaluation is summed through the secure sum" test "$(printf '%s' "$st" | jget '[r for r in s["rounds"] if r["state"] == "committed"][-1]["eval_samples"] > 0')" = True
model="$FL_DIR/sa.safetensors"
check "project pull writes the model" "$AF_BIN" project pull --server "$FL_URL" --key-file "$FL_DIR/owner.key" "$sa_id" --out "$model"
acc=$("$AF_BIN" eval --model "$model" --data fashion-mnist --json | sed -n 's/.*"accuracy": *\([0-9.]*\).*/\1/p')
echo "     test accuracy after 5 securely aggregated rounds: $acc"
check "test accuracy >= $MIN_ACC (got $acc)" awk -v a="$acc" -v m="$MIN_ACC" 'BEGIN { exit !(a != "" && a >= m) }'
check "the coordinator logged masked inputs, never a plain report" sh -c "grep -q 'event=masked_input_accepted' '$FL_DIR/serve.log' && ! grep -q 'event=report_accepted' '$FL_DIR/serve.log'"

# DP with noise split across the devices (the 8 remaining workers)
dp_id=$(fl_project dp '{"rounds": 2, "devices_per_round": 6, "min_reports": 5,
  "over_selection": 1, "round_deadline_s": 40, "local_epochs": 1, "batch": 10, "lr": 0.05,
  "dataset": "fashion-mnist", "secagg": true, "dp_clip": 1, "dp_noise": 0.5,
  "dp_population": 1000, "dp_adaptive_quantile": 0.5}')
check "DP + secure aggregation project created (id '$dp_id')" test -n "$dp_id"
# the surviving workers may have exited (every project they knew was done): start fresh ones
i=0
# shellcheck disable=SC2086
while [ $i -lt 6 ]; do fl_worker d$i $i/6 iid $WOPTS; i=$((i + 1)); done
check "2 DP rounds commit within 200 s" fl_wait_for 200 "$dp_id" 's["status"] == "done"'
st=$FL_ST
check "  ... epsilon is reported and grows" test "$(printf '%s' "$st" | jget '0 < [r for r in s["rounds"] if r["state"] == "committed"][0]["epsilon"] < [r for r in s["rounds"] if r["state"] == "committed"][-1]["epsilon"] == s["epsilon"]')" = True
check "  ... the adaptive clip moved from 1" test "$(printf '%s' "$st" | jget 's["dp_clip"] != 1')" = True

# a statistics query that waits for its release and prints it
"$AF_BIN" project stats --server "$FL_URL" --key-file "$FL_DIR/owner.key" \
  --model models/fashion_cnn.json --devices 5 --min-devices 4 --noise 0.5 --deadline 30 \
  --wait 120 >"$FL_DIR/stats-wait.txt" 2>&1 &
spid=$!
i=0
# shellcheck disable=SC2086
while [ $i -lt 5 ]; do fl_worker q$i $i/5 iid $WOPTS; i=$((i + 1)); done
wait $spid
check "project stats --wait prints the release" grep -q "label statistics of [45] devices" "$FL_DIR/stats-wait.txt"

fl_stop $FL_SPID
finish
