#!/usr/bin/env bash
# Debian's Chromium and its WebDriver, for the status page's browser test
# (tests/it/status_page.rs). Installs them when missing (as root, with apt);
# prints the two paths.
set -euo pipefail
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
command -v chromium
command -v chromedriver
