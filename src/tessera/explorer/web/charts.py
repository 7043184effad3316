"""Inline SVG charts (no JavaScript): revenue bars, a utilization line and a provider's epoch strip.

Each bar, point and epoch cell links to the transactions behind it.
"""

from __future__ import annotations

from urllib.parse import quote

from tessera.explorer.web.markup import e, href, pct, when
from tessera.explorer.web.models import EpochStrip, FigureOut

W, H, PAD_L, PAD_B, PAD_T = 560, 220, 64, 34, 12


def bar_chart(chart_id: str, title: str, items: list[tuple[str, float, str, FigureOut]]) -> str:
    """Bars of (label, value, value text, figure); each bar links to its figure's transactions."""
    top = max((v for _, v, _, _ in items), default=0) or 1
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T
    step = plot_w / max(len(items), 1)
    parts = [f'<line class="axis" x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{W - 8}" y2="{PAD_T + plot_h}"/>']
    for frac in (0.5, 1.0):
        y = PAD_T + plot_h * (1 - frac)
        tick = e(f"{top * frac:,.2f}")
        parts.append(f'<line class="grid" x1="{PAD_L}" y1="{y:.1f}" x2="{W - 8}" y2="{y:.1f}"/>'
                     f'<text x="{PAD_L - 4}" y="{y + 3:.1f}" text-anchor="end">{tick}</text>')
    every = max(1, len(items) // 8)
    for i, (label, value, text, f) in enumerate(items):
        h = plot_h * value / top
        if value > 0:
            h = max(h, 1.0)
        x = PAD_L + i * step + step * 0.12
        parts.append(f'<a href="{href("/figure", name=f.name, key=f.key)}">'
                     f'<rect class="bar" data-key="{e(label)}" x="{x:.1f}" y="{PAD_T + plot_h - h:.1f}" '
                     f'width="{max(step * 0.76, 1):.1f}" height="{h:.1f}">'
                     f"<title>{e(label)}: {e(text)}</title></rect></a>")
        if i % every == 0:
            parts.append(f'<text x="{x + step * 0.38:.1f}" y="{H - PAD_B + 14}" '
                         f'text-anchor="middle">{e(label[5:] if len(label) == 10 else label)}</text>')
    return (f'<div class="chart"><h3>{e(title)}</h3><svg id="{e(chart_id)}" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" role="img" aria-label="{e(title)}">{"".join(parts)}</svg></div>')


def line_chart(chart_id: str, title: str, items: list[tuple[str, float, str, FigureOut]]) -> str:
    """A line through (label, value in 0..n) points; each point links to its figure's transactions."""
    top = max(1.0, max((v for _, v, _, _ in items), default=0))
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T
    step = plot_w / max(len(items), 1)
    parts = [f'<line class="axis" x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{W - 8}" y2="{PAD_T + plot_h}"/>']
    for frac in (0.5, 1.0):
        y = PAD_T + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{PAD_L}" y1="{y:.1f}" x2="{W - 8}" y2="{y:.1f}"/>'
                     f'<text x="{PAD_L - 4}" y="{y + 3:.1f}" text-anchor="end">{e(pct(top * frac))}</text>')
    points, every = [], max(1, len(items) // 8)
    for i, (label, value, text, f) in enumerate(items):
        x, y = PAD_L + (i + 0.5) * step, PAD_T + plot_h * (1 - value / top)
        points.append(f"{x:.1f},{y:.1f}")
        parts.append(f'<a href="{href("/figure", name=f.name, key=f.key)}"><circle class="point" '
                     f'data-key="{e(label)}" cx="{x:.1f}" cy="{y:.1f}" r="3.5">'
                     f"<title>{e(label)}: {e(text)}</title></circle></a>")
        if i % every == 0:
            parts.append(f'<text x="{x:.1f}" y="{H - PAD_B + 14}" '
                         f'text-anchor="middle">{e(label[5:] if len(label) == 10 else label)}</text>')
    line = f'<polyline class="line" points="{" ".join(points)}"/>' if points else ""
    return (f'<div class="chart"><h3>{e(title)}</h3><svg id="{e(chart_id)}" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" role="img" aria-label="{e(title)}">{line}{"".join(parts)}</svg></div>')



def epoch_chart(strip: EpochStrip) -> str:
    """One cell per epoch owed (oldest left): green with a link to the heartbeat's tx, or red."""
    h, top, bottom = 86, 8, 30
    plot_w = W - 16
    cell = plot_w / len(strip.epochs)
    parts = []
    for i, ep in enumerate(strip.epochs):
        kind = "beat" if ep.heartbeat_tx else "missed"
        label = (f"epoch {ep.epoch} ({when(ep.start)} UTC): "
                 + (f"heartbeat in {ep.heartbeat_tx}" if ep.heartbeat_tx else "no heartbeat"))
        rect = (f'<rect class="epoch {kind}" data-epoch="{ep.epoch}" x="{8 + i * cell:.2f}" y="{top}" '
                f'width="{max(cell - (1 if cell > 3 else 0), 0.5):.2f}" height="{h - top - bottom}">'
                f"<title>{e(label)}</title></rect>")
        parts.append(f'<a href="{href("/tx/" + quote(ep.heartbeat_tx))}">{rect}</a>' if ep.heartbeat_tx
                     else rect)
    first, last = strip.epochs[0], strip.epochs[-1]
    parts.append(f'<text x="8" y="{h - bottom + 14}">epoch {first.epoch} · {e(when(first.start))}</text>'
                 f'<text x="{W - 8}" y="{h - bottom + 14}" text-anchor="end">epoch {last.epoch} · '
                 f"{e(when(last.start))}</text>")
    shown = len(strip.epochs)
    owed = strip.last_owed - strip.first_owed + 1
    title = (f"Heartbeats in the last {shown} of {owed} epochs owed ({strip.epoch_length} s each; "
             "green: heartbeat, red: missed)")
    return (f'<div class="chart"><h3>{e(title)}</h3><svg id="uptime-chart" width="{W}" height="{h}" '
            f'viewBox="0 0 {W} {h}" role="img" aria-label="{e(title)}">{"".join(parts)}</svg></div>')


