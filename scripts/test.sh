#!/usr/bin/env bash
# The whole test suite: unit and loopback integration tests of every crate, then the interop
# suite with third-party WAMP clients (autobahn-python) against the real `roundhouse` binary.
# Needs: cargo, python3 with pip and venv (the interop script installs its PyPI packages itself).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --all-targets
cargo test --workspace
# The races between everything that can end a call, model-checked with shuttle.
cargo test -p roundhouse --features shuttle --lib shuttle

if [ -x scripts/interop.sh ]; then
  ROUNDHOUSE_BIN=target/debug/roundhouse scripts/interop.sh
fi
