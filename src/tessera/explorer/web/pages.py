"""The bodies of the HTML pages: overview, providers, one provider, one lease, one transaction and
one figure's transactions. The routes in `site.py` fetch the rows and wrap these in `markup.page`.
"""

from __future__ import annotations

from tessera.explorer import db
from tessera.explorer.web.charts import bar_chart, epoch_chart, line_chart
from tessera.explorer.web.markup import (
    bps_text,
    e,
    fig_link,
    hours,
    kv,
    money,
    pct,
    provider_link,
    stake_amount,
    table,
    tx_link,
    when,
)
from tessera.explorer.web.outputs import epoch_strip, lease_out, overview, provider_out, provider_scores
from tessera.explorer.web.queries import Explorer, Snapshot
from tessera.explorer.web.sections import (
    beats_of,
    events_table,
    leases_table,
    liveness_html,
    payments_table,
    providers_table,
    reliability_html,
    scores_table,
)
from tessera.protocol.figures import PERCENTILES, Figure
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL


def overview_html(snap: Snapshot, providers: list[db.Provider]) -> str:
    o = overview(snap)
    v = lambda f: int(f.value)  # noqa: E731
    totals = [
        ("providers registered", fig_link(o.providers, o.providers.value)),
        ("orders", fig_link(o.orders, o.orders.value)),
        ("leases", fig_link(o.leases.total, o.leases.total.value)),
        ("leases active", fig_link(o.leases.active, o.leases.active.value)),
        ("GPUs leased now", fig_link(o.leases.active_gpus, o.leases.active_gpus.value)),
        ("tenant payments", fig_link(o.revenue.tenant_paid, money(v(o.revenue.tenant_paid)))),
        ("provider income", fig_link(o.revenue.provider_income, money(v(o.revenue.provider_income)))),
        ("protocol fees", fig_link(o.revenue.protocol_fees, money(v(o.revenue.protocol_fees)))),
        ("leased GPU-hours", fig_link(o.utilization.leased_gpu_seconds,
                                      hours(v(o.utilization.leased_gpu_seconds)))),
        ("registered GPU-hours", fig_link(o.utilization.registered_gpu_seconds,
                                          hours(v(o.utilization.registered_gpu_seconds)))),
        ("utilization", e(pct(o.utilization.utilization))),
        ("stake (active)", fig_link(o.stake.active, stake_amount(v(o.stake.active)))),
        ("stake (unbonding)", fig_link(o.stake.unbonding, stake_amount(v(o.stake.unbonding)))),
        ("slashed", fig_link(o.stake.slashes_amount, stake_amount(v(o.stake.slashes_amount)))
         + " in " + fig_link(o.stake.slashes_count, f"{o.stake.slashes_count.value} slashes")),
        ("jails", fig_link(o.stake.jails_count, o.stake.jails_count.value)),
        ("downtime claimed", fig_link(o.downtime.epochs, f"{o.downtime.epochs.value} epochs") + " in "
         + fig_link(o.downtime.claims, f"{o.downtime.claims.value} claims") + ": "
         + fig_link(o.downtime.forfeited, money(v(o.downtime.forfeited))) + " forfeited, "
         + fig_link(o.downtime.refunds, money(v(o.downtime.refunds))) + " refunded at once"),
    ]
    revenue_items = [(r.key, v(r.tenant_paid) / 10**PAYMENT_DECIMALS, money(v(r.tenant_paid)), r.tenant_paid)
                     for r in o.revenue_by_day]
    util_items = [(u.key, u.utilization or 0.0,
                   f"{pct(u.utilization)} ({hours(v(u.leased_gpu_seconds))} of "
                   f"{hours(v(u.registered_gpu_seconds))})", u.leased_gpu_seconds)
                  for u in o.utilization_by_day]
    charts = ('<div class="charts">'
              + bar_chart("revenue-chart", f"Tenant payments per day ({PAYMENT_SYMBOL})", revenue_items)
              + line_chart("utilization-chart", "GPU utilization per day (leased / registered)", util_items)
              + "</div>")
    revenue_rows = [[e(r.key), fig_link(r.tenant_paid, money(v(r.tenant_paid))),
                     fig_link(r.provider_income, money(v(r.provider_income))),
                     fig_link(r.protocol_fees, money(v(r.protocol_fees)))] for r in o.revenue_by_day]
    util_rows = [[e(u.key), fig_link(u.leased_gpu_seconds, hours(v(u.leased_gpu_seconds))),
                  fig_link(u.registered_gpu_seconds, hours(v(u.registered_gpu_seconds))),
                  e(pct(u.utilization))] for u in o.utilization_by_day]
    model_rows = [[e(u.key or "(any)"), fig_link(u.leased_gpu_seconds, hours(v(u.leased_gpu_seconds))),
                   fig_link(u.registered_gpu_seconds, hours(v(u.registered_gpu_seconds))),
                   e(pct(u.utilization))] for u in o.utilization_by_model]
    price_rows = [[e(p.model or "(any)"), fig_link(p.count, p.count.value),
                   *(fig_link(getattr(p, label), money(v(getattr(p, label)))) for label in PERCENTILES),
                   e(money(int(p.spread)))] for p in o.prices]
    return (f"<p class='muted'>Every figure is recomputed from the indexed chain events up to final block "
            f"{e(o.block)} (<span class='mono'>{e(o.block_hash)}</span>); click a value to see its "
            f"transactions.</p>"
            + kv(totals) + charts
            + "<h2>Revenue per day (UTC)</h2>"
            + table(["day", "tenant payments", "provider income", "protocol fees"], revenue_rows, {1, 2, 3},
                    "revenue")
            + "<h2>Utilization per day (UTC)</h2>"
            + table(["day", "leased", "registered", "utilization"], util_rows, {1, 2, 3}, "utilization")
            + "<h2>Utilization per GPU model</h2>"
            + table(["GPU model", "leased", "registered", "utilization"], model_rows, {1, 2, 3}, "models")
            + f"<h2>Price per GPU-hour by model ({PAYMENT_SYMBOL}, accepted bids)</h2>"
            + table(["GPU model", "leases", *PERCENTILES, "spread (max-min)"], price_rows,
                    {1, 2, 3, 4, 5, 6, 7}, "prices")
            + "<h2>Providers</h2>" + providers_table(snap, providers)
            + "<h2>Uptime, probes, outages and reliability per provider</h2>"
            + scores_table(o.provider_scores))



def providers_html(snap: Snapshot, providers: list[db.Provider]) -> str:
    return (providers_table(snap, providers) + "<h2>Uptime, probes, outages and reliability</h2>"
            + scores_table(provider_scores(snap.figures)))


def provider_html(snap: Snapshot, explorer: Explorer, p: db.Provider, leases: list[db.Lease],
                  payments: list[db.Payment]) -> str:
    out = provider_out(snap, p)
    n = lambda f: int(f.value)  # noqa: E731
    facts = kv([
        ("address", f'<span class="mono" id="address">{e(p.address)}</span>'),
        ("GPU model", f'<span id="gpu-model">{e(p.gpu_model)}</span>'),
        ("GPUs", e(p.gpu_count)), ("GPU memory", e(f"{p.gpu_memory_mb:,} MB")),
        ("endpoint", f'<code id="endpoint">{e(p.endpoint)}</code>'),
        ("floor price / GPU-hour", e(money(p.price_floor))),
        ("registered", f"{e(when(p.registered_at))} UTC in {tx_link(p.registered_tx)}"),
        ("jailed until", e(when(p.jailed_until) if p.jailed_until else "-")),
        ("stake (active)", fig_link(out.stake_active, stake_amount(n(out.stake_active)))),
        ("stake (unbonding)", fig_link(out.stake_unbonding, stake_amount(n(out.stake_unbonding)))),
        ("slashed", fig_link(out.stake_slashed, stake_amount(n(out.stake_slashed)))),
        ("withdrawn stake", fig_link(out.stake_withdrawn, stake_amount(n(out.stake_withdrawn)))),
        ("leases", fig_link(out.leases, out.leases.value)
         + " (" + fig_link(out.leases_active, f"{out.leases_active.value} active") + ")"),
        ("tenant payments", fig_link(out.tenant_paid, money(n(out.tenant_paid)))),
        ("income", fig_link(out.provider_income, money(n(out.provider_income)))),
        ("protocol fees", fig_link(out.protocol_fees, money(n(out.protocol_fees)))),
    ])
    u = out.uptime
    uptime = kv([
        ("uptime", '<span id="uptime">' + (fig_link(u.bps, bps_text(u.bps.value)) if u.bps else "-")
         + "</span>"),
        ("heartbeats / epochs owed", beats_of(u)),
    ]) if u else "<p class='muted'>This network has no Uptime contract.</p>"
    strip = epoch_strip(snap, explorer, p.address)
    chart = f'<div class="charts">{epoch_chart(strip)}</div>' if strip else ""
    return (facts + "<h2>Uptime</h2>" + uptime + chart
            + "<h2>Probes, outages and downtime</h2>"
            + liveness_html(out.liveness, explorer.outages(p.address))
            + "<h2>Reliability</h2>" + reliability_html(out.reliability)
            + "<p class='muted'>Computed only from on-chain events; definition and weights in "
              "docs/explorer.md.</p>"
            + "<h2>Leases</h2>" + leases_table(snap, leases)
            + "<h2>Payouts</h2>" + payments_table(payments))


def lease_html(snap: Snapshot, row: db.Lease, events: list[db.Event], payments: list[db.Payment]) -> str:
    out = lease_out(snap, row)
    facts = kv([
        ("status", f'<span id="status">{e(out.status)}</span>'),
        ("order", e(row.order_id)), ("tenant", f'<span class="mono">{e(row.tenant)}</span>'),
        ("provider", provider_link(row.provider)), ("GPU model (at start)", e(row.gpu_model)),
        ("GPUs", e(row.gpus)), ("price / GPU-hour", e(money(row.price_per_gpu_hour))),
        ("budget", e(money(row.budget))), ("start", e(when(row.start)) + " UTC"),
        ("budget runs out", e(when(out.exhausts_at)) + " UTC"),
        ("closed", (e(when(row.closed_at)) + " UTC in " + tx_link(row.closed_tx))
         if row.closed_at is not None else "-"),
        ("paid out (gross)", e(money(row.earned))), ("to provider", e(money(row.provider_income))),
        ("protocol fees", e(money(row.fees))), ("refund", e(money(row.refund))),
        ("result hash", f'<span class="mono">{e(row.result_hash or "-")}</span>'),
        ("created in", tx_link(row.created_tx, short=False)),
    ])
    return (facts + "<h2>Events</h2>" + events_table(events)
            + "<h2>Payouts</h2>" + payments_table(payments))


def tx_html(events: list[db.Event]) -> str:
    first = events[0]
    return (f'<p>Block {e(first.block_number)} (<span class="mono">{e(first.block_hash)}</span>), '
            f"{e(when(first.timestamp))} UTC: {len(events)} indexed event"
            f"{'s' * (len(events) != 1)}.</p>" + events_table(events, with_tx=False))


def figure_html(f: Figure, by_tx: dict[str, list]) -> str:
    """`by_tx` is `Explorer.tx_summaries(f.txs)`: [block, timestamp, event names] per indexed tx."""
    table_rows = [[tx_link(tx, short=False), e(by_tx.get(tx, ["-"])[0]),
                   e(when(by_tx[tx][1]) if tx in by_tx else "-"),
                   e(", ".join(by_tx[tx][2]) if tx in by_tx else "-")] for tx in f.txs]
    return (kv([("figure", f"<code>{e(f.name)}</code>"), ("key", f"<code>{e(f.key)}</code>"),
                ("value", f'<span class="mono" id="value">{e(f.value)}</span>'),
                ("transactions", e(len(f.txs)))])
            + "<p class='muted'>Definition: docs/explorer.md. Values are base units "
              "(TUSD 6 decimals, TSTK 18) or seconds.</p>"
            + table(["transaction", "block", "time (UTC)", "events"], table_rows, {1}, "txs"))
