#!/bin/sh
# test_privacy.sh — `artificien privacy` (the RDP accountant on the command line): the
# TF Privacy reference value, solving for the noise and the rounds, JSON output, and clear
# refusals of bad values. POSIX sh; AF_BIN is the binary (tests/run.sh sets it).
# Prints one line per check and "N passed, N failed"; exits 1 on any failure.
AF_BIN=${AF_BIN:-build/artificien}
pass=0; fail=0
errf=$(mktemp)
ok() { pass=$((pass + 1)); echo "ok   $1"; }
ko() { fail=$((fail + 1)); echo "FAIL $1"; }
# check NAME CMD...: the command's status is 0
check() { name=$1; shift; if "$@"; then ok "$name"; else ko "$name"; fi; }
# near A B TOL: |A - B| <= TOL
near() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= t) }'; }
# refused NAME PATTERN ARGS...: exit status 2 and PATTERN in the error message, nothing on stdout
refused() {
    name=$1; pat=$2; shift 2
    out=$("$AF_BIN" privacy "$@" 2>"$errf"); st=$?
    if [ "$st" = 2 ] && [ -z "$out" ] && grep -q -- "$pat" "$errf"; then ok "$name"; else
        ko "$name (status $st, stdout '$out', stderr '$(cat "$errf")')"; fi
}
# jfield JSON KEY: the number after "KEY": in a one-line JSON object
jfield() { printf '%s\n' "$1" | sed -n "s/.*\"$2\": \([^,}]*\).*/\1/p"; }

# TF Privacy's MNIST reference: q = 150/60000, z = 1.3, 15 epochs = 6000 steps, δ = 1e-5.
out=$("$AF_BIN" privacy --q 0.0025 --noise 1.3 --rounds 6000 --delta 1e-5)
check "reference line says epsilon 0.724223 at order 19" sh -c "printf '%s' '$out' | grep -q 'epsilon 0.724223 at delta 1e-05 (best order 19)'"
j=$("$AF_BIN" privacy --q 0.0025 --noise 1.3 --rounds 6000 --delta 1e-5 --json)
check "reference epsilon within 1e-4 of 0.724223 (json)" near "$(jfield "$j" epsilon)" 0.724223 1e-4
check "reference best order is 19 (json)" near "$(jfield "$j" order)" 19 0
j=$("$AF_BIN" privacy --q 0.0025 --noise 1.3 --rounds 6000 --delta 1e-5 --json --orders tfp)
check "TF Privacy's order list gives the same epsilon" near "$(jfield "$j" epsilon)" 0.724223 1e-4
j=$("$AF_BIN" privacy --q=0.0025 --noise=1.3 --rounds=6000 --delta=1e-5 --json)
check "--opt=value form accepted" near "$(jfield "$j" epsilon)" 0.724223 1e-4

# monotonicity: more rounds cost more, more noise costs less
e1=$(jfield "$("$AF_BIN" privacy --q 0.01 --noise 1.1 --rounds 100 --delta 1e-5 --json)" epsilon)
e2=$(jfield "$("$AF_BIN" privacy --q 0.01 --noise 1.1 --rounds 200 --delta 1e-5 --json)" epsilon)
e3=$(jfield "$("$AF_BIN" privacy --q 0.01 --noise 2.2 --rounds 200 --delta 1e-5 --json)" epsilon)
check "epsilon grows with rounds" awk -v a="$e1" -v b="$e2" 'BEGIN { exit !(a > 0 && b > a) }'
check "epsilon shrinks with noise" awk -v a="$e3" -v b="$e2" 'BEGIN { exit !(a > 0 && a < b) }'

# --epsilon without --noise: the noise the budget needs, which meets it (and z − 1e-4 misses it)
j=$("$AF_BIN" privacy --q 0.0025 --rounds 6000 --delta 1e-5 --epsilon 0.724223 --json)
zs=$(jfield "$j" noise)
check "solved noise multiplier is 1.3 within 1e-4" near "$zs" 1.3 1e-4
check "solved noise meets the target" awk -v e="$(jfield "$j" epsilon)" 'BEGIN { exit !(e <= 0.724223) }'
zlo=$(awk -v z="$zs" 'BEGIN { printf "%.8f", z * (1 - 1e-4) }')
elo=$(jfield "$("$AF_BIN" privacy --q 0.0025 --noise "$zlo" --rounds 6000 --delta 1e-5 --json)" epsilon)
check "a slightly smaller noise misses the target" awk -v e="$elo" 'BEGIN { exit !(e > 0.724223) }'
out=$("$AF_BIN" privacy --q 0.0025 --rounds 6000 --delta 1e-5 --epsilon 0.724223)
check "solve line names the noise multiplier" sh -c "printf '%s' '$out' | grep -q '^noise multiplier 1.300'"

# --noise and --epsilon without --rounds: the most rounds the budget allows
j=$("$AF_BIN" privacy --q 0.0025 --noise 1.3 --delta 1e-5 --epsilon 0.72423 --json)
check "max rounds for epsilon 0.72423 is 6000 (0.724223 at 6000)" awk -v t="$(jfield "$j" rounds)" 'BEGIN { exit !(t == 6000) }'
t1=$(( $(jfield "$j" rounds) + 1 ))
e=$(jfield "$("$AF_BIN" privacy --q 0.0025 --noise 1.3 --rounds $t1 --delta 1e-5 --json)" epsilon)
check "one more round than the maximum exceeds the budget" awk -v e="$e" 'BEGIN { exit !(e > 0.72423) }'
out=$("$AF_BIN" privacy --q 0.0025 --noise 1.3 --rounds 6000 --delta 1e-5 --epsilon 0.5)
check "a run over a given target says so" sh -c "printf '%s' '$out' | grep -q 'EXCEEDS the target'"

# edge values that are valid
j=$("$AF_BIN" privacy --q 1 --noise 1 --rounds 1 --delta 1e-5 --json)
check "q = 1 (no subsampling) accepted, finite epsilon" awk -v e="$(jfield "$j" epsilon)" 'BEGIN { exit !(e > 1 && e < 10) }'
out=$("$AF_BIN" privacy --q 0.01 --noise 0 --rounds 1 --delta 1e-5)
check "noise 0 gives epsilon inf with a warning" sh -c "printf '%s' '$out' | grep -q 'epsilon inf.*no privacy'"
check "--help prints usage, exit 0" sh -c "'$AF_BIN' privacy --help | grep -q 'usage: artificien privacy'"
check "top-level help lists privacy" sh -c "'$AF_BIN' --help | grep -q '^  privacy'"

# bad values: exit 2, a message naming the option, nothing on stdout
refused "q = 0 refused" "--q must be in (0, 1]" --q 0 --noise 1 --rounds 10 --delta 1e-5
refused "q > 1 refused" "--q must be in (0, 1]" --q 1.5 --noise 1 --rounds 10 --delta 1e-5
refused "q negative refused" "--q must be in (0, 1]" --q -0.1 --noise 1 --rounds 10 --delta 1e-5
refused "noise < 0 refused" "--noise must be >= 0" --q 0.1 --noise -1 --rounds 10 --delta 1e-5
refused "delta = 0 refused" "--delta must be in (0, 1)" --q 0.1 --noise 1 --rounds 10 --delta 0
refused "delta = 1 refused" "--delta must be in (0, 1)" --q 0.1 --noise 1 --rounds 10 --delta 1
refused "rounds = 0 refused" "--rounds must be >= 1" --q 0.1 --noise 1 --rounds 0 --delta 1e-5
refused "epsilon <= 0 refused" "--epsilon must be > 0" --q 0.1 --rounds 10 --delta 1e-5 --epsilon 0
refused "missing --q refused" "--q is required" --noise 1 --rounds 10 --delta 1e-5
refused "missing --delta refused" "--delta is required" --q 0.1 --noise 1 --rounds 10
refused "missing --noise refused" "--noise is required" --q 0.1 --rounds 10 --delta 1e-5
refused "missing --rounds refused" "--rounds is required" --q 0.1 --noise 1 --delta 1e-5
refused "non-numeric q refused" "--q expects a number" --q abc --noise 1 --rounds 10 --delta 1e-5
refused "unknown option refused" "unknown option '--sigma'" --q 0.1 --sigma 1 --rounds 10 --delta 1e-5
refused "unknown order list refused" "--orders must be" --q 0.1 --noise 1 --rounds 10 --delta 1e-5 --orders foo
rm -f "$errf"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ] || exit 1
