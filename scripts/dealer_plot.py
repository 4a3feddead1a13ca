#!/usr/bin/env python3
"""Latency by percentile, one line per invocation rule, as an SVG (standard library only).

Reads the JSON lines `loadtest --json` prints (one per rule of an rpc run) and draws each rule's
p50, p90, p99, p99.9 and max latency, on a "nines" axis (50, 90, 99, 99.9, 100) and a logarithmic
latency axis, so that tail differences between rules stand out.

    target/release/loadtest --rule all --slow-callee 1:10 --service-time 1ms --json > run.jsonl
    target/release/loadtest --rule roundrobin --concurrency 8 ... --json > limited.jsonl
    scripts/dealer_plot.py out.svg "one callee 10x slower" run.jsonl "limited.jsonl=+concurrency 8"

Each input may carry a label suffix after `=`, appended to its rules' names in the legend.
"""

import json
import math
import sys

POINTS = [("p50", "50"), ("p90", "90"), ("p99", "99"), ("p999", "99.9"), ("max", "max")]
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
WIDTH, HEIGHT = 900, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 320, 40, 50


def load(path, suffix=""):
    runs = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if not line.startswith("{"):
                continue
            run = json.loads(line)
            if run.get("mode") == "rpc" and run.get("latency_us"):
                run["label"] = run["rule"] + (f" {suffix}" if suffix else "")
                runs.append(run)
    if not runs:
        sys.exit(f"{path}: no rpc result with latencies")
    return runs


def svg(runs, title):
    values = [run["latency_us"][key] for run in runs for key, _ in POINTS]
    low = 10 ** math.floor(math.log10(max(min(values), 1.0)))
    high = 10 ** math.ceil(math.log10(max(values)))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i):
        return LEFT + plot_w * i / (len(POINTS) - 1)

    def y(v):
        span = math.log10(high) - math.log10(low)
        return TOP + plot_h * (1 - (math.log10(max(v, low)) - math.log10(low)) / span)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-size="14">{title}</text>',
    ]
    decade = low
    while decade <= high:
        for step in (1, 2, 5):
            v = decade * step
            if v > high:
                break
            out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                       f'stroke="#{"ccc" if step == 1 else "eee"}"/>')
            label = f"{v / 1000:g} ms" if v >= 1000 else f"{v:g} µs"
            out.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{label}</text>')
        decade *= 10
    for i, (_, name) in enumerate(POINTS):
        out.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{x(i):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{name}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 10}" text-anchor="middle">percentile</text>')
    for n, run in enumerate(runs):
        color = COLORS[n % len(COLORS)]
        points = " ".join(f"{x(i):.1f},{y(run['latency_us'][key]):.1f}" for i, (key, _) in enumerate(POINTS))
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        for i, (key, _) in enumerate(POINTS):
            out.append(f'<circle cx="{x(i):.1f}" cy="{y(run["latency_us"][key]):.1f}" r="3" fill="{color}"/>')
        legend_y = TOP + 16 * n + 8
        out.append(f'<line x1="{WIDTH - RIGHT + 16}" x2="{WIDTH - RIGHT + 36}" y1="{legend_y}" '
                   f'y2="{legend_y}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{WIDTH - RIGHT + 42}" y="{legend_y + 4}">{run["label"]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: dealer_plot.py OUT.svg TITLE RUN.jsonl[=LABEL-SUFFIX]...")
    runs = []
    for arg in sys.argv[3:]:
        path, _, suffix = arg.partition("=")
        runs += load(path, suffix)
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        out.write(svg(runs, sys.argv[2]))


if __name__ == "__main__":
    main()
