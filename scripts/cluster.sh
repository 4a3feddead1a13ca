#!/usr/bin/env bash
# Try a Roundhouse cluster on one machine: one nats-server with JetStream (loopback, a temporary
# store) and three Roundhouse nodes joined to it, each serving realm1 on its own port. Prints the
# nodes' URLs and stops everything on Ctrl-C.
#
#   scripts/cluster.sh              # nodes on ws://127.0.0.1:8081/ws, :8082, :8083
#   NODES=5 BASE_PORT=9001 NATS_PORT=4333 scripts/cluster.sh
#   CLUSTER_SECONDS=60 scripts/cluster.sh   # stop by itself after a minute
set -euo pipefail
cd "$(dirname "$0")/.."
nodes="${NODES:-3}"
base_port="${BASE_PORT:-8081}"
nats_port="${NATS_PORT:-4222}"
target="${CARGO_TARGET_DIR:-target}"

nats_server="$(scripts/nats_server.sh)"
cargo build --release -q -p roundhouse
work="$(mktemp -d -t roundhouse-cluster.XXXXXX)"
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping the cluster"
  # Nodes first (they leave the cluster gracefully), NATS last.
  for pid in "${pids[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]:1}"; do wait "$pid" 2>/dev/null || true; done
  kill -TERM "${pids[0]}" 2>/dev/null || true
  wait "${pids[0]}" 2>/dev/null || true
  rm -rf "$work"
}
trap stop INT TERM EXIT

"$nats_server" -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats" -l "$work/nats.log" &
pids+=($!)
for _ in $(seq 100); do
  grep -q "Server is ready" "$work/nats.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "Server is ready" "$work/nats.log" || { echo "nats-server did not start; see $work/nats.log"; exit 1; }

for i in $(seq 1 "$nodes"); do
  port=$((base_port + i - 1))
  cat > "$work/node$i.toml" <<TOML
listen = "127.0.0.1:$port"

[admin]
enabled = true
listen = "127.0.0.1:$((port + 1000))"

[cluster]
nats_urls = ["nats://127.0.0.1:$nats_port"]
cluster_name = "demo"
node_id = "node$i"

[[realm]]
name = "realm1"
TOML
  "$target/release/roundhouse" --config "$work/node$i.toml" > "$work/node$i.log" 2>&1 &
  pids+=($!)
done
for i in $(seq 1 "$nodes"); do
  for _ in $(seq 100); do
    grep -q "router listening" "$work/node$i.log" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "router listening" "$work/node$i.log" || { echo "node$i did not start:"; cat "$work/node$i.log"; exit 1; }
done

echo "nats-server: nats://127.0.0.1:$nats_port (JetStream, store in $work/nats)"
for i in $(seq 1 "$nodes"); do
  port=$((base_port + i - 1))
  echo "node$i: ws://127.0.0.1:$port/ws (realm1; RawSocket on the same port; status page http://127.0.0.1:$((port + 1000))/)"
done
echo "logs: $work/*.log. Ctrl-C stops the cluster."
if [ -n "${CLUSTER_SECONDS:-}" ]; then
  sleep "$CLUSTER_SECONDS"
else
  wait -n "${pids[@]}"
  echo "a process of the cluster exited; see the logs above"
fi
