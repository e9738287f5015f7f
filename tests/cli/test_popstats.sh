#!/bin/sh
# test_popstats.sh — `artificien sim --population-stats` ($AF_BIN) on Fashion-MNIST: the
# printed table and RUN_DIR/population.json, the exact histogram without noise, the noisy one
# within 5 noise std of the truth, ε equal to `artificien privacy` for one step with q = 1,
# the JSON summary with training, and refusals of bad options. Needs Fashion-MNIST and
# python3 (to read JSON). Prints one line per check and "N passed, N failed"; exits 1 on any
# failure.
set -u
BIN=${AF_BIN:-build/artificien}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
ko() { fail=$((fail + 1)); echo "FAIL $1"; }
check() { name=$1; shift; if "$@"; then ok "$name"; else ko "$name"; fi; }
# json_check FILE PYTHON-EXPR: EXPR with j = the JSON of FILE (whole file, or its last line)
json_check() {
    python3 -c 'import json, math, sys
t = open(sys.argv[1]).read().strip()
try:
    j = json.loads(t)
except ValueError:
    j = json.loads(t.splitlines()[-1])
sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" 2>/dev/null
}

# 1. no noise, no clipping: Fashion-MNIST's training split holds exactly 6000 of each class
"$BIN" sim --clients 200 --partition labels:2 --rounds 0 --population-stats --stats-noise 0 \
    --stats-bound 100000 --stats-group 50 --threads 2 --out "$TMP/exact" >"$TMP/exact.out" 2>"$TMP/exact.err"
check "stats-only run succeeds" test -s "$TMP/exact/population.json"
check "no noise: counts are exactly 6000 per class" \
    json_check "$TMP/exact/population.json" 'j["counts"] == [6000] * 10 and j["simulation_truth"]["counts"] == [6000] * 10'
check "no noise: balanced, TV 0, epsilon null (inf)" \
    json_check "$TMP/exact/population.json" 'j["tv_uniform"] == 0 and j["epsilon"] is None and j["reported"] == 200 and j["groups"] == 4'
check "the table names the classes and says epsilon inf" \
    sh -c "grep -q 'Ankle boot' '$TMP/exact.out' && grep -q 'epsilon inf' '$TMP/exact.out'"
check "--rounds 0 trains nothing" sh -c "test ! -e '$TMP/exact/rounds.csv'"

# 2. noise z = 3, bound 100 (devices hold 300 samples: all clipped)
"$BIN" sim --clients 200 --rounds 0 --population-stats --stats-noise 3 --stats-bound 100 \
    --stats-delta 1e-5 --threads 2 --seed 4 --out "$TMP/noisy" >"$TMP/noisy.out" 2>"$TMP/noisy.err"
check "noisy: every class within 5 std of the clipped truth" \
    json_check "$TMP/noisy/population.json" 'all(abs(c - t) < 5 * j["count_std"] for c, t in zip(j["counts"], j["simulation_truth"]["clipped_counts"])) and j["count_std"] > 0'
check "noisy: count std is z*B*sqrt(sum n_g/t_g) = 300*sqrt(2*100/67)" \
    json_check "$TMP/noisy/population.json" 'abs(j["count_std"] - 300 * math.sqrt(200 / 67)) < 1e-6 and j["clipped"] == 200'
eps=$("$BIN" privacy --q 1 --noise 3 --rounds 1 --delta 1e-5 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["epsilon"])')
check "noisy: epsilon equals artificien privacy --q 1 --noise 3 --rounds 1 ($eps)" \
    json_check "$TMP/noisy/population.json" "abs(j['epsilon'] - $eps) < 1e-8"

# 3. with training: the JSON summary carries the release and the composed epsilon
"$BIN" sim --clients 100 --per-round 10 --rounds 2 --population-stats --stats-noise 4 \
    --dp-clip 0.3 --dp-noise 1.0 --threads 2 --quiet --json >"$TMP/train.json" 2>"$TMP/train.err"
check "with training: population in the --json summary" \
    json_check "$TMP/train.json" 'len(j["population"]["counts"]) == 10 and j["population"]["epsilon"] > 0'
check "with training: total epsilon exceeds both parts" \
    json_check "$TMP/train.json" 'j["epsilon_total"] > j["population"]["epsilon"] and j["epsilon_total"] > j["rounds"][-1]["epsilon"]'

# 4. refusals: one line, non-zero status, naming the option
refused() {
    name=$1; pat=$2; shift 2
    if "$BIN" sim "$@" >"$TMP/r.out" 2>"$TMP/r.err"; then ko "$name (accepted)"; return; fi
    if grep -q -- "$pat" "$TMP/r.err" && [ "$(wc -l <"$TMP/r.err")" -eq 1 ]; then ok "$name"; else
        ko "$name ($(cat "$TMP/r.err"))"; fi
}
refused "stats options need --population-stats" "need --population-stats" --rounds 1 --stats-noise 2
refused "--rounds 0 needs --population-stats" "0 only with --population-stats" --rounds 0
refused "negative bound" "--stats-bound" --rounds 0 --population-stats --stats-bound -5
refused "negative noise" "--stats-noise" --rounds 0 --population-stats --stats-noise -1
refused "delta out of range" "--stats-delta" --rounds 0 --population-stats --stats-delta 2

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
