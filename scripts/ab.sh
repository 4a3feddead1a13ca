#!/usr/bin/env bash
# Before/after: the standard load-generator runs against two router binaries, alternately, each as
# its own process with `--router-pid`, so both see the same machine at nearly the same time: each
# run goes A then B in odd rounds and B then A in even ones (ABBA), so a machine that drifts over
# the minutes favours neither. Prints a Markdown table: each figure's median over the rounds, B ÷ A
# of the medians, and the median of the per-round ratios B ÷ A (each from one A/B pair run back to
# back, the steadier figure on a noisy machine).
#
#   scripts/ab.sh OLD_ROUTER_BIN NEW_ROUTER_BIN [ROUNDS]   (default 2 rounds, ~15 minutes)
#   AB_RUNS="window256 idle" scripts/ab.sh ...            (a subset of the runs)
#   AB_FLAGS_B="--config benches/auth-on.toml" scripts/ab.sh BIN BIN   (one binary, two configs)
#
# Build the older binary from its own checkout (e.g. `git worktree add`, then
# `cargo build --release -p roundhouse`); the load generator is this checkout's release build.
set -euo pipefail
# Routers started here serve their admin endpoints on a free port, never a fixed one.
export ROUNDHOUSE_ADMIN_LISTEN="${ROUNDHOUSE_ADMIN_LISTEN:-127.0.0.1:0}"
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 OLD_ROUTER_BIN NEW_ROUTER_BIN [ROUNDS]" >&2; exit 2; }
bins=("$1" "$2")
side_flags=("${AB_FLAGS_A:-}" "${AB_FLAGS_B:-}")
rounds="${3:-2}"
target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/ab"
rm -rf "$out"
mkdir -p "$out"
cargo build --release -p loadtest
loadtest="$target_dir/release/loadtest"
ulimit -n "$(ulimit -Hn)"

router_pid=""
stop_router() { [ -n "$router_pid" ] && kill "$router_pid" 2>/dev/null && wait "$router_pid" 2>/dev/null; router_pid=""; }
trap stop_router EXIT

# run SIDE ROUND NAME "ROUTER FLAGS" LOADTEST-ARGS...
run() {
  local side=$1 round=$2 name=$3 router_flags=$4
  shift 4
  if [ -n "${AB_RUNS:-}" ] && [[ " $AB_RUNS " != *" $name "* ]]; then return; fi
  local log="$out/$side-$round-$name.router.log"
  "${bins[$side]}" --listen 127.0.0.1:0 --log-level info --log-format json ${side_flags[$side]} $router_flags 2>"$log" &
  router_pid=$!
  local url=""
  for _ in $(seq 100); do
    url=$(grep -o 'ws://[^"]*' "$log" | head -1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "router $side did not start" >&2; exit 1; }
  echo "== round $round, $([ "$side" = 0 ] && echo A || echo B): $name"
  "$loadtest" --url "$url" --router-pid "$router_pid" --json "$@" 2>"$out/$side-$round-$name.err" \
    | grep '^{' >"$out/$side-$round-$name.json" || { echo "loadtest $name failed" >&2; tail -3 "$out/$side-$round-$name.err"; exit 1; }
  stop_router
}

# both ROUND NAME "ROUTER FLAGS" LOADTEST-ARGS...: the run against A and B back to back.
both() {
  local round=$1
  shift
  if [ $((round % 2)) = 1 ]; then
    run 0 "$round" "$@"
    run 1 "$round" "$@"
  else
    run 1 "$round" "$@"
    run 0 "$round" "$@"
  fi
}

for round in $(seq "$rounds"); do
  both "$round" standard "" --duration 10s
  both "$round" standard-1thread "--threads 1" --duration 10s
  both "$round" msgpack "--threads 1" --serializer msgpack --duration 10s
  both "$round" window256 "--threads 1" --window 256 --duration 10s
  both "$round" sequential "" --callers 1 --window 1 --callees 1 --duration 10s
  both "$round" connect "" --mode connect --duration 10s
  both "$round" idle "" --mode idle --sessions 10000
done

python3 - "$out" "$rounds" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def values(side, name, pick):
    vals = []
    for r in range(1, rounds + 1):
        path = os.path.join(out, f"{side}-{r}-{name}.json")
        if os.path.exists(path):
            for line in open(path):
                if line.strip():
                    v = pick(json.loads(line))
                    if v is not None:
                        vals.append(v)
    return vals
def figures(side, name, pick):
    vals = values(side, name, pick)
    return statistics.median(vals) if vals else None
def paired(name, pick):
    ratios = []
    for r in range(1, rounds + 1):
        pair = []
        for side in (0, 1):
            path = os.path.join(out, f"{side}-{r}-{name}.json")
            v = pick(json.loads(open(path).readline())) if os.path.exists(path) else None
            pair.append(v)
        if pair[0] and pair[1] is not None:
            ratios.append(pair[1] / pair[0])
    return statistics.median(ratios) if ratios else None
rows = []
for name in ["standard", "standard-1thread", "msgpack", "window256", "sequential"]:
    rows.append((f"{name}: calls/s", name, lambda r: r["calls_per_sec"], "{:,.0f}"))
    rows.append((f"{name}: router CPU µs/call", name, lambda r: r.get("router_cpu_us_per_call"), "{:.2f}"))
    rows.append((f"{name}: router ÷ load generator CPU per call", name,
                 lambda r: r["router_cpu_us_per_call"] / r["loader_cpu_us_per_call"]
                 if r.get("router_cpu_us_per_call") and r.get("loader_cpu_us_per_call") else None, "{:.2f}"))
    rows.append((f"{name}: p50 µs", name, lambda r: (r.get("latency_us") or {}).get("p50"), "{:,.1f}"))
    rows.append((f"{name}: p99 µs", name, lambda r: (r.get("latency_us") or {}).get("p99"), "{:,.1f}"))
    rows.append((f"{name}: errors", name, lambda r: r["error_count"], "{:.0f}"))
rows.append(("connect: sessions/s", "connect", lambda r: r["sessions_per_sec"], "{:,.0f}"))
rows.append(("connect: router CPU µs/session", "connect", lambda r: r.get("router_cpu_us_per_session"), "{:.1f}"))
rows.append(("idle: KiB per session", "idle", lambda r: (r.get("router_rss_per_session_bytes") or 0) / 1024, "{:.1f}"))
print(f"| measure: median of {rounds} rounds (min–max) | before (A) | after (B) | B ÷ A (medians) | B ÷ A (median of pairs) |")
print("|---|---|---|---|---|")
for label, name, pick, fmt in rows:
    va, vb = values(0, name, pick), values(1, name, pick)
    if not va and not vb:
        continue
    a, b = figures(0, name, pick), figures(1, name, pick)
    ratio = f"{b / a:.2f}" if a and b else "—"
    pr = paired(name, pick)
    pair_ratio = f"{pr:.3f}" if pr is not None else "—"
    def show(vals, med):
        if med is None:
            return "—"
        if len(vals) < 2:
            return fmt.format(med)
        return f"{fmt.format(med)} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"
    print(f"| {label} | {show(va, a)} | {show(vb, b)} | {ratio} | {pair_ratio} |")
PY
