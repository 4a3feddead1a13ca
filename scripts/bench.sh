#!/usr/bin/env bash
# The standard benchmark set: criterion groups (benches/) and load-generator runs (loadtest/)
# against the release `roundhouse` as a separate process. Writes a report: a copy of BENCHMARKS.md
# whose generated section holds the figures, the commands and the machine, in
# $CARGO_TARGET_DIR/bench/BENCHMARKS.md (target/bench/ by default). About 41 minutes.
#
#   scripts/bench.sh                          everything; the report only
#   scripts/bench.sh --write                  the same, then BENCHMARKS.md itself is rewritten
#   BENCH_SKIP_CRITERION=1 scripts/bench.sh   load-generator runs only (keeps the previous criterion tables)
#
# The machine is shared and noisy: compare figures measured in the same run, as ratios.
set -euo pipefail
# Routers started here serve their admin endpoints on a free port, never a fixed one.
export ROUNDHOUSE_ADMIN_LISTEN="${ROUNDHOUSE_ADMIN_LISTEN:-127.0.0.1:0}"
cd "$(dirname "$0")/.."
write=""
case "${1:-}" in
  --write) write=1 ;;
  "") ;;
  *) echo "usage: $0 [--write]" >&2; exit 2 ;;
esac
target="${CARGO_TARGET_DIR:-target}"
out="$target/bench"
mkdir -p "$out"
rm -f "$out"/*.json

cargo build --release -p roundhouse -p loadtest
ulimit -n "$(ulimit -Hn)"

if [ -z "${BENCH_SKIP_CRITERION:-}" ]; then
  cargo bench --bench routing --bench registry --bench patterns --bench ingress --bench codec --bench end_to_end --bench fanout -- --noplot \
    2>&1 | tee "$out/criterion.log" | grep -E '^[a-z_]+/|time:' || true
fi

router_pid=""
stop_router() { [ -n "$router_pid" ] && kill "$router_pid" 2>/dev/null && wait "$router_pid" 2>/dev/null; router_pid=""; }
trap stop_router EXIT

# run NAME "ROUTER FLAGS" LOADTEST-ARGS...: one loadtest run against a fresh router process.
run() {
  local name=$1 router_flags=$2
  shift 2
  "$target/release/roundhouse" --listen 127.0.0.1:0 --log-level info --log-format json $router_flags 2>"$out/$name.router.log" &
  router_pid=$!
  local url=""
  for _ in $(seq 100); do
    url=$(grep -o 'ws://[^"]*' "$out/$name.router.log" | head -1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "router for $name did not start" >&2; exit 1; }
  echo "== $name: loadtest $* (router $router_flags)"
  "$target/release/loadtest" --url "$url" --router-pid "$router_pid" --json "$@" >"$out/$name.out" 2>"$out/$name.err" \
    || { echo "loadtest $name failed:"; tail -5 "$out/$name.err"; exit 1; }
  grep '^{' "$out/$name.out" >"$out/$name.json"
  stop_router
}

run standard "" --duration 10s
run standard-1thread "--threads 1" --duration 10s
run msgpack "--threads 1" --serializer msgpack --duration 10s
run window256 "--threads 1" --window 256 --duration 10s
run rules "--threads 1" --rule all --duration 5s
run rate "--threads 1" --rate 50000 --duration 10s
run sequential "" --callers 1 --window 1 --callees 1 --duration 10s
run connect "" --mode connect --duration 10s
run idle "" --mode idle --sessions 10000
# The dealer's load-aware rules at 4,000 calls/s: one callee of four 10x slower (1 ms against
# 10 ms per call), then the same rules with --concurrency 8; plotted by percentile.
slow_rules=roundrobin,random,queue_least_loaded,queue_least_loaded_sample
run dealer-slow "--threads 1" --rule "$slow_rules" --rate 4000 --service-time 1ms --slow-callee 1:10 --duration 5s
run dealer-slow-concurrency "--threads 1" --rule "$slow_rules" --concurrency 8 --rate 4000 --service-time 1ms --slow-callee 1:10 --duration 5s
python3 scripts/dealer_plot.py "$out/dealer-latency.svg" \
  "latency by percentile, 4 callees, callee 1 answers 10x slower (10 ms vs 1 ms)" \
  "$out/dealer-slow.json" "$out/dealer-slow-concurrency.json=+ concurrency 8"
# The same four callees with a capacity (--serial-callees: one call at a time each, so callee 1
# serves at most 100 calls/s) at 1,000 calls/s: round-robin and random overload callee 1, the
# least-loaded rules and a concurrency limit route around it. About 45 s.
capacity="--rate 1000 --service-time 1ms --slow-callee 1:10 --serial-callees --duration 5s --warmup 1s"
run dealer-capacity "--threads 1" --rule "$slow_rules" $capacity
run dealer-capacity-concurrency "--threads 1" --rule roundrobin --concurrency 2 $capacity
python3 scripts/dealer_plot.py "$out/dealer-capacity.svg" \
  "latency by percentile, 4 callees serving one call at a time, callee 1 10x slower, 1,000 calls/s" \
  "$out/dealer-capacity.json" "$out/dealer-capacity-concurrency.json=+ concurrency 2"

cp BENCHMARKS.md "$out/BENCHMARKS.md"
python3 scripts/bench_report.py "$out" "$out/BENCHMARKS.md"
if [ -n "$write" ]; then
  cp "$out/BENCHMARKS.md" BENCHMARKS.md
  # The plots the generated section shows.
  cp "$out/dealer-latency.svg" "$out/dealer-capacity.svg" docs/
  echo "BENCHMARKS.md rewritten from $out"
else
  echo "report: $out/BENCHMARKS.md (run with --write to rewrite BENCHMARKS.md)"
fi
