#!/bin/sh
# test_faults.sh — the coordinator and the devices under failure, over HTTP on loopback:
#   A. SIGKILL the coordinator mid-round and restart it on the same database and port: the
#      same round continues with every acknowledged report and then completes;
#   B. SIGKILL 30% of the selected workers mid-round: the round still closes by its deadline
#      (a vanished device never blocks it), committed if the minimum reported, otherwise
#      abandoned and retried — as the plan says;
#   C. the survivors are fewer than the next plan's minimum: the attempt is abandoned at the
#      deadline and a new attempt of the same round opens.
# POSIX sh; AF_BIN is the binary (tests/run.sh sets it). One line per check, then
# "N passed, N failed"; exits 1 on any failure. Every process it starts is stopped on exit.
cd "$(dirname "$0")/../.." || exit 1
. tests/cli/fl_lib
trap fl_cleanup EXIT
trap 'exit 1' INT TERM
fl_watchdog 420
FL_DB="$FL_DIR/a.db"
LOG="$FL_DIR/serve.log"

check "coordinator listens on a free loopback port" fl_serve "$FL_DB" 127.0.0.1:0 "$LOG"
[ -n "$FL_URL" ] || { tail -n 20 "$LOG"; finish; exit 1; }
port=${FL_URL##*:}

# ---- A: the coordinator is killed mid-round ----------------------------------------------
# 8 reports wanted, 6 devices: the round can only close at its deadline, so it is open with
# acknowledged reports for a while
SMALL=""
EB=5
DC=6
if [ "$FL_SLOW" = 1 ]; then
    SMALL="--max-samples 500"
    EB=2
    DC=20
    echo "note sanitizer build: devices keep 500 training samples (the three killed in B keep all)"
fi
# shellcheck disable=SC2086
i=0; while [ $i -lt 6 ]; do fl_worker a$i $i/6 iid $SMALL; i=$((i + 1)); done
wa=$FL_WPIDS; FL_WPIDS=""
pa=$(fl_project crash '{"rounds": 1, "devices_per_round": 8, "min_reports": 4, "over_selection": 1.0,
  "round_deadline_s": 15, "local_epochs": 1, "batch": 10, "lr": 0.05}')
check "project A created" test -n "$pa"
check "A: round 1 open with >= 4 acknowledged reports" fl_wait_for 60 "$pa" 's["round"] is not None and s["round"]["reports"] >= 4'
before=$(printf '%s' "$FL_ST" | jget 's["round"]["reports"]')
kill -9 "$FL_SPID"
wait "$FL_SPID" 2>/dev/null
acked=$(cat "$FL_DIR"/a*.log | grep -c 'round 1 attempt 1: trained.*update accepted')
echo "     killed the coordinator with $before reports in the status, $acked acknowledgements in the worker logs"
n=0
until fl_serve "$FL_DB" "127.0.0.1:$port" "$LOG" || [ $n -ge 25 ]; do sleep 0.2; n=$((n + 1)); done
check "A: coordinator restarts on the same database and port" test "$FL_URL" = "http://127.0.0.1:$port"
st=$(fl_status "$pa")
check "A: the same round 1 attempt 1 is open after the restart" test "$(printf '%s' "$st" | jget 's["round"]["number"] == 1 and s["round"]["attempt"] == 1 and s["round"]["state"] == "open"')" = True
after=$(printf '%s' "$st" | jget 's["round"]["reports"]')
check "A: no acknowledged report lost ($after after restart >= $before in status, >= $acked acked)" \
    test -n "$after" -a "$after" -ge "$before" -a "$after" -ge "$acked"
check "A: the round then completes (committed)" fl_wait_for 60 "$pa" 's["status"] == "done"'
final=$(printf '%s' "$FL_ST" | jget '[r for r in s["rounds"] if r["state"] == "committed"][0]["reports"]')
check "A: committed as attempt 1 with every report ($final >= $after)" test "$(printf '%s' "$FL_ST" | jget '[r["attempt"] for r in s["rounds"] if r["state"] == "committed"] == [1]')" = True -a "$final" -ge "$after"
# shellcheck disable=SC2086
fl_stop $wa

# ---- B: 30% of the selected devices are killed mid-round ----------------------------------
# Workers 0-2 hold the whole training split (shard 0/1), workers 3-9 a tenth each: the three
# that get killed are still training when all ten have been selected. The survivors serve C
# after B is done, so they must not exit when told that every project is done.
i=0; while [ $i -lt 3 ]; do fl_worker b$i 0/1 iid --no-done-exit; i=$((i + 1)); done
# shellcheck disable=SC2086
while [ $i -lt 10 ]; do fl_worker b$i $i/10 iid $SMALL --no-done-exit; i=$((i + 1)); done
wb=$FL_WPIDS; FL_WPIDS=""
# wait until the workers are loaded and asking, so that all of them are selected at once
n=0; while [ "$(cat "$FL_DIR"/b*.log 2>/dev/null | grep -c 'loaded in')" -lt 10 ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
# 10 local epochs: several seconds of training with 10 workers on 2 cores, so the kill lands
# while the selected devices train
DL=30
pb=$(fl_project vanish "{\"rounds\": 1, \"devices_per_round\": 10, \"min_reports\": 7, \"over_selection\": 1.0,
  \"round_deadline_s\": $DL, \"local_epochs\": $EB, \"batch\": 10, \"lr\": 0.05}")
check "project B created" test -n "$pb"
check "B: all 10 devices selected in round 1" fl_wait_for 30 "$pb" 's["round"] is not None and s["round"]["selected"] == 10'
printf '%s' "$FL_ST" | jget 's["round"]["reports"]' | sed 's/^/     reports when 3 workers are killed: /'
set -- $wb
kill -9 "$1" "$2" "$3"
wait "$1" "$2" "$3" 2>/dev/null
check "B: round 1 closes within its deadline" fl_wait_for $((DL + 15)) "$pb" 'any(r["number"] == 1 for r in s["rounds"])'
r1=$(printf '%s' "$FL_ST" | jget '[r for r in s["rounds"] if r["number"] == 1][0]')
echo "     round 1: $r1"
check "B: closed no later than the deadline (+1.5 s)" test "$(printf '%s' "$FL_ST" | jget 'all(r["closed_at"] - r["opened_at"] <= '$DL' + 1.5 for r in s["rounds"])')" = True
check "B: the killed devices never reported (fewer than 10 reports)" test "$(printf '%s' "$FL_ST" | jget 's["rounds"][0]["reports"] < 10')" = True
check "B: committed if >= 7 reported, abandoned otherwise" test "$(printf '%s' "$FL_ST" | jget 'all((r["state"] == "committed") == (r["reports"] >= 7) for r in s["rounds"])')" = True
check "B: with the 7 survivors' reports, round 1 is committed and the project done" fl_wait_for 10 "$pb" 's["status"] == "done" and s["rounds"][-1]["reports"] == 7'

# ---- C: fewer devices than the plan's minimum: abandon, then a new attempt ------------------
pc=$(fl_project retry "{\"rounds\": 1, \"devices_per_round\": 10, \"min_reports\": 9, \"over_selection\": 1.0,
  \"round_deadline_s\": $DC, \"local_epochs\": 1, \"batch\": 10, \"lr\": 0.05}")
check "project C created" test -n "$pc"
check "C: attempt 1 abandoned at the deadline, attempt 2 of round 1 opens" fl_wait_for $((DC + 40)) "$pc" \
    '[(r["number"], r["attempt"], r["state"]) for r in s["rounds"]][:1] == [(1, 1, "abandoned")] and s["round"] is not None and s["round"]["number"] == 1 and s["round"]["attempt"] >= 2'
check "C: the abandoned attempt had 7 reports (fewer than 9)" test "$(printf '%s' "$FL_ST" | jget 's["rounds"][0]["reports"]')" = 7
check "C: the model did not change (version 0)" test "$(printf '%s' "$FL_ST" | jget 's["version"]')" = 0

check "the coordinator is still serving" kill -0 "$FL_SPID"
check "no sanitizer report in any log" test -z "$(grep -l 'Sanitizer\|runtime error' "$FL_DIR"/*.log)"
[ "$fail" = 0 ] || { echo "--- coordinator log"; tail -n 25 "$LOG"; }
finish
