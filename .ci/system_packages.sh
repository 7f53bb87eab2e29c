#!/usr/bin/env bash
# Debian packages some tests use, installed when missing: headless Chromium
# (tests/test_browser.py opens report.html and audit.html in it) and rsync
# (tests/test_cluster_yaml.py runs the exact rsync that `ray up` runs). Without them
# those tests are skipped and say why; .ci/run calls this before the test command.
set -euo pipefail
need=()
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
command -v rsync >/dev/null || need+=(rsync)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
