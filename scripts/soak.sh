#!/usr/bin/env bash
# The chaos soak (`loadtest --mode chaos`) against a `roundhouse` process of its own, so that the
# RSS and CPU it reports are the router's alone. Fails (exit 1) on any violation, or if the router
# process dies or does not exit cleanly on SIGTERM afterwards.
#
#   scripts/soak.sh [DURATION] [--record] [LOADTEST FLAGS...]
#
#   scripts/soak.sh                   5 minutes, release build
#   scripts/soak.sh 5m --record       the same, then rewrite the figures section of RELIABILITY.md
#   SOAK_PROFILE=debug scripts/soak.sh 30s --warmup 5s --rate 300    what scripts/test.sh runs
#
# The router gets the settings of the load generator's embedded router in chaos mode: short
# liveness timings (keepalive 1 s, idle timeout 3 s, message timeout 2 s, handshake timeout 3 s),
# RawSocket peers pinged too (rawsocket_keepalive), so frozen and hostile peers are closed well
# within the soak's grace period (10 s), and a stuck timeout (15 s) above that grace period, so a
# healthy peer made to wait on a stuck one until the router gives up on it shows as a violation.
# It runs with MIMALLOC_PURGE_DELAY=0: its allocator gives freed memory back at once, so its RSS
# tracks what it holds, not when the allocator is next used.
# Output in target/soak/ (under CARGO_TARGET_DIR when set): report.txt (the table), report.json, figures.md, router.log.
set -euo pipefail
# Routers started here serve their admin endpoints on a free port, never a fixed one.
export ROUNDHOUSE_ADMIN_LISTEN="${ROUNDHOUSE_ADMIN_LISTEN:-127.0.0.1:0}"
cd "$(dirname "$0")/.."

duration=5m
record=""
if [[ $# -gt 0 && $1 != -* ]]; then
  duration=$1
  shift
fi
if [[ ${1:-} == --record ]]; then
  record=1
  shift
fi
profile=${SOAK_PROFILE:-release}
target="${CARGO_TARGET_DIR:-target}"
out="$target/soak"
mkdir -p "$out"
rm -f "$out"/report.* "$out"/figures.md

if [[ $profile == release ]]; then
  cargo build --release -p roundhouse -p loadtest
  bin="$target/release"
else
  cargo build --workspace --all-targets   # the debug build scripts/test.sh made: no second build
  bin="$target/debug"
fi
ulimit -n "$(ulimit -Hn)"

cat >"$out/roundhouse.toml" <<'EOF'
listen = "127.0.0.1:0"
keepalive_interval_ms = 1000
rawsocket_keepalive = true
idle_timeout_ms = 3000
message_timeout_ms = 2000
handshake_timeout_ms = 3000
stuck_timeout_ms = 15000
log_level = "info"
log_format = "json"

[[realm]]
name = "realm1"
EOF

MIMALLOC_PURGE_DELAY=0 "$bin/roundhouse" --config "$out/roundhouse.toml" 2>"$out/router.log" &
router_pid=$!
stop_router() { [[ -n $router_pid ]] && kill "$router_pid" 2>/dev/null && wait "$router_pid" 2>/dev/null; router_pid=""; }
trap stop_router EXIT
url=""
for _ in $(seq 100); do
  url=$(grep -o 'ws://[^"]*' "$out/router.log" | head -1 || true)
  [[ -n $url ]] && break
  sleep 0.1
done
[[ -n $url ]] || { echo "soak: the router did not start (see $out/router.log)" >&2; exit 1; }

echo "soak: $duration of chaos against $bin/roundhouse (pid $router_pid) at $url"
status=0
"$bin/loadtest" --mode chaos --url "$url" --router-pid "$router_pid" --duration "$duration" --json "$@" \
  >"$out/report.json" 2>"$out/report.txt" || status=$?
grep -v '^\[chaos\]' "$out/report.txt" | sed -n '/^── chaos/,$p'

if ! kill -0 "$router_pid" 2>/dev/null; then
  echo "soak: FAILED: the router process died" >&2
  router_pid=""
  exit 1
fi
kill -TERM "$router_pid"
router_status=0
wait "$router_pid" || router_status=$?
router_pid=""
if [[ $router_status -ne 0 ]]; then
  echo "soak: FAILED: the router exited with status $router_status on SIGTERM" >&2
  exit 1
fi
if [[ $status -ne 0 ]]; then
  echo "soak: FAILED (loadtest exit status $status; the violations are listed above, the log is $out/report.txt)" >&2
  exit "$status"
fi

python3 - "$out/report.json" "$out/figures.md" "$profile" <<'EOF'
import json, os, platform, subprocess, sys
report = json.loads(next(line for line in open(sys.argv[1]) if line.startswith("{")))
mib = lambda b: f"{b / 1048576:.1f} MiB" if b is not None else "unknown"
n = lambda v: f"{v:,}"
free = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.rstrip()
lines = [
    f"Run of `scripts/soak.sh` ({sys.argv[3]} build): a {report['warmup_s']:.0f} s warmup round and a "
    f"{report['duration_s']:.0f} s round, {report['elapsed_s']:.0f} s in all with the wind-downs; seed "
    f"{report['seed']}; {report['settings']}. Counts cover both rounds.",
    "",
] + ([f"Hostile cases left out: {', '.join(report['skipped'])}.", ""] if report["skipped"] else []) + [
    "| | |",
    "|---|---|",
    f"| calls made by healthy callers | {n(report['calls'])} |",
    f"| answered (exactly once each) | {n(report['answered'])} |",
    f"| violations | {n(report['violation_count'])} |",
    f"| router RSS, empty, after the warmup round (start) | {mib(report['router_rss_start_bytes'])} |",
    f"| router RSS, peak | {mib(report['router_rss_peak_bytes'])} |",
    f"| router RSS, empty, at the end | {mib(report['router_rss_end_bytes'])} "
    f"(limit: start + {report['router_rss_margin_percent']:g}% + {report['router_rss_slack_bytes'] >> 20} MiB "
    f"= {mib(report['router_rss_limit_bytes'])}) |",
    f"| router CPU | {report['router_cpu_s']} s over the {report['measured_s']:.0f} s round |",
    f"| ticks published / received by the healthy subscriber | {n(report['ticks_published'])} / {n(report['ticks_received'])} |",
    f"| at the end | {report['emptiness']} |",
    "",
    "Answers by kind:",
    "",
    "| answer | count |",
    "|---|---:|",
] + [f"| {k} | {n(v)} |" for k, v in report["answers"].items()] + [
    "",
    "Cases tried:",
    "",
    "| case | count |",
    "|---|---:|",
] + [f"| {k} | {n(v)} |" for k, v in report["cases"].items()] + [
    "",
    f"Machine: `nproc` {os.cpu_count()}, kernel {platform.release()}, `free -g`:",
    "",
    "```",
    free,
    "```",
]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
EOF
echo "soak: figures in $out/figures.md"

if [[ -n $record ]]; then
  python3 - "$out/figures.md" RELIABILITY.md <<'EOF'
import re, sys
figures = open(sys.argv[1]).read()
path = sys.argv[2]
text = open(path).read()
begin, end = "<!-- soak figures: begin (scripts/soak.sh --record) -->", "<!-- soak figures: end -->"
pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
if not pattern.search(text):
    sys.exit(f"{path} has no soak figures section")
open(path, "w").write(pattern.sub(lambda _: f"{begin}\n{figures}{end}", text))
EOF
  echo "soak: RELIABILITY.md updated"
fi
