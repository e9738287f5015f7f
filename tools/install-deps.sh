#!/bin/sh
# install-deps.sh — installs the Debian packages Artificien needs, only those missing.
# As root with apt-get: `apt-get update` then `apt-get install -y --no-install-recommends …`.
# Otherwise prints the exact command to run and fails, so nothing half-works.
set -eu
PKGS="gcc make libc6-dev pkg-config libblis-dev libcjson-dev zlib1g-dev libsodium-dev dataset-fashion-mnist python3 libcurl4-openssl-dev libsqlite3-dev libmicrohttpd-dev openssl curl libopenmpi-dev openmpi-bin"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
line="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "artificien: missing Debian packages:$missing" >&2
    echo "run as root:  apt-get update && $line" >&2
    exit 1
fi
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $missing >/dev/null
