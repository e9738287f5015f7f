#!/bin/sh
# load.sh BUILD — the coordinator under load (part of `make bench`): starts `artificien serve`
# on a free loopback port with a fresh database, runs build/bench-load against it (10,000
# devices enrol and check in, then check-in → download → upload of the CNN's update for
# LOAD_SECONDS over LOAD_CONNECTIONS connections), prints the figures and writes
# BUILD/bench/load.json. Stops the coordinator on exit, whatever happens.
# Env: LOAD_DEVICES (10000), LOAD_CONNECTIONS (32), LOAD_SECONDS (20), LOAD_PER_ROUND (1000),
# LOAD_SERVER_THREADS (the server's --threads, default its own).
set -u
BUILD=${1:-build}
BIN=$BUILD/artificien
mkdir -p "$BUILD/bench"
dir=$(mktemp -d "${TMPDIR:-/tmp}/artificien-load.XXXXXX")
spid=""
cleanup() {
    if [ -n "$spid" ]; then
        kill "$spid" 2>/dev/null
        n=0; while kill -0 "$spid" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
        kill -9 "$spid" 2>/dev/null
        wait "$spid" 2>/dev/null
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
threads=""
[ -n "${LOAD_SERVER_THREADS:-}" ] && threads="--threads $LOAD_SERVER_THREADS"
# shellcheck disable=SC2086
"$BIN" serve --db "$dir/a.db" --listen 127.0.0.1:0 --retry-after 0.5 --log-level warn $threads \
    >"$dir/serve.out" 2>"$dir/serve.log" &
spid=$!
url=""
n=0
while [ -z "$url" ] && [ $n -lt 200 ]; do
    kill -0 "$spid" 2>/dev/null || break
    url=$(sed -n 's/^listening on //p' "$dir/serve.out" 2>/dev/null)
    [ -z "$url" ] && sleep 0.1
    n=$((n + 1))
done
[ -n "$url" ] || { echo "load: the coordinator did not start" >&2; cat "$dir/serve.log" >&2; exit 1; }
echo "== coordinator under load (bench/load.sh)"
"$BUILD/bench-load" --server "$url" --admin-key-file "$dir/a.db.admin-key" \
    --enroll-secret-file "$dir/a.db.enroll-secret" --pid "$spid" \
    --devices "${LOAD_DEVICES:-10000}" --connections "${LOAD_CONNECTIONS:-32}" \
    --seconds "${LOAD_SECONDS:-20}" --per-round "${LOAD_PER_ROUND:-1000}" \
    --json "$BUILD/bench/load.json"
rc=$?
[ $rc = 0 ] || tail -n 20 "$dir/serve.log" >&2
exit $rc
