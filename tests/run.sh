#!/bin/sh
# run.sh BUILD — the whole suite: the C unit-test runner, then every tests/cli/*.sh script
# (each prints its own "N passed, N failed" line). Ends with one line for the whole suite.
BUILD=${1:-build}
export AF_BIN="$PWD/$BUILD/artificien"
total_p=0; total_f=0
tally() { # the last "N passed, N failed" line of a log
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -n 1)
    if [ -z "$line" ]; then total_f=$((total_f + 1)); echo "FAIL $2: no result line"; return; fi
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
    total_p=$((total_p + p)); total_f=$((total_f + f))
}
log=$(mktemp)
"$BUILD/run_tests" >"$log" 2>&1
cat "$log"; tally "$log" run_tests
for t in tests/cli/*.sh; do
    [ -f "$t" ] || continue
    echo "== $t"
    sh "$t" >"$log" 2>&1
    cat "$log"; tally "$log" "$t"
done
rm -f "$log"
echo "$total_p passed, $total_f failed"
[ "$total_f" = 0 ]
