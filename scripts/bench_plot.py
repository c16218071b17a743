#!/usr/bin/env python3
"""Turn scripts/bench.sh results into a markdown table and one SVG plot per mode.

usage: scripts/bench_plot.py OUT_DIR
       scripts/bench_plot.py --line RUN.json

Reads OUT_DIR/results.json (written by scripts/bench.sh: {"meta": {...}, "runs": [...]},
each run being one `baton bench --json` object) and writes
  OUT_DIR/results.md     mode, conns, ops/s, p50, p99, p99.9, max, errors, client CPU %;
                         for watch and connect runs a second table: delivery or storm
                         figures, RSS and descriptors per connection on each node, and
                         the limit that bounded the run
  OUT_DIR/<mode>.svg     p50 and p99 latency (log scale) and throughput vs connections
With --line, prints the one-line summary of one run (what bench.sh shows as it goes).

Standard library only; the SVG is written by hand so the script runs anywhere python3 does.
"""

import json
import math
import sys
from pathlib import Path
from xml.sax.saxutils import escape

# Plot geometry, in SVG user units (pixels).
WIDTH = 760
PANEL_HEIGHT = 230
MARGIN_LEFT = 80
MARGIN_RIGHT = 150
MARGIN_TOP = 50
PANEL_GAP = 70
MARGIN_BOTTOM = 50
HEIGHT = MARGIN_TOP + 2 * PANEL_HEIGHT + PANEL_GAP + MARGIN_BOTTOM
# Series colours (colour-blind safe: Okabe-Ito).
COLOURS = {"p50": "#0072B2", "p99": "#D55E00", "p99.9": "#CC79A7", "ops/s": "#009E73"}
US_PER_MS = 1000.0


def ms(us):
    return us / US_PER_MS


def fmt_ms(us):
    v = ms(us)
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def fmt_num(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def markdown(meta, runs):
    """The results table, with the run conditions above it."""
    lines = [
        "# Baton benchmark",
        "",
        f"- date: {meta.get('date', '?')}, commit: {meta.get('commit', '?')}",
        f"- machine: {meta.get('cores', '?')} cores; client and three nodes on one host (loopback)",
        f"- each run: {meta.get('duration', '?')} measured after {meta.get('warmup', '?')} warmup, "
        f"target {meta.get('target', '?')}, on a fresh cluster",
        "- latency in ms; ops/s counts successes and expected refusals (LOCK_HELD in contended);"
        " client CPU is the bench process's user+sys time as % of one core",
        "",
        "| mode | conns | ops/s | p50 | p99 | p99.9 | max | errors | client CPU % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for r in runs:
        lat = r["latency_us"]
        cpu = r["client"].get("cpu_percent")
        errors = r["errors_total"]
        lines.append(
            f"| {r['mode']} | {r['conns']} | {r['ops_per_sec']:.0f} | {fmt_ms(lat['p50'])} | "
            f"{fmt_ms(lat['p99'])} | {fmt_ms(lat['p99_9'])} | {fmt_ms(lat['max'])} | {errors} | "
            f"{'?' if cpu is None else f'{cpu:.0f}'} |"
        )
        if errors:
            codes = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items()))
            notes.append(f"- {r['mode']} × {r['conns']}: {codes}")
    crowd = [r for r in runs if r.get("watch") or r.get("connect")]
    if crowd:
        lines += [
            "",
            "Crowds (watch: event delivery after the write's acknowledgement; connect: time"
            " from the storm's start until each client was served), with RSS and descriptors"
            " per connection on each node (n1/n2/n3, with the connections open):",
            "",
            "| mode | conns | result | p50 | p99 | max | watch: p99 from send | RSS KiB/conn | fds/conn | bounded by |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | --- | --- |",
        ]
        for r in crowd:
            lines.append(crowd_row(r))
    failed = meta.get("failed") or []
    if failed:
        notes.append("- runs that produced no result: " + ", ".join(failed))
    if notes:
        lines += ["", "Errors:", ""] + notes
    return "\n".join(lines) + "\n"


def per_node(r, key, scale=1.0, digits=1):
    vals = []
    for n in r.get("nodes", []):
        v = n.get(key)
        vals.append("?" if v is None else f"{v / scale:.{digits}f}")
    return "/".join(vals) or "?"


def crowd_result(r):
    """What a watch or connect run achieved, and the latency summary it is judged by."""
    w, c = r.get("watch"), r.get("connect")
    if w:
        text = (
            f"{w['streams_open']}/{w['streams']} streams, {w['delivered']}/{w['expected']} "
            f"deliveries, lost {w['lost']}, dup {w['duplicated']}"
        )
        return text, w["latency_after_ack_us"]
    served = c.get("all_served_ms")
    text = f"{c['served']}/{c['clients']} served" + (f" in {served:.0f} ms" if served else "")
    return text, c["served_us"]


def crowd_row(r):
    text, lat = crowd_result(r)
    bounds = "; ".join(r.get("bounded_by") or []) or "—"
    w = r.get("watch")
    from_send = fmt_ms(w["latency_from_send_us"]["p99"]) if w else "—"
    return (
        f"| {r['mode']} | {r['conns']} | {text} | {fmt_ms(lat['p50'])} | {fmt_ms(lat['p99'])} | "
        f"{fmt_ms(lat['max'])} | {from_send} | {per_node(r, 'rss_per_conn_bytes', 1024.0)} | "
        f"{per_node(r, 'fds_per_conn', 1.0, 2)} | {bounds} |"
    )


def line(r):
    """The one-line summary of a run."""
    if r.get("watch") or r.get("connect"):
        text, lat = crowd_result(r)
        w = r.get("watch")
        if w:
            text += f", {w['writes']} writes, p99 from send {fmt_ms(w['latency_from_send_us']['p99'])}ms"
        return (
            f"   {text}  p50 {fmt_ms(lat['p50'])}ms  p99 {fmt_ms(lat['p99'])}ms  "
            f"max {fmt_ms(lat['max'])}ms  RSS KiB/conn {per_node(r, 'rss_per_conn_bytes', 1024.0)}  "
            f"client cpu {r['client']['cpu_percent']}%"
        )
    return "   %.0f ops/s  p50 %.2fms  p99 %.2fms  errors %d  client cpu %s%%" % (
        r["ops_per_sec"],
        r["latency_us"]["p50"] / 1e3,
        r["latency_us"]["p99"] / 1e3,
        r["errors_total"],
        r["client"]["cpu_percent"],
    )


def nice_step(span, ticks=5):
    """A 1-2-5 step giving about `ticks` intervals over `span`."""
    raw = span / ticks if span > 0 else 1
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


class Svg:
    def __init__(self):
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        ]

    def text(self, x, y, s, anchor="start", size=12, weight="normal", fill="#222", rotate=None):
        rot = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'font-weight="{weight}" fill="{fill}"{rot}>{escape(str(s))}</text>'
        )

    def line(self, x1, y1, x2, y2, stroke="#ccc", width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'stroke="{stroke}" stroke-width="{width}"{d}/>'
        )

    def polyline(self, points, colour):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self.parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        for x, y in points:
            self.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>')

    def rect(self, x, y, w, h, fill):
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{fill}"/>'
        )

    def render(self):
        return "\n".join(self.parts + ["</svg>"]) + "\n"


def x_scale(conns):
    """Connections on a log2 axis (1, 16, 64, 256 are far apart otherwise)."""
    lo = math.log2(min(conns))
    hi = math.log2(max(conns))
    span = hi - lo or 1.0
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    pad = 20

    def f(c):
        return left + pad + (math.log2(c) - lo) / span * (right - left - 2 * pad)

    return f


def x_axis(svg, conns, xs, bottom, label):
    svg.line(MARGIN_LEFT, bottom, WIDTH - MARGIN_RIGHT, bottom, stroke="#444")
    for c in conns:
        svg.line(xs(c), bottom, xs(c), bottom + 5, stroke="#444")
        svg.text(xs(c), bottom + 18, c, anchor="middle")
    if label:
        svg.text((MARGIN_LEFT + WIDTH - MARGIN_RIGHT) / 2, bottom + 36, label, anchor="middle")


def legend(svg, top, entries, bars=False):
    x = WIDTH - MARGIN_RIGHT + 20
    for i, name in enumerate(entries):
        y = top + 14 + i * 20
        if bars:
            svg.rect(x + 4, y - 11, 14, 12, COLOURS[name])
        else:
            svg.line(x, y - 4, x + 22, y - 4, stroke=COLOURS[name], width=3)
        svg.text(x + 28, y, name)


def latency_panel(svg, runs, conns, xs, top):
    bottom = top + PANEL_HEIGHT
    series = {"p50": "p50", "p99": "p99", "p99.9": "p99_9"}
    values = [ms(r["latency_us"][k]) for r in runs for k in series.values()]
    values = [v for v in values if v > 0] or [1.0]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi <= lo:
        hi = lo * 10

    def ys(v):
        v = max(v, lo)
        return bottom - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * PANEL_HEIGHT

    decade = lo
    while decade <= hi * 1.0001:
        for m in (1, 2, 5):
            v = decade * m
            if v > hi * 1.0001:
                break
            y = ys(v)
            svg.line(MARGIN_LEFT, y, WIDTH - MARGIN_RIGHT, y, stroke="#ddd" if m == 1 else "#f0f0f0")
            svg.text(MARGIN_LEFT - 8, y + 4, f"{v:g}", anchor="end", fill="#444" if m == 1 else "#999")
        decade *= 10
    svg.line(MARGIN_LEFT, top, MARGIN_LEFT, bottom, stroke="#444")
    svg.text(24, (top + bottom) / 2, "latency (ms, log scale)", anchor="middle", rotate=-90)
    for name, key in series.items():
        pts = [(xs(r["conns"]), ys(ms(r["latency_us"][key]))) for r in runs]
        svg.polyline(pts, COLOURS[name])
    x_axis(svg, conns, xs, bottom, None)
    legend(svg, top, list(series))


def throughput_panel(svg, runs, conns, xs, top):
    bottom = top + PANEL_HEIGHT
    peak = max((r["ops_per_sec"] for r in runs), default=0) or 1.0
    step = nice_step(peak)
    hi = math.ceil(peak / step) * step

    def ys(v):
        return bottom - v / hi * PANEL_HEIGHT

    v = 0.0
    while v <= hi * 1.0001:
        svg.line(MARGIN_LEFT, ys(v), WIDTH - MARGIN_RIGHT, ys(v), stroke="#ddd")
        svg.text(MARGIN_LEFT - 8, ys(v) + 4, fmt_num(v), anchor="end", fill="#444")
        v += step
    svg.line(MARGIN_LEFT, top, MARGIN_LEFT, bottom, stroke="#444")
    svg.text(24, (top + bottom) / 2, "throughput (ops/s)", anchor="middle", rotate=-90)
    bar = 26
    for r in runs:
        x, y = xs(r["conns"]), ys(r["ops_per_sec"])
        svg.rect(x - bar / 2, y, bar, bottom - y, COLOURS["ops/s"])
        svg.text(x, y - 5, f"{r['ops_per_sec']:.0f}", anchor="middle", size=11)
    x_axis(svg, conns, xs, bottom, "connections (log scale)")
    legend(svg, top, ["ops/s"], bars=True)


def plot(mode, runs, meta):
    runs = sorted(runs, key=lambda r: r["conns"])
    conns = [r["conns"] for r in runs]
    xs = x_scale(conns)
    svg = Svg()
    svg.text(
        WIDTH / 2,
        24,
        f"baton bench: {mode} (target {meta.get('target', '?')}, "
        f"{meta.get('duration', '?')} after {meta.get('warmup', '?')} warmup)",
        anchor="middle",
        size=15,
        weight="bold",
    )
    latency_panel(svg, runs, conns, xs, MARGIN_TOP)
    throughput_panel(svg, runs, conns, xs, MARGIN_TOP + PANEL_HEIGHT + PANEL_GAP)
    return svg.render()


def main(argv):
    if len(argv) == 3 and argv[1] == "--line":
        print(line(json.loads(Path(argv[2]).read_text())))
        return 0
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out = Path(argv[1])
    data = json.loads((out / "results.json").read_text())
    meta, runs = data.get("meta", {}), data["runs"]
    (out / "results.md").write_text(markdown(meta, runs))
    modes = []
    for r in runs:
        if r["mode"] not in modes:
            modes.append(r["mode"])
    for mode in modes:
        (out / f"{mode}.svg").write_text(plot(mode, [r for r in runs if r["mode"] == mode], meta))
    written = ", ".join(f"{m}.svg" for m in modes)
    print(f"wrote {out}/results.md and {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
