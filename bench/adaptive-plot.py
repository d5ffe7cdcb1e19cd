#!/usr/bin/env python3
"""Plots adaptive sampling over time as an SVG (no dependencies): the worker's busy share
per controller period against the budget, and the sampling interval on a log2 axis.

Input (stdin): tapflow's debug lines from `RUST_LOG=probe::adaptive=debug`, e.g.
  ... worker 0 period at 1700000000250 ms: busy 612 permille, interval 2
Usage: adaptive-plot.py BUDGET OUT.svg [TITLE] < log
"""
import math
import re
import sys

LINE = re.compile(r"worker (\d+) period at (\d+) ms: busy (\d+) permille, interval (\d+)")


def main():
    budget = float(sys.argv[1])
    out = sys.argv[2]
    title = sys.argv[3] if len(sys.argv) > 3 else "adaptive sampling"
    points = []
    for line in sys.stdin:
        m = LINE.search(line)
        if m and m.group(1) == "0":
            points.append((int(m.group(2)), int(m.group(3)) / 1000.0, int(m.group(4))))
    if not points:
        sys.exit("no period lines (run with RUST_LOG=probe::adaptive=debug)")
    t0 = points[0][0]
    series = [((t - t0) / 1000.0, busy, n) for t, busy, n in points]
    width, height, left, right, top, bottom = 720, 360, 60, 60, 40, 50
    pw, ph = width - left - right, height - top - bottom
    t_max = max(s[0] for s in series) or 1.0
    top_exp = max(1, math.ceil(math.log2(max(s[2] for s in series))) + 1)

    def x(t):
        return left + pw * t / t_max

    def y_busy(b):
        return top + ph * (1.0 - b)

    def y_interval(n):
        return top + ph * (1.0 - math.log2(n) / top_exp)

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>',
    ]
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        yy = y_busy(share)
        svg.append(f'<line x1="{left}" y1="{yy}" x2="{left + pw}" y2="{yy}" stroke="#eee"/>')
        svg.append(f'<text x="{left - 6}" y="{yy + 4}" text-anchor="end">{share:.0%}</text>')
    for e in range(top_exp + 1):
        yy = y_interval(2**e)
        svg.append(f'<text x="{left + pw + 6}" y="{yy + 4}" fill="#c60">1/{2**e}</text>')
    ticks = max(1, int(t_max))
    for s in range(ticks + 1):
        xx = x(s)
        svg.append(f'<text x="{xx}" y="{top + ph + 16}" text-anchor="middle">{s}</text>')
    svg.append(
        f'<text x="{left + pw / 2}" y="{height - 10}" text-anchor="middle">'
        "seconds of traffic</text>"
    )
    svg.append(
        f'<text transform="translate(16,{top + ph / 2}) rotate(-90)" text-anchor="middle" '
        'fill="#06c">busy share</text>'
    )
    svg.append(
        f'<text transform="translate({width - 12},{top + ph / 2}) rotate(90)" '
        'text-anchor="middle" fill="#c60">sampling interval</text>'
    )
    yb = y_busy(budget)
    svg.append(
        f'<line x1="{left}" y1="{yb}" x2="{left + pw}" y2="{yb}" stroke="#06c" '
        'stroke-dasharray="6,4"/>'
    )
    svg.append(f'<text x="{left + 4}" y="{yb - 4}" fill="#06c">budget {budget:.0%}</text>')
    busy_path = " ".join(f"{x(t):.1f},{y_busy(b):.1f}" for t, b, _ in series)
    svg.append(f'<polyline points="{busy_path}" fill="none" stroke="#06c" stroke-width="2"/>')
    steps = []
    for i, (t, _, n) in enumerate(series):
        if i:
            steps.append(f"{x(t):.1f},{y_interval(series[i - 1][2]):.1f}")
        steps.append(f"{x(t):.1f},{y_interval(n):.1f}")
    svg.append(
        f'<polyline points="{" ".join(steps)}" fill="none" stroke="#c60" stroke-width="2"/>'
    )
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
