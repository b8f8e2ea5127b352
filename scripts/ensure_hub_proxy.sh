#!/usr/bin/env bash
# Make sure JupyterHub's proxy (configurable-http-proxy, from npm) is in build/hub-proxy: the course hub
# (classroom/hub.py) and its end-to-end test (tests/test_hub.py) start it. The version is pinned in
# classroom/hub_proxy/package-lock.json. Installs Debian's nodejs and npm first when they are missing and we are root.
set -eu
cd "$(dirname "$0")/.."
bin=build/hub-proxy/node_modules/.bin/configurable-http-proxy
if [ -x "$bin" ] && cmp -s classroom/hub_proxy/package-lock.json build/hub-proxy/package-lock.json; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's nodejs and npm for JupyterHub's proxy..."
    { apt-get install -y -qq nodejs npm >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }; }
  else
    echo "NOTE: npm not found; the course hub needs configurable-http-proxy. Install Node.js and npm, then run $0" >&2
    exit 0
  fi
fi
mkdir -p build/hub-proxy
cp classroom/hub_proxy/package.json classroom/hub_proxy/package-lock.json build/hub-proxy/
echo "Installing configurable-http-proxy into build/hub-proxy..."
npm ci --prefix build/hub-proxy --no-audit --no-fund --loglevel=error
"$bin" --version >/dev/null
