"""HTML building blocks: escaping, number and time formats, links, tables and the page frame.

Every value is HTML-escaped (on-chain strings such as GPU models and endpoints are attacker-chosen);
pages carry inline CSS only and a Content-Security-Policy that allows no script at all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from urllib.parse import quote, urlencode

from fastapi.responses import HTMLResponse

from tessera.explorer.web.models import FigureOut
from tessera.explorer.web.queries import Snapshot
from tessera.protocol.figures import Figure
from tessera.protocol.money import (
    PAYMENT_DECIMALS,
    PAYMENT_SYMBOL,
    STAKE_DECIMALS,
    STAKE_SYMBOL,
    format_amount,
)

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; script-src 'none'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}header small{color:#aab}
main{padding:16px 24px;max-width:1200px}h1{font-size:20px;margin:8px 0 12px}
h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;margin:4px 0 12px;min-width:360px}
th,td{border:1px solid #dde;padding:4px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#eef0f4}
a{color:#2456c7}a.provider{white-space:nowrap;word-break:normal}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{background:#fff;border:1px solid #dde;padding:8px}
.chart h3{margin:0 0 4px;font-size:14px}svg text{font-size:10px;fill:#556}
svg .bar{fill:#3b6fd8}svg a:hover .bar{fill:#1d3f8f}svg .line{fill:none;stroke:#d9822b;stroke-width:2}
svg .point{fill:#d9822b}svg .axis{stroke:#889;stroke-width:1}svg .grid{stroke:#e3e6ec;stroke-width:1}
svg .beat{fill:#2e9e5b}svg .missed{fill:#e8b4b4}.probes,.outages,.downtime{white-space:nowrap}
.muted{color:#778}.err{background:#fff3f3;border:1px solid #e0b4b4;padding:12px}
pre{background:#fff;border:1px solid #dde;padding:6px;margin:0;white-space:pre-wrap;word-break:break-all}
"""


def e(value: object) -> str:
    """HTML-escape any value (quotes included: safe in text and in attribute values)."""
    return escape(str(value), quote=True)


def href(path: str, **query: str) -> str:
    return e(path + ("?" + urlencode(query) if query else ""))


def money(value: int) -> str:
    return format_amount(value, PAYMENT_DECIMALS, PAYMENT_SYMBOL)


def stake_amount(value: int) -> str:
    return format_amount(value, STAKE_DECIMALS, STAKE_SYMBOL)


def when(ts: int | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def hours(seconds: int) -> str:
    return f"{seconds / 3600:,.1f} GPU-h"


def fig_link(f: Figure | FigureOut, text: str) -> str:
    """The figure's value, linking to the list of its transactions."""
    count = len(f.txs)
    return (f'<a class="fig" href="{href("/figure", name=f.name, key=f.key)}" '
            f'title="{e(f.name)}[{e(f.key)}]: {count} transaction{"s" * (count != 1)}">{e(text)}</a>')


def tx_link(tx: str | None, short: bool = True) -> str:
    if not tx:
        return "-"
    label = f"{tx[:10]}…{tx[-6:]}" if short else tx
    return f'<a class="tx mono" href="{href("/tx/" + quote(tx))}">{e(label)}</a>'


def provider_link(address: str) -> str:
    return f'<a class="provider mono" href="{href("/providers/" + quote(address))}">{e(address)}</a>'


def lease_link(lease_id: int) -> str:
    return f'<a class="lease" href="{href(f"/leases/{int(lease_id)}")}">#{int(lease_id)}</a>'


def page(title: str, body: str, snap: Snapshot | None = None, status: int = 200) -> HTMLResponse:
    state = (f"<small>as of block {e(snap.block)} · {e(when(snap.as_of))} UTC</small>" if snap else "")
    text = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{e(title)} · Tessera explorer</title><style>{STYLE}</style></head><body>"
            f'<header><a href="/">Tessera explorer</a><a href="/providers">providers</a>{state}</header>'
            f"<main><h1>{e(title)}</h1>{body}</main></body></html>")
    return HTMLResponse(text, status_code=status, headers={"Content-Security-Policy": CSP})


def table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), cls: str = "") -> str:
    """`rows` hold HTML already escaped by the caller; `headers` are escaped here."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{cell}</td>'
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>'
    return f'<table class="{e(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def bps_text(value: int | str) -> str:
    return f"{int(value) / 100:.2f}%"

