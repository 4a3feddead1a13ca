#!/usr/bin/env bash
# Third-party interop suite: autobahn-python (asyncio) clients against a
# Roundhouse router.
#
#   scripts/interop.sh [extra pytest args...]
#
# Environment:
#   ROUNDHOUSE_BIN        router binary (default: target/debug/roundhouse)
#   INTEROP_PYTHON        python used to create the venv (default: python3.11,
#                         else python3)
#   INTEROP_EXTERNAL_URL  e.g. ws://127.0.0.1:8080/ws - test a router that is
#                         already running instead of starting ROUNDHOUSE_BIN
#   INTEROP_TIMEOUT       per-await timeout in the tests, seconds (default 5)
#
# The venv lives in target/interop-venv and is reused; packages are
# (re)installed only when tests/interop/requirements.txt changes.
# Exits with pytest's status (non-zero as well if the router crashed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REQ="tests/interop/requirements.txt"
VENV="$ROOT/target/interop-venv"
ROUTER_LOG="$ROOT/target/interop-router.log"
REALM="realm1"

log() { printf 'interop: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

# --- python venv -------------------------------------------------------------
pick_python() {
  if [[ -n "${INTEROP_PYTHON:-}" ]]; then echo "$INTEROP_PYTHON"; return; fi
  local c
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1 \
      && "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
      echo "$c"; return
    fi
  done
  die "no python3 >= 3.10 found (set INTEROP_PYTHON)"
}

venv_ok() { [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }

if ! venv_ok; then
  PY="$(pick_python)"
  log "creating venv $VENV with $PY ($("$PY" --version 2>&1))"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  if ! "$PY" -m venv "$VENV"; then
    rm -rf "$VENV"
    if "$PY" -m virtualenv --version >/dev/null 2>&1; then
      "$PY" -m virtualenv -q "$VENV"
    else
      die "'$PY -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
  fi
  venv_ok || die "venv at $VENV has no working pip"
fi

STAMP="$VENV/.interop-requirements.sha256"
WANT="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  log "installing $REQ into $VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ"
  echo "$WANT" >"$STAMP"
fi

# --- router ------------------------------------------------------------------
ROUTER_PID=""

cleanup() {
  local rc=$?
  if [[ -n "$ROUTER_PID" ]] && kill -0 "$ROUTER_PID" 2>/dev/null; then
    kill -TERM "$ROUTER_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 50); do
      kill -0 "$ROUTER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$ROUTER_PID" 2>/dev/null; then
      log "router did not exit on SIGTERM within 5s; sending SIGKILL"
      kill -KILL "$ROUTER_PID" 2>/dev/null || true
    fi
    wait "$ROUTER_PID" 2>/dev/null || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  "$VENV/bin/python" - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

show_router_log() {
  if [[ -s "$ROUTER_LOG" ]]; then
    log "last lines of the router log ($ROUTER_LOG):"
    tail -n 40 "$ROUTER_LOG" >&2 || true
  fi
}

if [[ -n "${INTEROP_EXTERNAL_URL:-}" ]]; then
  URL="$INTEROP_EXTERNAL_URL"
  log "using already running router at $URL"
else
  BIN="${ROUNDHOUSE_BIN:-target/debug/roundhouse}"
  [[ -x "$BIN" ]] || die "router binary '$BIN' not found or not executable (build it, or set ROUNDHOUSE_BIN)"
  mkdir -p "$(dirname "$ROUTER_LOG")"
  : >"$ROUTER_LOG"

  started=""
  for attempt in 1 2 3; do
    PORT="$(free_port)"
    log "starting $BIN --listen 127.0.0.1:$PORT --realm $REALM --log-level warn"
    "$BIN" --listen "127.0.0.1:$PORT" --realm "$REALM" --log-level warn >>"$ROUTER_LOG" 2>&1 &
    ROUTER_PID=$!
    # wait (bounded, ~10 s) until the port accepts TCP
    for _ in $(seq 1 100); do
      if ! kill -0 "$ROUTER_PID" 2>/dev/null; then break; fi
      if port_open "$PORT"; then started=1; break; fi
      sleep 0.1
    done
    [[ -n "$started" ]] && break
    if kill -0 "$ROUTER_PID" 2>/dev/null; then
      show_router_log
      die "router did not accept TCP on 127.0.0.1:$PORT within 10s"
    fi
    rc=0; wait "$ROUTER_PID" || rc=$?
    ROUTER_PID=""
    log "router exited with status $rc before listening (attempt $attempt)"
  done
  if [[ -z "$started" ]]; then
    show_router_log
    die "router failed to start"
  fi
  URL="ws://127.0.0.1:$PORT/ws"
fi

# --- tests -------------------------------------------------------------------
export ROUNDHOUSE_URL="$URL"
export PYTHONDONTWRITEBYTECODE=1
status=0
"$VENV/bin/python" -m pytest tests/interop "$@" || status=$?

if [[ -n "$ROUTER_PID" ]] && ! kill -0 "$ROUTER_PID" 2>/dev/null; then
  rc=0; wait "$ROUTER_PID" || rc=$?
  ROUTER_PID=""
  log "router process died during the run (exit status $rc)"
  show_router_log
  [[ $status -ne 0 ]] || status=1
elif [[ $status -ne 0 ]]; then
  show_router_log
fi
exit "$status"
