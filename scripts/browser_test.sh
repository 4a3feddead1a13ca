#!/usr/bin/env bash
# The status page in a real browser (tests/browser/status_page.py): headless Chromium from Debian's
# packages, driven by Selenium (PyPI) through Debian's chromedriver, against the debug `roundhouse`
# under load from the debug `loadtest`. Saves target/browser/status-page.png.
#
#   scripts/browser_test.sh
#
# Installs what is missing: the Debian packages chromium and chromium-driver (with apt-get, as
# root; otherwise it says what to install), and Selenium into target/browser-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROUNDHOUSE_ADMIN_LISTEN="${ROUNDHOUSE_ADMIN_LISTEN:-127.0.0.1:0}"
target="${CARGO_TARGET_DIR:-target}"

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "browser test: needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)" >&2
    exit 2
  fi
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
  echo "browser test: needs python3-venv" >&2
  exit 2
fi
venv="$target/browser-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "selenium>=4.20,<5"
fi

# The same build as scripts/test.sh (tests included): the dev-dependencies change some shared
# dependencies' features, so building the binaries alone would compile the router a second time.
cargo build --workspace --all-targets
ROUNDHOUSE_BIN="${ROUNDHOUSE_BIN:-$target/debug/roundhouse}" LOADTEST_BIN="${LOADTEST_BIN:-$target/debug/loadtest}" \
  ARTIFACT_DIR="${ARTIFACT_DIR:-$target/browser}" "$venv/bin/python" tests/browser/status_page.py
