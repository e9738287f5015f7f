#!/bin/sh
# test_serve.sh — `artificien serve` as an operator runs it: the ready line with the real port
# for --listen 127.0.0.1:0, the 0600 key files, /healthz and /metrics with curl, an owner and a
# project created with the admin key, SIGKILL and a restart on the same database keeping the
# project, graceful SIGTERM, and clear refusals of bad options.
# POSIX sh; AF_BIN is the binary (tests/run.sh sets it). Needs curl.
# Prints one line per check and "N passed, N failed"; exits 1 on any failure.
AF_BIN=${AF_BIN:-build/artificien}
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
ko() { fail=$((fail + 1)); echo "FAIL $1"; }
check() { name=$1; shift; if "$@"; then ok "$name"; else ko "$name"; fi; }
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

# start_server: runs serve in the background, waits for the "listening on" line, sets $pid
# and $url. Returns 1 if it did not come up within 10 s.
start_server() {
    : >"$dir/out"
    "$AF_BIN" serve --db "$dir/a.db" --listen 127.0.0.1:0 --log-level info \
        >"$dir/out" 2>>"$dir/err" &
    pid=$!
    i=0
    while [ $i -lt 100 ]; do
        url=$(sed -n 's/^listening on \(http:\/\/127\.0\.0\.1:[0-9][0-9]*\)$/\1/p' "$dir/out")
        [ -n "$url" ] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1; i=$((i + 1))
    done
    return 1
}

if ! command -v curl >/dev/null 2>&1; then
    ko "curl is needed for this test (apt-get install curl)"
    echo "$pass passed, $fail failed"; exit 1
fi

check "serve starts and prints the listening line" start_server
port=${url##*:}
check "port 0 became a real port" test "$port" -gt 0
check "the admin key path is printed" grep -q "^admin key: $dir/a.db.admin-key\$" "$dir/out"
check "admin key file is mode 0600" test "$(stat -c %a "$dir/a.db.admin-key")" = 600
check "enrolment secret file is mode 0600" test "$(stat -c %a "$dir/a.db.enroll-secret")" = 600
check "GET /healthz" test "$(curl -s "$url/healthz")" = '{"status":"ok"}'
curl -s -D "$dir/mh" "$url/metrics" >"$dir/metrics"
check "GET /metrics is Prometheus text" grep -qi '^Content-Type: text/plain' "$dir/mh"
check "metrics have the rounds counter" grep -q '^artificien_rounds_total{state="committed"} 0$' "$dir/metrics"
check "metrics have the latency histogram" grep -q '^artificien_request_seconds_bucket{le="+Inf"}' "$dir/metrics"
st=$(curl -s -o "$dir/e" -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{"name":"x"}' "$url/v1/owners")
check "no token: 401 with a JSON error" sh -c "[ '$st' = 401 ] && grep -q '\"error\":\"unauthorized\"' '$dir/e'"

admin=$(cat "$dir/a.db.admin-key")
curl -s -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
    -d '{"name":"acme"}' "$url/v1/owners" >"$dir/owner"
key=$(sed -n 's/.*"api_key":"\([0-9a-f]*\)".*/\1/p' "$dir/owner")
check "admin creates an owner" test ${#key} = 64
spec='{"input":[4],"classes":3,"layers":[{"type":"linear","name":"fc","in_features":4,"out_features":3}]}'
curl -s -X POST -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d "{\"name\":\"toy\",\"spec\":$spec,\"plan\":{\"rounds\":2,\"dataset\":\"toy\"}}" \
    "$url/v1/projects" >"$dir/proj"
check "owner creates a project" grep -q '"id":1' "$dir/proj"

# SIGKILL, then a restart on the same database keeps the project and the keys
kill -9 "$pid"; wait "$pid" 2>/dev/null; pid=
check "restart after SIGKILL" start_server
check "the admin key is unchanged" test "$(cat "$dir/a.db.admin-key")" = "$admin"
curl -s -H "Authorization: Bearer $key" "$url/v1/projects" >"$dir/list"
check "the project survived SIGKILL" grep -q '"name":"toy"' "$dir/list"
check "the owner key still works" grep -q '"status":"running"' "$dir/list"

# SIGTERM: graceful stop, exit status 0, a log line
kill -TERM "$pid"; wait "$pid"; st=$?; pid=
check "SIGTERM stops it with status 0" test "$st" = 0
check "the shutdown is logged" grep -q 'event=shutdown signal=SIGTERM' "$dir/err"

# refusals of bad options: status 2 and a message naming the option
"$AF_BIN" serve --db "$dir/a.db" --listen nonsense >/dev/null 2>"$dir/e"; st=$?
check "--listen without a port is refused" sh -c "[ $st = 2 ] && grep -q -- '--listen' '$dir/e'"
"$AF_BIN" serve --db "$dir/a.db" --listen 127.0.0.1:0 --tls-cert x.pem >/dev/null 2>"$dir/e"; st=$?
check "--tls-cert without --tls-key is refused" sh -c "[ $st = 2 ] && grep -q -- '--tls-key' '$dir/e'"
"$AF_BIN" serve --db "$dir/a.db" --listen 127.0.0.1:0 --log-level loud >/dev/null 2>"$dir/e"; st=$?
check "a bad --log-level is refused" sh -c "[ $st = 2 ] && grep -q -- '--log-level' '$dir/e'"
"$AF_BIN" serve --db "$dir/nodir/x/a.db" --listen 127.0.0.1:0 >/dev/null 2>"$dir/e"; st=$?
check "an unopenable database is a clear error" sh -c "[ $st = 1 ] && grep -q 'nodir' '$dir/e'"

"$AF_BIN" project stats --server http://127.0.0.1:1 --key k >/dev/null 2>"$dir/e"; st=$?
check "project stats without --model is refused" sh -c "[ $st = 2 ] && grep -q -- '--model' '$dir/e'"
"$AF_BIN" project stats --server http://127.0.0.1:1 --key k --model models/fashion_cnn.json \
    --devices 3 --min-devices 5 >/dev/null 2>"$dir/e"; st=$?
check "project stats with --min-devices over --devices is refused" sh -c "[ $st = 2 ] && grep -q -- '--min-devices' '$dir/e'"
"$AF_BIN" project stats --server http://127.0.0.1:1 --key k --model models/fashion_cnn.json \
    >/dev/null 2>"$dir/e"; st=$?
check "project stats against no server is a clear error" sh -c "[ $st = 1 ] && grep -q '127.0.0.1:1' '$dir/e'"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
