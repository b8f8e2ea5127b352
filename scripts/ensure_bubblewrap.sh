#!/usr/bin/env bash
# Make sure Debian's bubblewrap (bwrap) is present: the sandbox that autograding runs student
# notebooks in (classroom/sandbox.py). Installs it with apt-get when we are root; otherwise says how.
set -u
if command -v bwrap >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's bubblewrap for sandboxed grading..."
  { apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }; } && exit 0
  echo "apt-get install bubblewrap failed." >&2
  exit 1
fi
echo "NOTE: bubblewrap (bwrap) not found; grading will refuse to run student code unsandboxed." \
     "Install it with: sudo apt-get install -y bubblewrap" >&2
exit 0
