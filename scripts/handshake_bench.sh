#!/usr/bin/env bash
# Handshake cost per authentication method: the load generator's connect mode (HELLO →
# [CHALLENGE → AUTHENTICATE →] WELCOME → GOODBYE → close, as fast as its loops go) against the
# release router started with benches/auth-bench.toml (one principal per method), each method in
# turn, ROUNDS times over, so all methods see the same machine at nearly the same time. Prints a
# Markdown table: sessions/s and router CPU per session, median over the rounds (min–max). The
# dynamic-authenticator rows run the authenticator inside the load generator (--authenticator):
# the router's CPU includes routing its CALL and answer, the authenticator's own work does not.
#
#   scripts/handshake_bench.sh [ROUNDS] [SECONDS]   (default 2 rounds of 8 s each)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
seconds="${2:-8}"
target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/handshake-bench"
rm -rf "$out"
mkdir -p "$out"
cargo build --release -p roundhouse -p loadtest
router="$target_dir/release/roundhouse"
loadtest="$target_dir/release/loadtest"
ulimit -n "$(ulimit -Hn)"

log="$out/router.log"
"$router" --config benches/auth-bench.toml --listen 127.0.0.1:0 --log-level info --log-format json 2>"$log" &
router_pid=$!
trap 'kill "$router_pid" 2>/dev/null; wait "$router_pid" 2>/dev/null' EXIT
url=""
for _ in $(seq 100); do
  url=$(grep -o 'ws://[^"]*' "$log" | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "router did not start" >&2; exit 1; }

# name | loadtest auth flags (secrets as benches/auth-bench.toml documents them)
methods=(
  "anonymous|--auth anonymous"
  "ticket (Argon2id, m=19 MiB, t=2)|--auth ticket --authid bench-argon2 --secret benchpw"
  "ticket (PBKDF2-SHA256, 600,000 iterations)|--auth ticket --authid bench-pbkdf2 --secret benchpw"
  "wampcra (an HMAC; salted costs the router the same)|--auth wampcra --authid bench-cra --secret benchpw"
  "cryptosign (Ed25519)|--auth cryptosign --secret 4d57d97a68f555696620a6d849c0ce582568518d729eb753dc7c732de2804510"
  "wamp-scram (stored keys; the router runs no KDF)|--auth wamp-scram --authid bench-scram --secret benchpw"
  "wampcra via the dynamic authenticator|--auth wampcra --authid bench-dyn --secret benchpw --authenticator bench.authenticate"
  "ticket via the dynamic authenticator|--auth ticket --authid bench-dyn --secret benchpw --authenticator bench.authenticate"
)
for round in $(seq "$rounds"); do
  for i in "${!methods[@]}"; do
    name="${methods[$i]%%|*}"
    flags="${methods[$i]#*|}"
    echo "== round $round: $name" >&2
    # shellcheck disable=SC2086 # the flags are words
    "$loadtest" --url "$url" --router-pid "$router_pid" --json --mode connect --callers 4 \
      --warmup 1s --duration "${seconds}s" $flags 2>"$out/$round-$i.err" | grep '^{' >"$out/$round-$i.json" \
      || { echo "loadtest failed for $name" >&2; tail -3 "$out/$round-$i.err" >&2; exit 1; }
  done
done

python3 - "$out" "$rounds" "${methods[@]}" <<'PY'
import json, os, statistics, sys
out, rounds, methods = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"| method | sessions/s: median of {rounds} (min–max) | router CPU µs/session | errors |")
print("|---|---|---|---|")
for i, spec in enumerate(methods):
    name = spec.split("|")[0]
    runs = [json.loads(open(os.path.join(out, f"{r}-{i}.json")).readline()) for r in range(1, rounds + 1)]
    rate = [r["sessions_per_sec"] for r in runs]
    cpu = [r["router_cpu_us_per_session"] for r in runs if r.get("router_cpu_us_per_session") is not None]
    errors = sum(r["error_count"] for r in runs)
    cpu_text = f"{statistics.median(cpu):,.0f}" if cpu else "—"
    print(f"| {name} | {statistics.median(rate):,.0f} ({min(rate):,.0f}–{max(rate):,.0f}) | {cpu_text} | {errors} |")
PY
