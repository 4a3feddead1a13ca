#!/usr/bin/env bash
# Try a Roundhouse cluster on one machine: one nats-server with JetStream (loopback, a temporary
# store) and three Roundhouse nodes joined to it, each serving realm1 on its own port. Prints the
# nodes' URLs and stops everything on Ctrl-C.
#
#   scripts/cluster.sh              # nodes on ws://127.0.0.1:8081/ws, :8082, :8083
#   NODES=5 BASE_PORT=9001 NATS_PORT=4333 scripts/cluster.sh
#   CLUSTER_SECONDS=60 scripts/cluster.sh   # stop by itself after a minute
#   NATS_SERVERS=3 scripts/cluster.sh        # a three-server NATS cluster (client ports 4222-4224),
#                                            # buckets at three replicas: kill one server to watch
#                                            # the Roundhouse cluster go on
set -euo pipefail
cd "$(dirname "$0")/.."
nodes="${NODES:-3}"
base_port="${BASE_PORT:-8081}"
nats_port="${NATS_PORT:-4222}"
nats_servers="${NATS_SERVERS:-1}"
case "$nats_servers" in
  1 | 3) ;;
  *) echo "NATS_SERVERS is 1 or 3"; exit 2 ;;
esac
target="${CARGO_TARGET_DIR:-target}"

nats_server="$(scripts/nats_server.sh)"
cargo build --release -q -p roundhouse
work="$(mktemp -d -t roundhouse-cluster.XXXXXX)"
nats_pids=()
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping the cluster"
  # Nodes first (they leave the cluster gracefully), NATS last.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for pid in "${nats_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop INT TERM EXIT

# Waits (30 s at most) for a line in a log file.
wait_for() {
  for _ in $(seq 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

nats_urls=""
routes=""
for n in $(seq 0 $((nats_servers - 1))); do
  nats_urls+="${nats_urls:+, }\"nats://127.0.0.1:$((nats_port + n))\""
  routes+="${routes:+,}nats://127.0.0.1:$((nats_port + 100 + n))"
done
for n in $(seq 0 $((nats_servers - 1))); do
  args=(-a 127.0.0.1 -p "$((nats_port + n))" -js -sd "$work/nats$n" -l "$work/nats$n.log")
  if [ "$nats_servers" -gt 1 ]; then
    args+=(-n "nats$n" --cluster_name demo --cluster "nats://127.0.0.1:$((nats_port + 100 + n))" --routes "$routes")
  fi
  "$nats_server" "${args[@]}" &
  nats_pids+=($!)
done
for n in $(seq 0 $((nats_servers - 1))); do
  wait_for "$work/nats$n.log" "Server is ready" || { echo "nats-server did not start; see $work/nats$n.log"; exit 1; }
  # A NATS cluster takes JetStream requests once it elected its metadata leader.
  if [ "$nats_servers" -gt 1 ]; then
    wait_for "$work/nats$n.log" "metadata leader" || { echo "no JetStream leader; see $work/nats$n.log"; exit 1; }
  fi
done
replicated=""
if [ "$nats_servers" -gt 1 ]; then
  # Three copies of every bucket; a lease that outlasts JetStream electing a new leader.
  replicated=$'kv_replicas = 3\nlease_ms = 15000\nkv_timeout_ms = 12000'
fi

for i in $(seq 1 "$nodes"); do
  port=$((base_port + i - 1))
  cat > "$work/node$i.toml" <<TOML
listen = "127.0.0.1:$port"

[admin]
enabled = true
listen = "127.0.0.1:$((port + 1000))"

[cluster]
nats_urls = [$nats_urls]
cluster_name = "demo"
node_id = "node$i"
$replicated

[[realm]]
name = "realm1"
TOML
  "$target/release/roundhouse" --config "$work/node$i.toml" > "$work/node$i.log" 2>&1 &
  pids+=($!)
done
for i in $(seq 1 "$nodes"); do
  wait_for "$work/node$i.log" "router listening" || { echo "node$i did not start:"; cat "$work/node$i.log"; exit 1; }
done

for n in $(seq 0 $((nats_servers - 1))); do
  echo "nats-server: nats://127.0.0.1:$((nats_port + n)) (JetStream, store in $work/nats$n, pid ${nats_pids[$n]})"
done
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
