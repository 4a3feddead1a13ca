#!/usr/bin/env bash
# Third-party interop suite: autobahn-python (asyncio, pytest) and
# Autobahn|JS (Node, node --test) clients against one Roundhouse router.
#
#   scripts/interop.sh [extra pytest args...]
#
# Environment:
#   ROUNDHOUSE_BIN        router binary (default: $CARGO_TARGET_DIR/debug/roundhouse,
#                         CARGO_TARGET_DIR defaulting to target)
#   INTEROP_SUITES        which suites to run, space separated (default
#                         "python js")
#   INTEROP_PYTHON        python used to create the venv (default: python3.11,
#                         else python3)
#   INTEROP_JS_ARGS       extra args for `node --test` (e.g.
#                         --test-name-pattern=roundrobin)
#   INTEROP_EXTERNAL_URL  e.g. ws://127.0.0.1:8080/ws - test a router that is
#                         already running instead of starting ROUNDHOUSE_BIN
#   INTEROP_TIMEOUT       per-await timeout in the tests, seconds (default 5)
#
# The venv lives in target/interop-venv (under CARGO_TARGET_DIR when set) and is reused; packages are
# (re)installed only when tests/interop/requirements.txt changes. The JS
# suite's node_modules (tests/interop/js/node_modules) is (re)installed with
# `npm ci` only when it is missing or package.json/package-lock.json changed.
# Node.js >= 20 and npm are required for the JS suite; a missing `node` is an
# error, not a skip.
# Both suites run against the same router; each prints its own summary, then a
# combined one. Exits non-zero if either suite fails (or the router crashed).
set -euo pipefail
# Routers started here serve their admin endpoints on a free port, never a fixed one.
export ROUNDHOUSE_ADMIN_LISTEN="${ROUNDHOUSE_ADMIN_LISTEN:-127.0.0.1:0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REQ="tests/interop/requirements.txt"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$TARGET_DIR/interop-venv"
JS_DIR="$ROOT/tests/interop/js"
ROUTER_LOG="$TARGET_DIR/interop-router.log"
PY_LOG="$TARGET_DIR/interop-python.log"
JS_LOG="$TARGET_DIR/interop-js.log"
REALM="realm1"

log() { printf 'interop: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

RUN_PY=""
RUN_JS=""
for suite in ${INTEROP_SUITES:-python js}; do
  case "$suite" in
    python|py) RUN_PY=1 ;;
    js|node) RUN_JS=1 ;;
    *) die "unknown suite '$suite' in INTEROP_SUITES (use: python js)" ;;
  esac
done
[[ -n "$RUN_PY$RUN_JS" ]] || die "INTEROP_SUITES selects no suite"

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

# --- node modules for the Autobahn|JS suite ----------------------------------
if [[ -n "$RUN_JS" ]]; then
  command -v node >/dev/null 2>&1 \
    || die "node not found: the Autobahn|JS suite needs Node.js >= 20 and npm on PATH (apt-get install nodejs npm)"
  NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
  [[ "$NODE_MAJOR" -ge 20 ]] || die "node $(node --version) is too old: the Autobahn|JS suite needs Node.js >= 20"
  command -v npm >/dev/null 2>&1 || die "npm not found: needed to install tests/interop/js/node_modules"

  JS_STAMP="$JS_DIR/node_modules/.interop-install.sha256"
  JS_WANT="$(cat "$JS_DIR/package.json" "$JS_DIR/package-lock.json" 2>/dev/null | sha256sum | cut -d' ' -f1)"
  if [[ ! -d "$JS_DIR/node_modules" || ! -f "$JS_STAMP" || "$(cat "$JS_STAMP")" != "$JS_WANT" ]]; then
    # --ignore-scripts: the only install scripts in the tree are the optional
    # native ws accelerators (bufferutil, utf-8-validate), which ship prebuilt
    # binaries and which ws does without anyway
    if [[ -f "$JS_DIR/package-lock.json" ]]; then
      log "installing $JS_DIR/node_modules (npm ci)"
      (cd "$JS_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
    else
      log "installing $JS_DIR/node_modules (npm install: no package-lock.json)"
      (cd "$JS_DIR" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
    fi
    echo "$JS_WANT" >"$JS_STAMP"
  fi
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
  BIN="${ROUNDHOUSE_BIN:-$TARGET_DIR/debug/roundhouse}"
  [[ -x "$BIN" ]] || die "router binary '$BIN' not found or not executable (build it, or set ROUNDHOUSE_BIN)"
  # test_cluster.py starts a cluster of its own from this binary and nats-server.
  export ROUNDHOUSE_BIN="$BIN"
  NATS_SERVER_BIN="$(scripts/nats_server.sh)"
  export NATS_SERVER_BIN
  mkdir -p "$(dirname "$ROUTER_LOG")"
  : >"$ROUTER_LOG"

  started=""
  for attempt in 1 2 3; do
    PORT="$(free_port)"
    # router.toml declares the realms: $REALM, and "auth" for the authentication tests.
    log "starting $BIN --config tests/interop/router.toml --listen 127.0.0.1:$PORT"
    "$BIN" --config tests/interop/router.toml --listen "127.0.0.1:$PORT" >>"$ROUTER_LOG" 2>&1 &
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

router_alive() {
  [[ -z "$ROUTER_PID" ]] || kill -0 "$ROUTER_PID" 2>/dev/null
}

strip_ansi() { sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g; s/\r$//'; }

py_status=skipped
py_summary="not run"
py_passed=0; py_failed=0
if [[ -n "$RUN_PY" ]]; then
  log "python suite (autobahn-python, pytest) against $URL"
  py_color=(); [[ -t 1 ]] && py_color=(--color=yes)
  py_status=0
  "$VENV/bin/python" -m pytest "${py_color[@]}" tests/interop "$@" 2>&1 | tee "$PY_LOG" || py_status=${PIPESTATUS[0]}
  # pytest's closing line, e.g. "==== 2 failed, 280 passed in 41.20s ====" (or
  # without the "=" under -q)
  py_summary="$(strip_ansi <"$PY_LOG" \
    | grep -E '^=* ?([0-9]+ [a-z]+(, )?|no tests ran)+.* in [0-9.]+s' \
    | tail -n 1 | sed -E 's/^=+ //; s/ =+$//' || true)"
  [[ -n "$py_summary" ]] || py_summary="no pytest summary line (see $PY_LOG)"
  py_passed="$(grep -oE '[0-9]+ passed' <<<"$py_summary" | grep -oE '[0-9]+' || echo 0)"
  py_failed=$(( $(grep -oE '[0-9]+ (failed|errors?)' <<<"$py_summary" | grep -oE '[0-9]+' | paste -sd+ - || true) + 0 ))
fi

js_status=skipped
js_summary="not run"
js_passed=0; js_failed=0
if [[ -n "$RUN_JS" ]]; then
  if ! router_alive; then
    log "router is gone; not starting the Autobahn|JS suite"
    js_status=1
    js_summary="not run: router died during the python suite"
  else
    log "Autobahn|JS suite (node --test) against $URL"
    js_env=(); [[ -t 1 ]] && js_env=(FORCE_COLOR=1)
    # --test-force-exit (node >= 20.14): a leaked socket can't hang the run
    js_flags=(--test --test-reporter=spec)
    node --test-force-exit -e 0 >/dev/null 2>&1 && js_flags+=(--test-force-exit)
    js_status=0
    # shellcheck disable=SC2086  # INTEROP_JS_ARGS is split on purpose
    (cd "$JS_DIR" && env "${js_env[@]}" node "${js_flags[@]}" ${INTEROP_JS_ARGS:-}) 2>&1 \
      | tee "$JS_LOG" || js_status=${PIPESTATUS[0]}
    # node's closing lines: "ℹ tests 102", "ℹ pass 102", "ℹ fail 0", "ℹ cancelled 0", ...
    js_count() { strip_ansi <"$JS_LOG" | grep -E "^[^ ]+ $1 [0-9]+$" | tail -n 1 | grep -oE '[0-9]+$' || echo 0; }
    js_passed="$(js_count pass)"
    js_failed=$(( $(js_count fail) + $(js_count cancelled) ))
    if strip_ansi <"$JS_LOG" | grep -qE '^[^ ]+ tests [0-9]+$'; then
      js_summary="$(js_count tests) tests: $js_passed passed, $(js_count fail) failed, $(js_count cancelled) cancelled, $(js_count skipped) skipped"
    else
      js_summary="no node --test summary (see $JS_LOG)"
    fi
  fi
fi

# the first failing suite's exit status (pytest's own codes survive, e.g. 5
# for "no tests collected"), else 0
status=0
for st in "$py_status" "$js_status"; do
  if [[ "$st" != skipped && "$st" -ne 0 && $status -eq 0 ]]; then status=$st; fi
done

if [[ -n "$ROUTER_PID" ]] && ! kill -0 "$ROUTER_PID" 2>/dev/null; then
  rc=0; wait "$ROUTER_PID" || rc=$?
  ROUTER_PID=""
  log "router process died during the run (exit status $rc)"
  show_router_log
  [[ $status -ne 0 ]] || status=1
elif [[ $status -ne 0 ]]; then
  show_router_log
fi

echo
echo "interop summary (router $URL):"
echo "  autobahn-python (pytest):   $py_summary  [exit $py_status]"
echo "  Autobahn|JS (node --test):  $js_summary  [exit $js_status]"
echo "interop: $(( py_passed + js_passed )) passed, $(( py_failed + js_failed )) failed"
exit "$status"
