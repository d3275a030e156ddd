"""A load run as a picture: latency (per-second p50 and p99) and throughput over time.

``write_html`` needs nothing beyond the standard library: one self-contained HTML file with an inline SVG and the
run's figures, to open in any browser or attach to an issue. ``write_png`` draws the same with matplotlib, only
when it is importable (it is not a lorag dependency).
"""

from __future__ import annotations

import html
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

WIDTH, HEIGHT = 900, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 24, 36


def _scale(values: list[float]) -> float:
    """A round upper bound for an axis: 1, 2, 2.5 or 5 times a power of ten."""
    top = max(values, default=0.0) or 1.0
    power = 10 ** math.floor(math.log10(top))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= top)


def _panel(
    rows: list[dict[str, Any]], series: list[tuple[str, str, str]], unit: str, title: str, bars: bool = False
) -> str:
    """One SVG chart: x = second of the run; one polyline (or bars) per (key, colour, label)."""
    seconds = max(len(rows), 1)
    values = [r[key] for r in rows for key, _, _ in series if r[key] is not None]
    top = _scale(values)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(second: float) -> float:
        return LEFT + plot_w * (second + 0.5) / seconds

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for i in range(5):
        value = top * i / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="#eee"/><text x="{LEFT - 6}" y="{y(value) + 4:.1f}" font-size="11" '
            f'text-anchor="end">{value:g}</text>'
        )
    tick = max(1, seconds // 10)
    for second in range(0, seconds, tick):
        parts.append(
            f'<text x="{x(second):.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="11" text-anchor="middle">{second}</text>'
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 4}" font-size="11" text-anchor="middle">'
        f"second of the measured window</text>"
    )
    parts.append(
        f'<text x="14" y="{TOP + plot_h / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2})">{html.escape(unit)}</text>'
    )
    for n, (key, colour, label) in enumerate(series):
        points = [(x(r["second"]), y(r[key])) for r in rows if r[key] is not None]
        if bars:
            width = max(plot_w / seconds * 0.7 / len(series), 1)
            for (px, py), r in zip(points, [r for r in rows if r[key] is not None], strict=True):
                parts.append(
                    f'<rect class="{key}" x="{px - width * len(series) / 2 + n * width:.1f}" y="{py:.1f}" '
                    f'width="{width:.1f}" height="{TOP + plot_h - py:.1f}" fill="{colour}">'
                    f"<title>{r['second']} s: {r[key]} {html.escape(label)}</title></rect>"
                )
        elif points:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline class="{key}" points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<rect x="{LEFT + 10 + n * 150}" y="{TOP + 6}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{LEFT + 24 + n * 150}" y="{TOP + 15}" font-size="11">{html.escape(label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(figures: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The page: title, the two charts, the figures as a table and as JSON."""
    title = f"lorag load {figures.get('service', '')} {figures.get('rpc', '')}"
    latency = _panel(
        rows,
        [("p50_ms", "#1f77b4", "p50 latency"), ("p99_ms", "#d62728", "p99 latency")],
        "ms",
        "Latency of successful calls, per second (by completion time)",
    )
    throughput = _panel(
        rows,
        [("completed", "#2ca02c", "completed calls/s"), ("errors", "#ff7f0e", "errors/s")],
        "calls per second",
        "Throughput",
        bars=True,
    )
    table = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>" for k, v in figures.items()
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>\n{latency}\n{throughput}\n"
        f"<h2>Figures</h2><table>{table}</table>\n"
        f'<script type="application/json" id="figures">{html.escape(json.dumps(figures))}</script>\n'
        f'<script type="application/json" id="per-second">{html.escape(json.dumps(rows))}</script>\n'
        "</body></html>\n"
    )


def write_html(path: Path, figures: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    path.write_text(render_html(figures, rows), encoding="utf-8")
    return path


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_png(path: Path, figures: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    """The same two charts as a PNG; requires matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [r["second"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        points = [(r["second"], r[key]) for r in rows if r[key] is not None]
        top.plot([p[0] for p in points], [p[1] for p in points], label=label)
    top.set_ylabel("ms")
    top.set_title(f"lorag load {figures.get('service', '')} {figures.get('rpc', '')}")
    top.legend()
    bottom.bar(seconds, [r["completed"] for r in rows], label="completed/s")
    bottom.bar(seconds, [r["errors"] for r in rows], label="errors/s")
    bottom.set_xlabel("second of the measured window")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
