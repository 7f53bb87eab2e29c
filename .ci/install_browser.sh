#!/usr/bin/env bash
# Headless Chromium for tests/test_browser.py, from Debian's packages; a no-op when one
# is installed. Without it those tests are skipped (and say why). Call it from .ci/run
# before pytest: .ci/install_browser.sh
set -euo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
    || command -v google-chrome >/dev/null; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
