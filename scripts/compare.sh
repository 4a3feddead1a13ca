#!/usr/bin/env bash
# Crossbar.io against Roundhouse, driven by the same load generator (the release `loadtest`).
#
#   scripts/compare.sh [extra loadtest flags...]
#   e.g. scripts/compare.sh --serializer msgpack --duration 20s
#
# Installs Crossbar.io 26.10.1 (pinned) from PyPI into target/crossbar-venv (once), starts a Crossbar node (one router
# worker, realm1 open to anonymous, WebSocket on 127.0.0.1:<free port>/ws, json and msgpack) and the
# release `roundhouse` binary on another free port, each as a separate process, then runs every
# scenario against both with --router-pid set to the router process (Crossbar's router worker, a
# child of its controller), and prints both result sets and the ratios side by side.
#
# Scenarios (COMPARE_SCENARIOS, space-separated; default "throughput sequential connect idle"):
#   throughput   loadtest defaults: 4 callers x 32 calls in flight, 4 callees, roundrobin
#   sequential   one call at a time: --callers 1 --window 1 --callees 1
#   connect      session churn: --mode connect (HELLO->WELCOME->GOODBYE->close, 4 loops)
#   idle         memory: --mode idle --sessions $COMPARE_IDLE_SESSIONS (router RSS per idle session)
# The extra flags are appended to every run (e.g. --serializer msgpack, --duration 20s); pass flags
# that suit every chosen scenario (e.g. COMPARE_SCENARIOS=throughput scripts/compare.sh --rule all).
#
# Environment:
#   COMPARE_PYTHON         python for the venv (default: python3.11, else python3)
#   COMPARE_CROSSBAR_VERSION  the Crossbar.io release to install (default 26.10.1)
#   COMPARE_RUN_TIMEOUT    seconds one loadtest run may take (default 300)
#   COMPARE_IDLE_SESSIONS  sessions the idle scenario opens (default 5000)
#   CARGO_TARGET_DIR       where the release binaries are built (default: target)
# Exits non-zero if a run fails against either router. All processes it starts are stopped on exit.
set -euo pipefail
# Routers started here serve their admin endpoints on a free port, never a fixed one.
export ROUNDHOUSE_ADMIN_LISTEN="${ROUNDHOUSE_ADMIN_LISTEN:-127.0.0.1:0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$TARGET_DIR/crossbar-venv"
SCENARIOS="${COMPARE_SCENARIOS:-throughput sequential connect idle}"
RUN_TIMEOUT="${COMPARE_RUN_TIMEOUT:-300}"
IDLE_SESSIONS="${COMPARE_IDLE_SESSIONS:-5000}"
EXTRA=("$@")

log() { printf 'compare: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

WORK="$(mktemp -d -t roundhouse-compare.XXXXXX)"
CROSSBAR_PID=""
ROUNDHOUSE_PID=""
LOADTEST_PID=""

stop_routers() {
  if [[ -n "$ROUNDHOUSE_PID" ]]; then
    kill -TERM "$ROUNDHOUSE_PID" 2>/dev/null || true
    wait "$ROUNDHOUSE_PID" 2>/dev/null || true
    ROUNDHOUSE_PID=""
  fi
  if [[ -n "$CROSSBAR_PID" ]]; then
    # The node runs in a process group of its own (setsid): stop the controller and its workers.
    kill -TERM -- "-$CROSSBAR_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 -- "-$CROSSBAR_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL -- "-$CROSSBAR_PID" 2>/dev/null || true
    wait "$CROSSBAR_PID" 2>/dev/null || true
    CROSSBAR_PID=""
  fi
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$LOADTEST_PID" ]]; then
    # `timeout` passes the signal on to loadtest.
    kill -TERM "$LOADTEST_PID" 2>/dev/null || true
    wait "$LOADTEST_PID" 2>/dev/null || true
  fi
  stop_routers
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- binaries ------------------------------------------------------------------
log "building release loadtest and roundhouse"
cargo build --release -q -p loadtest -p roundhouse
LOADTEST="$TARGET_DIR/release/loadtest"
ROUNDHOUSE="$TARGET_DIR/release/roundhouse"
[[ -x "$LOADTEST" && -x "$ROUNDHOUSE" ]] || die "release binaries not found in $TARGET_DIR/release"

# --- Crossbar.io venv ----------------------------------------------------------
pick_python() {
  if [[ -n "${COMPARE_PYTHON:-}" ]]; then echo "$COMPARE_PYTHON"; return; fi
  local c
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1; then echo "$c"; return; fi
  done
  die "no python3 found (set COMPARE_PYTHON)"
}

# The Crossbar.io release compared against (the figures in BENCHMARKS.md were measured with it);
# COMPARE_CROSSBAR_VERSION picks another.
CROSSBAR_VERSION="${COMPARE_CROSSBAR_VERSION:-26.10.1}"
crossbar_ok() {
  [[ -x "$VENV/bin/crossbar" ]] && timeout 120 "$VENV/bin/crossbar" version >/dev/null 2>&1 \
    && [[ "$("$VENV/bin/python" -m pip show crossbar 2>/dev/null | sed -n 's/^Version: //p')" == "$CROSSBAR_VERSION" ]]
}

if ! crossbar_ok; then
  PY="$(pick_python)"
  log "installing Crossbar.io into $VENV with $PY ($("$PY" --version 2>&1)); this takes a few minutes"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV" || die "'$PY -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
  timeout 1200 "$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip wheel
  # numpy 2 breaks Crossbar's UBJSON serializer module, which it imports at start.
  timeout 1200 "$VENV/bin/python" -m pip install --disable-pip-version-check -q "crossbar==$CROSSBAR_VERSION" 'numpy<2'
  crossbar_ok || die "Crossbar.io installed but 'crossbar version' fails"
fi
log "Crossbar.io $CROSSBAR_VERSION (pinned; COMPARE_CROSSBAR_VERSION overrides)"

# --- routers -------------------------------------------------------------------
# Both routers inherit this limit; the idle scenario needs a descriptor per session.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
free_port() {
  "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # port seconds what
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      tail -20 "$WORK/crossbar.log" "$WORK/roundhouse.log" >&2 2>/dev/null || true
      die "$3 did not open port $1 within $2 s"
    fi
    sleep 0.2
  done
}

# Starts a fresh Crossbar node and a fresh roundhouse, each on a free port.
start_routers() {
  CB_PORT="$(free_port)"
  RH_PORT="$(free_port)"
  while [[ "$RH_PORT" == "$CB_PORT" ]]; do RH_PORT="$(free_port)"; done

  mkdir -p "$WORK/.crossbar"
  cat >"$WORK/.crossbar/config.json" <<EOF
  {
    "version": 2,
    "controller": {},
    "workers": [
      {
        "type": "router",
        "realms": [
          {
            "name": "realm1",
            "roles": [
              {
                "name": "anonymous",
                "permissions": [
                  {
                    "uri": "",
                    "match": "prefix",
                    "allow": {"call": true, "register": true, "publish": true, "subscribe": true},
                    "disclose": {"caller": false, "publisher": false},
                    "cache": true
                  }
                ]
              }
            ]
          }
        ],
        "transports": [
          {
            "type": "web",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": $CB_PORT},
            "paths": {
              "ws": {"type": "websocket", "serializers": ["json", "msgpack"]}
            }
          }
        ]
      }
    ]
  }
EOF

  log "starting Crossbar.io on 127.0.0.1:$CB_PORT (log: crossbar.log in $WORK)"
  (cd "$WORK" && exec setsid "$VENV/bin/crossbar" start --cbdir "$WORK/.crossbar" --loglevel warn) \
    >"$WORK/crossbar.log" 2>&1 &
  CROSSBAR_PID=$!
  wait_for_port "$CB_PORT" 90 "Crossbar.io"
  CB_WORKER="$(pgrep -s "$CROSSBAR_PID" -f 'crossbar-worker \[crossbar.worker.router' | head -1 || true)"
  [[ -n "$CB_WORKER" ]] || die "cannot find Crossbar's router worker process"
  log "Crossbar.io router worker: pid $CB_WORKER"

  log "starting roundhouse on 127.0.0.1:$RH_PORT"
  "$ROUNDHOUSE" --listen "127.0.0.1:$RH_PORT" --log-level warn >"$WORK/roundhouse.log" 2>&1 &
  ROUNDHOUSE_PID=$!
  wait_for_port "$RH_PORT" 30 "roundhouse"
}

# --- runs ----------------------------------------------------------------------
scenario_flags() {
  case "$1" in
    throughput) ;;
    sequential) echo "--callers 1 --window 1 --callees 1" ;;
    connect) echo "--mode connect" ;;
    idle) echo "--mode idle --sessions $IDLE_SESSIONS" ;;
    *) die "unknown scenario '$1' (throughput, sequential, connect, idle)" ;;
  esac
}

FAILED=0
for scenario in $SCENARIOS; do
  read -r -a flags <<<"$(scenario_flags "$scenario")"
  # Fresh routers for every scenario, so none inherits another's memory or state.
  start_routers
  for router in crossbar roundhouse; do
    if [[ "$router" == crossbar ]]; then
      url="ws://127.0.0.1:$CB_PORT/ws" pid="$CB_WORKER"
    else
      url="ws://127.0.0.1:$RH_PORT/ws" pid="$ROUNDHOUSE_PID"
    fi
    kill -0 "$pid" 2>/dev/null || die "$router (pid $pid) is no longer running"
    log "scenario $scenario: $router"
    # In the background and waited for, so that a signal to this script is handled at once.
    timeout --signal=INT "$RUN_TIMEOUT" "$LOADTEST" --url "$url" --router-pid "$pid" --json \
      "${flags[@]}" "${EXTRA[@]}" >"$WORK/$scenario.$router.jsonl" 2>"$WORK/run.err" &
    LOADTEST_PID=$!
    status=0
    wait "$LOADTEST_PID" || status=$?
    LOADTEST_PID=""
    # The tables (the progress lines left out).
    grep -v '^\[' "$WORK/run.err" >&2 || true
    if [[ "$status" != 0 ]]; then
      log "scenario $scenario: loadtest against $router FAILED (exit $status)"
      FAILED=1
    fi
  done
  stop_routers
done

# --- side by side --------------------------------------------------------------
CROSSBAR_VERSION="$CROSSBAR_VERSION" "$VENV/bin/python" - "$WORK" $SCENARIOS <<'PY'
import json, os, sys

work, scenarios = sys.argv[1], sys.argv[2:]

def load(scenario, router):
    path = os.path.join(work, f"{scenario}.{router}.jsonl")
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []

def num(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"

def ratio(rh, cb, higher_is_better):
    if not rh or not cb:
        return "-"
    r = rh / cb
    if higher_is_better:
        return f"{r:,.2f}x" + (f"  ({r:,.1f}x more)" if r >= 1 else f"  ({1 / r:,.1f}x fewer)")
    return f"{r:,.3f}x" + (f"  ({1 / r:,.1f}x lower)" if r <= 1 else f"  ({r:,.1f}x higher)")

def table(title, rows):
    print()
    print(f"== {title}")
    print(f"   {'':24} {'crossbar':>14} {'roundhouse':>14}   ratio")
    for name, c, r, better, digits in rows:
        shown = "" if better is None else ratio(r, c, better)
        print(f"   {name:24} {num(c, digits):>14} {num(r, digits):>14}   {shown}")

def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")

print()
print(f"Crossbar.io {os.environ['CROSSBAR_VERSION']} vs Roundhouse, same loadtest; ratio = roundhouse / crossbar")
for scenario in scenarios:
    for cb, rh in zip(load(scenario, "crossbar"), load(scenario, "roundhouse")):
        if rh["mode"] == "rpc":
            lat = lambda r, k: (r.get("latency_us") or {}).get(k)
            title = (f"{scenario}: {plural(rh['callers'], 'caller')} x window {rh['window']}, "
                     f"{plural(rh['callees'], 'callee')}, rule {rh['rule']}, {rh['serializer']}, "
                     f"{rh['payload_bytes']} B")
            if rh.get("rate_target"):
                title += f", {rh['rate_target']:,.0f} calls/s offered"
            rows = [
                ("calls/s", cb["calls_per_sec"], rh["calls_per_sec"], True, 0),
                ("latency p50 µs", lat(cb, "p50"), lat(rh, "p50"), False, 1),
                ("latency p99 µs", lat(cb, "p99"), lat(rh, "p99"), False, 1),
                ("latency max µs", lat(cb, "max"), lat(rh, "max"), False, 1),
                ("router CPU µs/call", cb["router_cpu_us_per_call"], rh["router_cpu_us_per_call"], False, 2),
                ("loader CPU µs/call", cb["loader_cpu_us_per_call"], rh["loader_cpu_us_per_call"], False, 2),
                ("errors", cb["error_count"], rh["error_count"], None, 0),
            ]
        elif rh["mode"] == "connect":
            lat = lambda r, h, k: (r.get(h) or {}).get(k)
            title = f"{scenario}: {plural(rh['loops'], 'loop')} of HELLO->WELCOME->GOODBYE->close, {rh['serializer']}"
            rows = [
                ("sessions/s", cb["sessions_per_sec"], rh["sessions_per_sec"], True, 0),
                ("join p50 µs", lat(cb, "join_latency_us", "p50"), lat(rh, "join_latency_us", "p50"), False, 1),
                ("join p99 µs", lat(cb, "join_latency_us", "p99"), lat(rh, "join_latency_us", "p99"), False, 1),
                ("cycle p50 µs", lat(cb, "cycle_latency_us", "p50"), lat(rh, "cycle_latency_us", "p50"), False, 1),
                ("router CPU µs/session", cb["router_cpu_us_per_session"], rh["router_cpu_us_per_session"], False, 1),
                ("loader CPU µs/session", cb["loader_cpu_us_per_session"], rh["loader_cpu_us_per_session"], False, 1),
                ("errors", cb["error_count"], rh["error_count"], None, 0),
            ]
        else:
            kib = lambda r: None if r["router_rss_per_session_bytes"] is None else r["router_rss_per_session_bytes"] / 1024
            rate = lambda r: r["opened"] / r["open_seconds"] if r["open_seconds"] else None
            title = f"{scenario}: {rh['sessions']:,} idle joined sessions"
            rows = [
                ("router RSS KiB/session", kib(cb), kib(rh), False, 1),
                ("opened", cb["opened"], rh["opened"], None, 0),
                ("opened/s", rate(cb), rate(rh), True, 0),
                ("errors", cb["error_count"], rh["error_count"], None, 0),
            ]
        table(title, rows)
        for name, run in (("crossbar", cb), ("roundhouse", rh)):
            if (run.get("other_cpus") or 0) >= 0.1:
                print(f"   note: other processes used {run['other_cpus']:.2f} CPUs during the {name} run: not reliable")
PY

if [[ "$FAILED" != 0 ]]; then
  log "some runs failed (see above)"
  exit 1
fi
