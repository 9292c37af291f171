#!/usr/bin/env bash
# Give the viewer's tests a real browser: Debian's chromium and chromium-driver (headless).
# Idempotent: installs only what is missing. Needs root (apt-get). Used by tests/run-all.sh.
set -euo pipefail
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
echo "browser: $(/usr/bin/chromium --version 2>/dev/null | head -1)"
