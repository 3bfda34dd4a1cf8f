#!/usr/bin/env bash
# Headless Chromium from Debian, for scripts/report-screenshots.py (README images of the reports).
# Needs root (apt-get); nothing else in the project uses a browser.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "chromium already installed: $(command -v chromium)"
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
command -v chromium
