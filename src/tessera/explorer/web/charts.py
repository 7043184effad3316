"""Inline SVG charts (no JavaScript): revenue bars, a utilization line and a provider's epoch strip.

Each bar, point and epoch cell links to the transactions behind it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from urllib.parse import quote

from tessera.explorer.web.markup import e, href, pct, when
from tessera.explorer.web.models import EpochStrip, FigureOut

W, H, PAD_L, PAD_B, PAD_T = 560, 220, 64, 34, 16
LABELS_UP_TO = 14    # bars or points: each gets its value written on it when there are at most this many


def nice_ticks(top: float, count: int = 4) -> tuple[list[float], int]:
    """Axis ticks 0, s, 2s, ... up to at least `top`, with s a 1, 2, 2.5 or 5 times a power of ten
    (about `count` steps), and the decimals that tell every tick apart."""
    top = top if top > 0 else 1.0
    raw = top / count
    exp = math.floor(math.log10(raw))
    step = next(m * 10.0**exp for m in (1, 2, 2.5, 5, 10) if raw <= m * 10.0**exp * (1 + 1e-9))
    steps = max(1, math.ceil(top / step - 1e-9))
    decimals = next((d for d in range(0, 12) if abs(round(step, d) - step) <= step * 1e-9), 12)
    return [i * step for i in range(steps + 1)], decimals


def _axis(ticks: list[float], decimals: int, plot_h: float, suffix: str = "") -> list[str]:
    top = ticks[-1]
    parts = []
    for tick in ticks:
        y = PAD_T + plot_h * (1 - tick / top)
        parts.append(f'<line class="{"axis" if tick == 0 else "grid"}" x1="{PAD_L}" y1="{y:.1f}" '
                     f'x2="{W - 8}" y2="{y:.1f}"/><text class="tick" x="{PAD_L - 4}" y="{y + 3:.1f}" '
                     f'text-anchor="end">{e(f"{tick:,.{decimals}f}{suffix}")}</text>')
    return parts


def _x_label(label: str) -> str:
    return label[5:] if len(label) == 10 else label        # a day: 'MM-DD'


def _frame(chart_id: str, title: str, parts: list[str], height: int = H) -> str:
    return (f'<div class="chart"><h3>{e(title)}</h3><svg id="{e(chart_id)}" width="{W}" height="{height}" '
            f'viewBox="0 0 {W} {height}" role="img" aria-label="{e(title)}">{"".join(parts)}</svg></div>')


def bar_chart(chart_id: str, title: str, items: list[tuple[str, float, str, FigureOut]],
              short: Callable[[float], str] | None = None) -> str:
    """Bars of (label, value, value text, figure); each bar links to its figure's transactions and
    shows its value on hover, and on the bar itself when there are few. `short` writes a value for
    the bar's label (default: the axis's decimals)."""
    ticks, decimals = nice_ticks(max((v for _, v, _, _ in items), default=0))
    top = ticks[-1]
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T
    step = plot_w / max(len(items), 1)
    parts = _axis(ticks, decimals, plot_h)
    every = max(1, math.ceil(len(items) / 8))
    for i, (label, value, text, f) in enumerate(items):
        h = plot_h * value / top
        if value > 0:
            h = max(h, 1.0)
        width = min(max(step * 0.76, 1), 48)           # one day is a bar, not a wall
        x = PAD_L + i * step + (step - width) / 2
        parts.append(f'<a href="{href("/figure", name=f.name, key=f.key)}">'
                     f'<rect class="bar" data-key="{e(label)}" x="{x:.1f}" y="{PAD_T + plot_h - h:.1f}" '
                     f'width="{width:.1f}" height="{h:.1f}">'
                     f"<title>{e(label)}: {e(text)}</title></rect></a>")
        if len(items) <= LABELS_UP_TO:
            written = short(value) if short else f"{value:,.{decimals}f}"
            parts.append(f'<text class="label" x="{x + width / 2:.1f}" y="{PAD_T + plot_h - h - 3:.1f}" '
                         f'text-anchor="middle">{e(written)}</text>')
        if i % every == 0:
            parts.append(f'<text x="{x + width / 2:.1f}" y="{H - PAD_B + 14}" '
                         f'text-anchor="middle">{e(_x_label(label))}</text>')
    return _frame(chart_id, title, parts)


def line_chart(chart_id: str, title: str, items: list[tuple[str, float, str, FigureOut]]) -> str:
    """A line through (label, share 0..n) points drawn in percent; each point links to its figure's
    transactions and shows its value on hover, and beside it when there are few (one point
    included: a lone point still reads as a value)."""
    ticks, decimals = nice_ticks(max((100 * v for _, v, _, _ in items), default=0))
    top = ticks[-1]
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T
    step = plot_w / max(len(items), 1)
    parts = _axis(ticks, decimals, plot_h, "%")
    points, every = [], max(1, math.ceil(len(items) / 8))
    for i, (label, value, text, f) in enumerate(items):
        x, y = PAD_L + (i + 0.5) * step, PAD_T + plot_h * (1 - 100 * value / top)
        points.append(f"{x:.1f},{y:.1f}")
        parts.append(f'<a href="{href("/figure", name=f.name, key=f.key)}"><circle class="point" '
                     f'data-key="{e(label)}" cx="{x:.1f}" cy="{y:.1f}" r="3.5">'
                     f"<title>{e(label)}: {e(text)}</title></circle></a>")
        if len(items) <= LABELS_UP_TO:
            parts.append(f'<text class="label" x="{x:.1f}" y="{max(y - 7, PAD_T - 4):.1f}" '
                         f'text-anchor="middle">{e(pct(value))}</text>')
        if i % every == 0:
            parts.append(f'<text x="{x:.1f}" y="{H - PAD_B + 14}" '
                         f'text-anchor="middle">{e(_x_label(label))}</text>')
    line = f'<polyline class="line" points="{" ".join(points)}"/>' if len(points) > 1 else ""
    return _frame(chart_id, title, [line, *parts])


# What each epoch state is called on the chart (classes: "epoch up heartbeat", ...).
EPOCH_WORDS = {"heartbeat": "up: heartbeat transaction", "claim": "up: receipt claim (BeatClaimed)",
               "report": "up: validators' liveness report", "revoked": "down: report revoked by a "
               "resolved challenge", "down": "down: no heartbeat, claim or report",
               "pending": "pending: not final yet"}


def epoch_chart(strip: EpochStrip) -> str:
    """One cell per epoch (oldest left), coloured by its state, linked to the transaction that
    decides it: green shades for up (heartbeat tx, receipt claim, validators' report), red for
    down (darker: a report revoked), grey for pending (not final: still able to change)."""
    h, top, bottom = 86, 8, 30
    plot_w = W - 16
    cell = plot_w / len(strip.epochs)
    parts = []
    counts = {state: 0 for state in EPOCH_WORDS}
    for i, ep in enumerate(strip.epochs):
        counts[ep.state] = counts.get(ep.state, 0) + 1
        kind = ("up " if ep.up else "down " if ep.up is False else "") + ep.state
        words = EPOCH_WORDS.get(ep.state, ep.state)
        if ep.state == "pending" and ep.txs:
            words += ", reported"
        label = f"epoch {ep.epoch} ({when(ep.start)}): {words}" + (f" ({ep.tx})" if ep.tx else "")
        rect = (f'<rect class="epoch {kind}" data-epoch="{ep.epoch}" x="{8 + i * cell:.2f}" y="{top}" '
                f'width="{max(cell - (1 if cell > 3 else 0), 0.5):.2f}" height="{h - top - bottom}">'
                f"<title>{e(label)}</title></rect>")
        parts.append(f'<a href="{href("/tx/" + quote(ep.tx))}">{rect}</a>' if ep.tx else rect)
    first, last = strip.epochs[0], strip.epochs[-1]
    parts.append(f'<text x="8" y="{h - bottom + 14}">epoch {first.epoch} · {e(when(first.start))}</text>'
                 f'<text x="{W - 8}" y="{h - bottom + 14}" text-anchor="end">epoch {last.epoch} · '
                 f"{e(when(last.start))}</text>")
    up = counts["heartbeat"] + counts["claim"] + counts["report"]
    title = (f"Up epochs in the last {len(strip.epochs)} epochs ({strip.epoch_length} s each): {up} up "
             f"({counts['heartbeat']} by heartbeat tx, {counts['report']} by validators' report, "
             f"{counts['claim']} by receipt claim), {counts['down'] + counts['revoked']} down "
             f"({counts['revoked']} revoked), {counts['pending']} pending (final after epoch "
             f"{strip.final_through}: dark green heartbeat, green report, teal claim, red down, grey "
             "pending)")
    return (f'<div class="chart"><h3>{e(title)}</h3><svg id="uptime-chart" width="{W}" height="{h}" '
            f'viewBox="0 0 {W} {h}" role="img" aria-label="{e(title)}">{"".join(parts)}</svg></div>')
