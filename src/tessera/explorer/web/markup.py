"""HTML building blocks: escaping, number and time formats, links, tables and the page frame.

Every value is HTML-escaped (on-chain strings such as GPU models and endpoints are attacker-chosen);
pages carry inline CSS only and a Content-Security-Policy that allows no script at all.
Amounts are shown with `show_amount` (at most 6 decimals) and the exact `format_amount` as the
tooltip; times with `format_time` (UTC).
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote, urlencode

from fastapi.responses import HTMLResponse

from tessera.explorer.web.models import FigureOut
from tessera.explorer.web.queries import Paged, Snapshot
from tessera.explorer.web.units import DECIMALS, TSTK, TUSD, figure_unit
from tessera.protocol.figures import Figure, format_time
from tessera.protocol.money import format_amount, show_amount

NAV = (("providers", "/providers"), ("leases", "/leases"), ("challenges", "/challenges"),
       ("validators", "/validators"), ("agents", "/agents"), ("bridge", "/bridge"))

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
svg .heartbeat{fill:#1f7a43}svg .report{fill:#4cbf7a}svg .claim{fill:#2a9d8f}
svg .down{fill:#e8b4b4}svg .revoked{fill:#b3261e}svg .pending{fill:#c9ccd3}
.probes,.outages,.downtime{white-space:nowrap}
.muted{color:#778}.err{background:#fff3f3;border:1px solid #e0b4b4;padding:12px}
pre{background:#fff;border:1px solid #dde;padding:6px;margin:0;white-space:pre-wrap;word-break:break-all}
.args{margin:0;font-size:12px}.args div{white-space:nowrap}.args b{font-weight:600;color:#445}
.ok{color:#1f7a43;font-weight:600}.bad{color:#b3261e;font-weight:600}.pager a{margin:0 2px}
svg .label{font-size:10px;fill:#1d2330}.amt{white-space:nowrap}
"""


def e(value: object) -> str:
    """HTML-escape any value (quotes included: safe in text and in attribute values)."""
    return escape(str(value), quote=True)


def href(path: str, **query: str) -> str:
    return e(path + ("?" + urlencode(query) if query else ""))


def money(value: int) -> str:
    """A payment-token amount for a person (text): at most 6 decimals."""
    return show_amount(value, DECIMALS[TUSD], TUSD)


def stake_amount(value: int) -> str:
    """A stake-token amount for a person (text): at most 6 decimals, '≈' when rounded."""
    return show_amount(value, DECIMALS[TSTK], TSTK)


def amount(value: int | None, token: str = TUSD, cls: str = "amt") -> str:
    """HTML: the amount shown for a person, exact in the tooltip and in `data-base-units`."""
    if value is None:
        return "-"
    decimals = DECIMALS[token]
    return (f'<span class="{e(cls)}" title="{e(format_amount(value, decimals, token))}" '
            f'data-base-units="{int(value)}">{e(show_amount(value, decimals, token))}</span>')


def tusd(value: int | None) -> str:
    return amount(value, TUSD)


def tstk(value: int | None) -> str:
    return amount(value, TSTK)


def when(ts: int | None) -> str:
    """A block time for a person: '2026-12-05 09:12:00 UTC' ('-' for none)."""
    return "-" if ts is None else format_time(ts)


def span(seconds: int) -> str:
    """A duration for a person: '2 d 3 h', '3 h 12 min', '45 s'."""
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86_400)
    hours_, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days:,} d {hours_} h"
    if hours_:
        return f"{hours_} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def figure_text(f: Figure | FigureOut) -> tuple[str, str | None]:
    """(the value for a person, the exact value or None) by the figure's unit."""
    value, unit = int(f.value), figure_unit(f.name)
    if unit in DECIMALS:
        return show_amount(value, DECIMALS[unit], unit), format_amount(value, DECIMALS[unit], unit)
    if unit == "GPU-seconds":
        return hours(value), f"{value:,} GPU-seconds"
    if unit == "seconds":
        return span(value), f"{value:,} s"
    if unit == "bps":
        return bps_text(value), f"{value:,} basis points"
    return f"{value:,}", None


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def hours(seconds: int) -> str:
    """GPU-seconds for a person, in the unit that shows a small amount as more than 0.0."""
    if seconds < 60:
        return f"{seconds:,} GPU-s"
    if seconds < 3600:
        return f"{seconds / 60:,.1f} GPU-min"
    return f"{seconds / 3600:,.1f} GPU-h"


def fig_link(f: Figure | FigureOut, text: str | None = None) -> str:
    """The figure's value (`text`, or the value in its unit), linking to the list of its
    transactions; the tooltip holds the exact value and the figure's name."""
    count = getattr(f, "tx_count", None)
    count = len(f.txs) if count is None else count      # a FigureOut lists only the first ones
    shown, exact = figure_text(f)
    tip = (f"{exact} · " if exact else "") + f"{f.name}[{f.key}]: {count} transaction{'s' * (count != 1)}"
    if count == 0 and int(f.value) == 0:      # nothing booked it: no transactions to list
        return f'<span class="fig" title="{e(tip)}">{e(shown if text is None else text)}</span>'
    return (f'<a class="fig" href="{href("/figure", name=f.name, key=f.key)}" '
            f'title="{e(tip)}">{e(shown if text is None else text)}</a>')


def tx_link(tx: str | None, short: bool = True) -> str:
    if not tx:
        return "-"
    label = f"{tx[:10]}…{tx[-6:]}" if short else tx
    return f'<a class="tx mono" href="{href("/tx/" + quote(tx))}">{e(label)}</a>'


def provider_link(address: str) -> str:
    return f'<a class="provider mono" href="{href("/providers/" + quote(address))}">{e(address)}</a>'


def lease_link(lease_id: int | None) -> str:
    if lease_id is None:
        return "-"
    return f'<a class="lease" href="{href(f"/leases/{int(lease_id)}")}">#{int(lease_id)}</a>'


def challenge_link(challenge_id: int | None) -> str:
    if challenge_id is None:
        return "-"
    return (f'<a class="challenge" href="{href(f"/challenges/{int(challenge_id)}")}">'
            f"challenge #{int(challenge_id)}</a>")


def validator_link(address: str) -> str:
    return f'<a class="validator mono" href="{href("/validators/" + quote(address))}">{e(address)}</a>'


def address_text(address: str | None) -> str:
    return "-" if not address else f'<span class="mono">{e(address)}</span>'


def short_hash(value: str | None) -> str:
    """A 32-byte hash as '0x1234…abcd', the whole in the tooltip."""
    if not value:
        return "-"
    text = f"{value[:10]}…{value[-6:]}" if len(value) > 20 else value
    return f'<span class="mono" title="{e(value)}">{e(text)}</span>'


def pager(path: str, page_no: int, pages: int, total: int, what: str, newest_first: bool = True) -> str:
    """'page 2 of 9 (412 leases, newest first) · newer · older' with links that keep to existing
    pages ('oldest first · previous · next' for a list in chain order)."""
    back, forth, order = ("newer", "older", "newest") if newest_first else ("previous", "next", "oldest")
    links = []
    if page_no > 1:
        links.append(f'<a class="{back}" href="{href(path, page=str(page_no - 1))}">{back}</a>')
    if page_no < pages:
        links.append(f'<a class="{forth}" href="{href(path, page=str(page_no + 1))}">{forth}</a>')
    return (f'<p class="pager">page {page_no} of {max(pages, 1)} ({total:,} {e(what)}, {order} first)'
            + "".join(f" · {link}" for link in links) + "</p>")


def list_pager(path: str, rows: Paged, what: str, param: str = "page", newest_first: bool = False) -> str:
    """A detail page's list: 'events 51-100 of 4,502 (oldest first; page 2 of 91) · previous ·
    next', the links on `?param=N` (each list of a page has its own) to the list's heading
    (#param; none for the page's main list, `page`); nothing when it fits one page."""
    if rows.pages <= 1:
        return ""
    back, forth = ("newer", "older") if newest_first else ("previous", "next")
    first = (rows.page - 1) * rows.size + 1
    join = "&" if "?" in path else "?"
    links = []
    for cls, to in ((back, rows.page - 1), (forth, rows.page + 1)):
        if 1 <= to <= rows.pages:
            link = e(f"{path}{join}{urlencode({param: to})}" + ("" if param == "page" else f"#{param}"))
            links.append(f'<a class="{cls}" href="{link}">{cls}</a>')
    return (f'<p class="pager" data-param="{e(param)}">{e(what)} {first:,}-{first + len(rows.rows) - 1:,} '
            f"of {rows.total:,} ({'newest' if newest_first else 'oldest'} first; page {rows.page:,} of "
            f"{rows.pages:,})" + "".join(f" · {link}" for link in links) + "</p>")


def page(title: str, body: str, snap: Snapshot | None = None, status: int = 200) -> HTMLResponse:
    state = (f"<small>as of block {e(snap.block)} · {e(when(snap.as_of))}</small>" if snap else "")
    nav = "".join(f'<a href="{href(path)}">{e(label)}</a>' for label, path in NAV)
    text = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{e(title)} · Tessera explorer</title><style>{STYLE}</style></head><body>"
            f'<header><a href="/">Tessera explorer</a>{nav}{state}</header>'
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


def chain_tx(chain: int | None, tx: str | None) -> str:
    """A transaction on a chain: its hash (linking to its bridge events) and the chain id."""
    if not tx:
        return "-"
    return (f'<a class="tx mono" href="{href("/bridge/tx/" + tx)}" title="{e(tx)}">{e(tx[:10])}…'
            f'{e(tx[-6:])}</a> <span class="muted">on {e(chain if chain is not None else "?")}</span>')


def message_link(mid: str | None) -> str:
    if not mid:
        return "-"
    return f'<a class="message mono" href="{href("/bridge/" + mid)}" title="{e(mid)}">{e(mid[:10])}…</a>'
