#!/usr/bin/env bash
# Make sure Debian's Chromium is present for the browser smoke test
# (tests/test_browser.py). Installs it with apt-get when we are root;
# otherwise says how. Never downloads a browser build of its own.
set -u
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser smoke test..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && exit 0
  echo "apt-get install chromium failed." >&2
  exit 1
fi
echo "NOTE: chromium not found; the browser smoke test will be skipped." \
     "Install it with: sudo apt-get install -y chromium" >&2
exit 0
