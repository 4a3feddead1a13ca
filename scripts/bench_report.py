#!/usr/bin/env python3
"""Rewrites the generated section of BENCHMARKS.md from the results scripts/bench.sh left in
target/bench: criterion estimates (target/criterion/**/new/estimates.json) and the load
generator's JSON lines. Everything between the two markers is replaced; the rest of the file
(analysis, targets, history) is kept."""
import datetime
import json
import os
import platform
import subprocess
import sys

BEGIN = "<!-- bench.sh: generated section begins -->"
END = "<!-- bench.sh: generated section ends -->"


def criterion(group):
    """(benchmark id, mean in ns) for every benchmark of a criterion group."""
    root = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion", group)
    rows = []
    for dirpath, _, files in os.walk(root):
        if "estimates.json" in files and dirpath.endswith(os.path.join("new")):
            bench_id = os.path.relpath(os.path.dirname(dirpath), root)
            with open(os.path.join(dirpath, "estimates.json")) as f:
                rows.append((bench_id, json.load(f)["mean"]["point_estimate"]))
    return sorted(rows)


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def load(out, name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def machine():
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, commit {rev}, {datetime.date.today()}"


def rpc_rows(results):
    lines = ["| run | rule | ser | callers×window | calls/s | p50 µs | p99 µs | p99.9 µs | errors | router CPU µs/call | loader CPU µs/call |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results:
        lat = r.get("latency_us") or {}
        lines.append(
            f"| {name} | {r['rule']} | {r['serializer']} | {r['callers']}×{r['window']} | {r['calls_per_sec']:,.0f} | "
            f"{lat.get('p50', 0):,.1f} | {lat.get('p99', 0):,.1f} | {lat.get('p999', 0):,.1f} | {r['error_count']} | "
            f"{r.get('router_cpu_us_per_call') or 0:.2f} | {r.get('loader_cpu_us_per_call') or 0:.2f} |")
    return lines


def dealer_rows(base, extra, extra_label):
    """One table of a slow-callee scenario: every rule of the `base` run, then the `extra` run's
    (the same load with a concurrency limit), each with p99 as a ratio of the base run's
    roundrobin and random p99 (measured in the same bench run)."""
    p99 = {r["rule"]: (r.get("latency_us") or {}).get("p99") for r in base}
    lines = ["| rule | calls/s | p50 ms | p99 ms | p99.9 ms | p99 ÷ roundrobin | p99 ÷ random | calls served by callees 1–4 |",
             "|---|---|---|---|---|---|---|---|"]

    def ratio(value, against):
        if not value or not against:
            return "–"
        r = value / against
        return f"{r:.2f}" if r >= 0.1 else f"{r:.4f} ({1 / r:,.0f}× lower)"

    for label, r in [(r["rule"], r) for r in base] + [(f"{r['rule']}, {extra_label}", r) for r in extra]:
        lat = r.get("latency_us") or {}
        served = " / ".join(f"{n:,}" for n in r.get("callee_calls") or [])
        lines.append(
            f"| {label} | {r['calls_per_sec']:,.0f} | {lat.get('p50', 0) / 1000:,.1f} | {lat.get('p99', 0) / 1000:,.1f} | "
            f"{lat.get('p999', 0) / 1000:,.1f} | {ratio(lat.get('p99'), p99.get('roundrobin'))} | "
            f"{ratio(lat.get('p99'), p99.get('random'))} | {served} |")
    return lines


def dealer_section(out):
    """The load-aware rules against round-robin and random with one callee 10x slower: without
    and with a capacity per callee, and throughput with equal callees."""
    scenarios = [
        ("Four callees answering 1 ms after a call arrives (calls overlap), callee 1 after 10 ms; "
         "4,000 calls/s (`--rate 4000 --service-time 1ms --slow-callee 1:10`)",
         "dealer-slow", "dealer-slow-concurrency", "`concurrency: 8`", "dealer-latency.svg"),
        ("The same four callees with a capacity: each serves one call at a time (`--serial-callees`), so "
         "callee 1 serves at most 100 calls/s; 1,000 calls/s "
         "(`--rate 1000 --service-time 1ms --slow-callee 1:10 --serial-callees`)",
         "dealer-capacity", "dealer-capacity-concurrency", "`concurrency: 2`", "dealer-capacity.svg"),
    ]
    md = []
    for title, base_name, extra_name, extra_label, plot in scenarios:
        base, extra = load(out, base_name), load(out, extra_name)
        if not base:
            continue
        md += [f"{title}:", ""] + dealer_rows(base, extra, extra_label) + [""]
        md += [f"![latency by percentile per rule](docs/{plot}) (`docs/{plot}`, drawn by `scripts/dealer_plot.py`)", ""]
    equal = {r["rule"]: r["calls_per_sec"] for r in load(out, "rules")}
    if equal.get("roundrobin"):
        cells = ", ".join(f"{rule} {rate / equal['roundrobin']:.2f}" for rule, rate in equal.items())
        md += [f"Equal callees (the `--rule all` run above), calls/s ÷ roundrobin's: {cells}.", ""]
    if not md:
        return []
    return ["### Dealer rules with one callee 10× slower (`loadtest --threads 1` router)", ""] + md


def main():
    out, target = sys.argv[1], sys.argv[2]
    md = [BEGIN, "", f"Measured by `scripts/bench.sh` on {machine()}.", ""]

    md += ["### Load generator (router as its own process, `--router-pid` for its CPU)", ""]
    runs = [("standard (default worker count)", "standard"), ("standard, `--threads 1`", "standard-1thread"),
            ("msgpack, `--threads 1`", "msgpack"), ("window 256, `--threads 1`", "window256"),
            ("sequential", "sequential")]
    results = [(label, r) for label, name in runs for r in load(out, name)]
    results += [(f"`--rule all`: {r['rule']}", r) for r in load(out, "rules")]
    md += rpc_rows(results) + [""]
    for r in load(out, "rate"):
        lat, svc = r.get("latency_us") or {}, r.get("service_latency_us") or {}
        md += [f"Open loop at {r['rate_target']:,.0f} calls/s (`--rate`, `--threads 1`): {r['calls_per_sec']:,.0f} calls/s, "
               f"p50 {lat.get('p50', 0):,.1f} µs / p99 {lat.get('p99', 0):,.1f} µs from the intended send time "
               f"(p50 {svc.get('p50', 0):,.1f} / p99 {svc.get('p99', 0):,.1f} µs from the actual send), "
               f"{r['error_count']} errors, {r.get('unsent', 0)} calls never sent.", ""]
    for r in load(out, "connect"):
        join = r.get("join_latency_us") or {}
        md += [f"Session establishment (`--mode connect`, {r['loops']} loops): {r['sessions_per_sec']:,.0f} sessions/s, "
               f"HELLO→WELCOME p50 {join.get('p50', 0):,.1f} µs / p99 {join.get('p99', 0):,.1f} µs, "
               f"router CPU {r.get('router_cpu_us_per_session') or 0:.1f} µs per session, {r['error_count']} errors.", ""]
    for r in load(out, "idle"):
        per = (r.get("router_rss_per_session_bytes") or 0) / 1024
        md += [f"Idle sessions (`--mode idle --sessions {r['sessions']}`): {r['opened']:,} opened, router RSS "
               f"{per:.1f} KiB per idle session ({(r.get('router_rss_before_bytes') or 0) / 2**20:.1f} MiB before, "
               f"{(r.get('router_rss_open_bytes') or 0) / 2**20:.1f} MiB with them open), {r.get('dropped', 0)} dropped.", ""]

    md += dealer_section(out)

    text = open(target).read() if os.path.exists(target) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    criterion_md = ["### Criterion (`cargo bench`, mean per iteration)", ""]
    for group, title in [("route", "Routing decision (lookup + rule pick), by rule/callees"),
                         ("route_under_churn", "The same while a thread registers/unregisters on the same shard"),
                         ("register_unregister", "Register + unregister, by table size"),
                         ("codec_wamp.2.json", "JSON codec"), ("codec_wamp.2.msgpack", "MessagePack codec"),
                         ("codec_wamp.2.cbor", "CBOR codec"),
                         ("call_round_trip", "Call round trip over loopback, in-process router"),
                         ("fanout", "Broker fan-out, one event to N subscribers"),
                         ("lookup", "Finding the pattern registration of a CALL with no exact match, by kind and number of patterns (the exact lookup alongside)"),
                         ("register", "Creating and deleting a pattern registration, by kind and number of patterns"),
                         ("subscriptions", "String-prefix subscriptions matching a PUBLISH, by number of patterns"),
                         ("scan", "The previous pattern selection (a scan of every pattern), for comparison"),
                         ("repeated_keys", "Decoding a HELLO whose Details repeat one key N times"),
                         ("large_call", "Decoding and transcoding a 500 KB CALL")]:
        rows = criterion(group)
        if not rows:
            continue
        criterion_md += [f"**{title}** (`{group}`)", "", "| benchmark | mean |", "|---|---|"]
        criterion_md += [f"| {bench_id} | {fmt_ns(ns)} |" for bench_id, ns in rows] + [""]
    if len(criterion_md) > 2:
        md += criterion_md
    else:
        # No criterion results (BENCH_SKIP_CRITERION): keep the previous report's, saying so.
        previous = text.partition(BEGIN)[2].partition(END)[0]
        heading = "### Criterion (`cargo bench`, mean per iteration)"
        if heading in previous:
            kept = previous[previous.index(heading) + len(heading):].strip("\n")
            kept = kept.replace("\n_From an earlier full run of `scripts/bench.sh`; this one skipped criterion._\n", "\n")
            md += [heading, "", "_From an earlier full run of `scripts/bench.sh`; this one skipped criterion._", "", kept, ""]
    md.append(END)

    before, _, rest = text.partition(BEGIN)
    _, _, after = rest.partition(END)
    open(target, "w").write(before + "\n".join(md) + after)


if __name__ == "__main__":
    main()
