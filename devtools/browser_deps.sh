#!/bin/sh
# Makes sure Debian's Chromium is there for the browser tests (tests/browser), which drive
# /usr/bin/chromium through Playwright; Playwright's own browser downloads are never used.
# Installs it with apt-get when it is missing and we are root; otherwise says what to do.
# Without Chromium the browser tests skip, except under CI=true, where they fail.
set -eu

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

in_ci() { [ "${CI:-}" = "true" ]; }

if [ "$(id -u)" -ne 0 ]; then
    echo "browser tests: $CHROMIUM is missing and only root can install it:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y chromium" >&2
    if in_ci; then
        exit 1
    fi
    echo "browser tests will be skipped until then." >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser tests: $CHROMIUM is missing and there is no apt-get here; install Chromium at $CHROMIUM." >&2
    if in_ci; then
        exit 1
    fi
    exit 0
fi

echo "browser tests: installing Chromium (apt-get install chromium)..."
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq && apt-get install -y -qq chromium >/dev/null && [ -x "$CHROMIUM" ]; then
    echo "browser tests: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
    exit 0
fi
echo "browser tests: apt-get could not install chromium at $CHROMIUM." >&2
if in_ci; then
    exit 1
fi
echo "browser tests will be skipped until then." >&2
exit 0
