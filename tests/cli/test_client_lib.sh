#!/bin/sh
# test_client_lib.sh — the device library as an app sees it: build/libartificien-client.a
# exports only the public artificien_* API (no engine symbol to clash with the app's), and a
# small program linked against it alone (plus the system libraries docs/client.md lists)
# defines its own af_log/nn_model_free/data_dataset_free without a clash, runs, and gets clear
# errors for a bad configuration.
# POSIX sh; AF_BIN is the binary (tests/run.sh sets it). One line per check, then
# "N passed, N failed".
cd "$(dirname "$0")/../.." || exit 1
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
ko() { fail=$((fail + 1)); echo "FAIL $1"; }
check() { name=$1; shift; if "$@"; then ok "$name"; else ko "$name"; fi; }
AF_BIN=${AF_BIN:-build/artificien}
BUILD=$(dirname "$AF_BIN")
LIB="$BUILD/libartificien-client.a"
D=$(mktemp -d "${TMPDIR:-/tmp}/artificien-lib.XXXXXX")
trap 'rm -rf "$D"' EXIT

check "the library exists" test -f "$LIB"
nm -g --defined-only "$LIB" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u >"$D/syms"
check "it defines public symbols" test -s "$D/syms"
check "every global it defines is artificien_*" sh -c "! grep -v '^artificien_' '$D/syms'"
for f in artificien_client_create artificien_client_run_once artificien_errmsg artificien_data_load; do
    check "  ... including $f" grep -qx "$f" "$D/syms"
done

cat >"$D/app.c" <<'EOC'
#include <stdio.h>
#include <string.h>
#include <artificien/client.h>
/* an app's own functions with the engine's internal names: no clash */
int af_log(int x) { return x; }
void nn_model_free(void *p) { (void)p; }
void data_dataset_free(void *p) { (void)p; }
int main(void)
{
    artificien_config cfg;
    artificien_config_init(&cfg);
    artificien_client *c = NULL;
    int rc = artificien_client_create(&cfg, &c); /* no server, no data: refused */
    printf("%d|%s|%s\n", rc, artificien_strerror(rc), artificien_errmsg(NULL));
    return rc == ARTIFICIEN_EINVAL && c == NULL && af_log(0) == 0 ? 0 : 1;
}
EOC
SAN=""
ldd "$AF_BIN" 2>/dev/null | grep -q libasan && SAN="-fsanitize=address,undefined"
LIBS=$(pkg-config --libs libcjson zlib libsodium libcurl 2>/dev/null || echo -lcjson -lz -lsodium -lcurl)
check "an app links against the library alone" ${CC:-cc} $SAN -Iinclude -o "$D/app" "$D/app.c" "$LIB" $LIBS -lblis -lm -pthread
out=$("$D/app" 2>&1)
check "it runs and gets ARTIFICIEN_EINVAL with a message naming the field ($out)" sh -c "echo '$out' | grep -q '^-1|.*|.*server'"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
