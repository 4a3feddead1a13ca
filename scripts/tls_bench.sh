#!/usr/bin/env bash
# Plain vs TLS on one release router: the standard RPC run (4 callers x 4 callees, window 32, JSON,
# 16 B) and the connect run (HELLO -> WELCOME -> GOODBYE), against its ws:// and its wss://
# listener alternately (ws, wss, ws, wss, ...), each with --router-pid for the router's CPU. The
# certificate (a CA and a router certificate for 127.0.0.1) is made with openssl at run time.
# Prints a Markdown table: each figure's median over the rounds (min-max), and wss / ws.
#
#   scripts/tls_bench.sh [ROUNDS]   (default 3; about 2 minutes per round)
#   TLS_BENCH_THREADS=1 scripts/tls_bench.sh   (router worker threads; default: one per CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/tls-bench"
rm -rf "$out"
mkdir -p "$out"
cargo build --release -p roundhouse -p loadtest
router="$target_dir/release/roundhouse"
loadtest="$target_dir/release/loadtest"
ulimit -n "$(ulimit -Hn)"

# A CA, and a router certificate it signs (an end-entity certificate, as rustls requires).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$out/ca.key" -out "$out/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$out/router.key" -out "$out/router.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$out/ext.cnf"
openssl x509 -req -in "$out/router.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial -days 2 \
  -extfile "$out/ext.cnf" -out "$out/router.pem" 2>/dev/null

cat >"$out/router.toml" <<EOF
listen = "127.0.0.1:0"
log_format = "json"
worker_threads = ${TLS_BENCH_THREADS:-0}
[[realm]]
name = "realm1"
[[listener]]
listen = "127.0.0.1:0"
tls = { cert = "router.pem", key = "router.key" }
EOF

"$router" --config "$out/router.toml" 2>"$out/router.log" &
router_pid=$!
trap 'kill "$router_pid" 2>/dev/null; wait "$router_pid" 2>/dev/null' EXIT
ws="" wss=""
for _ in $(seq 100); do
  ws=$(grep -o '"ws://[^"]*' "$out/router.log" | head -1 | tr -d '"' || true)
  wss=$(grep -o '"wss://[^"]*' "$out/router.log" | head -1 | tr -d '"' || true)
  [ -n "$ws" ] && [ -n "$wss" ] && break
  sleep 0.1
done
[ -n "$wss" ] || { echo "the router did not start" >&2; cat "$out/router.log" >&2; exit 1; }

run() {
  local scheme=$1 round=$2 name=$3
  shift 3
  local url=$ws tls=()
  if [ "$scheme" = wss ]; then url=$wss tls=(--ca-file "$out/ca.pem"); fi
  echo "== round $round, $scheme: $name"
  "$loadtest" --url "$url" "${tls[@]}" --router-pid "$router_pid" --json "$@" 2>"$out/$scheme-$round-$name.err" \
    | grep '^{' >"$out/$scheme-$round-$name.json" || { echo "loadtest failed" >&2; tail -3 "$out/$scheme-$round-$name.err"; exit 1; }
}

for round in $(seq "$rounds"); do
  for scheme in ws wss; do
    run "$scheme" "$round" standard --duration 10s
    run "$scheme" "$round" connect --mode connect --duration 10s
  done
done

python3 - "$out" "$rounds" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def values(scheme, name, pick):
    vals = []
    for r in range(1, rounds + 1):
        path = os.path.join(out, f"{scheme}-{r}-{name}.json")
        for line in (open(path) if os.path.exists(path) else []):
            if line.strip():
                v = pick(json.loads(line))
                if v is not None:
                    vals.append(v)
    return vals
rows = [
    ("standard: calls/s", "standard", lambda r: r["calls_per_sec"], "{:,.0f}"),
    ("standard: router CPU µs/call", "standard", lambda r: r.get("router_cpu_us_per_call"), "{:.2f}"),
    ("standard: p50 µs", "standard", lambda r: (r.get("latency_us") or {}).get("p50"), "{:,.0f}"),
    ("standard: p99 µs", "standard", lambda r: (r.get("latency_us") or {}).get("p99"), "{:,.0f}"),
    ("standard: errors", "standard", lambda r: r["error_count"], "{:.0f}"),
    ("connect: sessions/s", "connect", lambda r: r["sessions_per_sec"], "{:,.0f}"),
    ("connect: router CPU µs/session", "connect", lambda r: r.get("router_cpu_us_per_session"), "{:.1f}"),
    ("connect: errors", "connect", lambda r: r["error_count"], "{:.0f}"),
]
print(f"| measure: median of {rounds} rounds (min–max) | ws:// | wss:// | wss ÷ ws |")
print("|---|---|---|---|")
for label, name, pick, fmt in rows:
    a, b = values("ws", name, pick), values("wss", name, pick)
    ma = statistics.median(a) if a else None
    mb = statistics.median(b) if b else None
    def show(vals, med):
        if med is None:
            return "—"
        return fmt.format(med) if len(vals) < 2 else f"{fmt.format(med)} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"
    ratio = f"{mb / ma:.2f}" if ma and mb else "—"
    print(f"| {label} | {show(a, ma)} | {show(b, mb)} | {ratio} |")
PY
