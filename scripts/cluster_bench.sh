#!/usr/bin/env bash
# Local against remote calls in a Roundhouse cluster, measured in one run on this machine: one
# nats-server (JetStream, loopback), a single-node router without [cluster], and two cluster nodes
# A and B, all release builds as separate processes. Each run is one loadtest against fresh
# sessions; the CPU time of every router process is read from /proc before and after, so the
# table gives router CPU per call on each node. Writes $CARGO_TARGET_DIR/bench/cluster.md (and
# .json lines) and prints the table. About 2 minutes.
#
#   scripts/cluster_bench.sh                  # 10 s per run
#   CLUSTER_BENCH_SECONDS=5 scripts/cluster_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export ROUNDHOUSE_ADMIN_LISTEN="${ROUNDHOUSE_ADMIN_LISTEN:-127.0.0.1:0}"
seconds="${CLUSTER_BENCH_SECONDS:-10}"
target="${CARGO_TARGET_DIR:-target}"
out="$target/bench/cluster"
mkdir -p "$out"
rm -f "$out"/*.json

nats_server="$(scripts/nats_server.sh)"
cargo build --release -q -p roundhouse -p loadtest
ulimit -n "$(ulimit -Hn)"
work="$(mktemp -d -t roundhouse-cluster-bench.XXXXXX)"
pids=()
cleanup() {
  # Routers first (they leave the cluster while NATS is there), nats-server last.
  for pid in "${pids[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]:1}"; do wait "$pid" 2>/dev/null || true; done
  kill -TERM "${pids[0]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

nats_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$nats_server" -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats" -l "$work/nats.log" &
pids+=($!)
nats_pid=$!
for _ in $(seq 100); do grep -q "Server is ready" "$work/nats.log" 2>/dev/null && break; sleep 0.1; done

# start NAME [cluster node id]: a router process; sets url_NAME and pid_NAME.
start() {
  local name=$1 node=${2:-}
  {
    echo 'listen = "127.0.0.1:0"'
    if [ -n "$node" ]; then
      printf '[cluster]\nnats_urls = ["nats://127.0.0.1:%s"]\ncluster_name = "bench"\nnode_id = "%s"\n' "$nats_port" "$node"
    fi
    printf '[[realm]]\nname = "realm1"\n'
  } > "$work/$name.toml"
  "$target/release/roundhouse" --config "$work/$name.toml" --log-format json 2>"$work/$name.log" &
  pids+=($!)
  eval "pid_$name=$!"
  local url=""
  for _ in $(seq 100); do
    url=$(grep -o 'ws://[^"]*' "$work/$name.log" | head -1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "router $name did not start:"; cat "$work/$name.log"; exit 1; }
  eval "url_$name=$url"
}
start single
start a a
start b b

# CPU ticks (utime + stime) of a process.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run NAME CALLER-URL CALLEE-URL LOADTEST-ARGS...
run() {
  local name=$1 caller=$2 callee=$3
  shift 3
  local before_single before_a before_b before_nats
  before_single=$(ticks "$pid_single"); before_a=$(ticks "$pid_a"); before_b=$(ticks "$pid_b"); before_nats=$(ticks "$nats_pid")
  echo "== $name: callers on $caller, callees on $callee: loadtest $*" >&2
  "$target/release/loadtest" --url "$caller" --callee-url "$callee" --json --duration "${seconds}s" "$@" \
    >"$out/$name.out" 2>"$out/$name.err" || { echo "loadtest $name failed:"; tail -5 "$out/$name.err"; exit 1; }
  python3 - "$out/$name.out" "$name" "$(getconf CLK_TCK)" \
    "$(( $(ticks "$pid_single") - before_single ))" "$(( $(ticks "$pid_a") - before_a ))" \
    "$(( $(ticks "$pid_b") - before_b ))" "$(( $(ticks "$nats_pid") - before_nats ))" >>"$out/runs.json" <<'PY'
import json, sys
path, name, hz, *deltas = sys.argv[1:]
line = next(json.loads(l) for l in open(path) if l.startswith("{"))
# Calls measured plus warmup run on the routers too; CPU is divided by every call answered.
calls = sum(line["callee_calls"]) or 1
per_call = {k: int(d) / int(hz) * 1e6 / calls for k, d in zip(["single", "a", "b", "nats"], deltas)}
print(json.dumps({"name": name, "calls_per_sec": line["calls_per_sec"], "p50": line["latency_us"]["p50"],
                  "p99": line["latency_us"]["p99"], "errors": line["error_count"], "cpu_us_per_call": per_call}))
PY
}

rm -f "$out/runs.json"
sequential=(--callers 1 --window 1 --callees 1)
run single-sequential "$url_single" "$url_single" "${sequential[@]}"
run local-sequential "$url_a" "$url_a" "${sequential[@]}"
run remote-sequential "$url_a" "$url_b" "${sequential[@]}"
run single-throughput "$url_single" "$url_single"
run local-throughput "$url_a" "$url_a"
run remote-throughput "$url_a" "$url_b"

python3 - "$out/runs.json" "$seconds" >"$out/cluster.md" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print(f"| run ({sys.argv[2]} s each) | calls/s | p50 µs | p99 µs | errors | CPU µs/call: single | node A | node B | nats-server |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in runs:
    c = r["cpu_us_per_call"]
    f = lambda v: f"{v:.1f}" if v >= 0.05 else "–"
    print(f"| {r['name']} | {r['calls_per_sec']:,.0f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['errors']} | {f(c['single'])} | {f(c['a'])} | {f(c['b'])} | {f(c['nats'])} |")
PY
cat "$out/cluster.md"
