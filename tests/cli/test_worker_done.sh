#!/bin/sh
# test_worker_done.sh — a worker stops when its project is done: the coordinator answers a
# waiting device with a reason, and `artificien worker` exits 0 on "project_done" once it has
# trained; one that has not trained yet keeps waiting (its project may come later), and
# --no-done-exit keeps checking in.
# POSIX sh; AF_BIN is the binary (tests/run.sh sets it). One line per check, then
# "N passed, N failed"; exits 1 on any failure. Every process it starts is stopped on exit.
cd "$(dirname "$0")/../.." || exit 1
. tests/cli/fl_lib
trap fl_cleanup EXIT
trap 'exit 1' INT TERM
fl_watchdog 240
FL_DB="$FL_DIR/a.db"
LOG="$FL_DIR/serve.log"
SMALL="--max-samples 300"

check "coordinator listens on a free loopback port" fl_serve "$FL_DB" 127.0.0.1:0 "$LOG"
[ -n "$FL_URL" ] || { tail -n 20 "$LOG"; finish; exit 1; }
# two workers train the only round of a one-round project; a third trains too but stays
fl_worker d0 0/3 iid $SMALL
fl_worker d1 1/3 iid $SMALL
fl_worker d2 2/3 iid $SMALL --no-done-exit
set -- $FL_WPIDS
w0=$1 w1=$2 w2=$3
id=$(fl_project done '{"rounds": 1, "devices_per_round": 3, "min_reports": 3, "over_selection": 1.0,
  "round_deadline_s": 120, "local_epochs": 1, "batch": 10, "lr": 0.05}')
check "project created" test -n "$id"
check "the project is done" fl_wait_for 120 "$id" 's["status"] == "done"'
# a worker started now has never trained: told project_done, it keeps waiting
FL_WPIDS=""
fl_worker late 0/3 iid $SMALL
wl=$FL_WPIDS
exited() { ! kill -0 "$1" 2>/dev/null; }
n=0; while { ! exited $w0 || ! exited $w1; } && [ $n -lt 150 ]; do sleep 0.1; n=$((n + 1)); done
check "trained workers exit by themselves once the project is done" exited $w0
check "  ... both of them" exited $w1
wait $w0; s0=$?
wait $w1; s1=$?
check "  ... with status 0" test "$s0" = 0 -a "$s1" = 0
check "  ... saying why" test "$(grep -l 'every project this device could join is done' "$FL_DIR"/d0.log "$FL_DIR"/d1.log | wc -l)" = 2
# the late worker has loaded its shard and checked in (retry_after 1 s) a few times by now
n=0; while ! grep -q 'loaded in' "$FL_DIR/late.log" 2>/dev/null && [ $n -lt 150 ]; do sleep 0.1; n=$((n + 1)); done
sleep 3
check "a worker that never trained keeps waiting" kill -0 $wl
check "--no-done-exit keeps a trained worker checking in" kill -0 $w2
fl_stop $wl $w2
check "no sanitizer report in any log" test -z "$(grep -l 'Sanitizer\|runtime error' "$FL_DIR"/*.log)"
[ "$fail" = 0 ] || { echo "--- coordinator log"; tail -n 20 "$LOG"; echo "--- d0"; tail -n 5 "$FL_DIR/d0.log"; }
finish
