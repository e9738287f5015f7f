#!/bin/sh
# run.sh — runs the dashboard's browser test (tests/browser/test_dashboard.py): installs what it
# needs first — Debian's chromium (apt-get) and Python playwright (pip, into a venv under
# $BUILD when the current python lacks it) — then brings $BUILD/artificien up to date. Never
# runs `playwright install`: the test drives /usr/bin/chromium. Not part of `make test`.
# Usage: tests/browser/run.sh            (DASH_SCREENSHOTS=DIR saves screenshots there)
set -eu
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}

if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "installing chromium (apt-get)"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi

PY=python3
if ! $PY -c 'import playwright' 2>/dev/null; then
    VENV="$BUILD/browser-venv"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV for playwright"
        python3 -m venv "$VENV" || {
            echo "python3 -m venv failed: install python3-venv (apt-get) or pip install playwright" >&2
            exit 1
        }
    fi
    PY="$VENV/bin/python"
    $PY -c 'import playwright' 2>/dev/null || "$VENV/bin/pip" install -q playwright
fi

make -s "$BUILD/artificien"
ARTIFICIEN="$BUILD/artificien" exec $PY tests/browser/test_dashboard.py
