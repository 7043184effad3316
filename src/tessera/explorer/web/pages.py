"""The bodies of the HTML pages: overview, providers, one provider, one transaction and one figure's
transactions (leases, challenges and validators: `pages_cases.py`). The routes in `site.py` fetch the
rows and wrap these in `markup.page`.
"""

from __future__ import annotations

from urllib.parse import urlencode

from tessera.explorer import db
from tessera.explorer.web.agents import provider_agents_html, totals_html, tx_agents_html
from tessera.explorer.web.charts import bar_chart, epoch_chart, line_chart
from tessera.explorer.web.liveness import provider_liveness_html, uptime_html
from tessera.explorer.web.markup import (
    e,
    fig_link,
    figure_text,
    hours,
    kv,
    list_pager,
    money,
    pager,
    pct,
    table,
    tusd,
    tx_link,
    when,
)
from tessera.explorer.web.outputs import epoch_strip, is_cpu, overview, provider_out, provider_score
from tessera.explorer.web.queries import Explorer, Paged, Snapshot
from tessera.explorer.web.sections import (
    leases_table,
    liveness_html,
    payments_table,
    providers_table,
    reliability_html,
    scores_table,
)
from tessera.explorer.web.tables import challenges_table, events_table, hardware_table, slashes_table
from tessera.explorer.web.units import figure_unit
from tessera.protocol.figures import PERCENTILES, Figure
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL


def overview_html(snap: Snapshot, providers: list[db.Provider], total: int) -> str:
    """The totals, charts and per-day tables, and the first page of providers (`total` in all:
    the rest on /providers)."""
    o = overview(snap)
    v = lambda f: int(f.value)  # noqa: E731
    totals = [
        ("providers registered", fig_link(o.providers, o.providers.value)),
        ("orders", fig_link(o.orders, o.orders.value)),
        ("leases", fig_link(o.leases.total, o.leases.total.value)),
        ("leases active", fig_link(o.leases.active, o.leases.active.value)),
        ("GPUs leased now", fig_link(o.leases.active_gpus, o.leases.active_gpus.value)),
        ("tenant payments", fig_link(o.revenue.tenant_paid)),
        ("provider income", fig_link(o.revenue.provider_income)),
        ("protocol fees", fig_link(o.revenue.protocol_fees)),
        ("agent payments to providers", fig_link(o.agent_payments.count,
                                                 f"{o.agent_payments.count.value} payments")
         + ", " + fig_link(o.agent_payments.amount) + " (beside lease revenue; self-payments not "
         "excluded: <a href='/agents'>agents</a>)"),
        ("leased GPU time", fig_link(o.utilization.leased_gpu_seconds)),
        ("registered GPU time", fig_link(o.utilization.registered_gpu_seconds)),
        ("utilization", e(pct(o.utilization.utilization))),
        ("stake (active)", fig_link(o.stake.active)),
        ("stake (unbonding)", fig_link(o.stake.unbonding)),
        ("slashed", fig_link(o.stake.slashes_amount)
         + " in " + fig_link(o.stake.slashes_count, f"{o.stake.slashes_count.value} slashes")),
        ("jails", fig_link(o.stake.jails_count, o.stake.jails_count.value)),
        ("downtime claimed", fig_link(o.downtime.epochs, f"{o.downtime.epochs.value} epochs") + " in "
         + fig_link(o.downtime.claims, f"{o.downtime.claims.value} claims") + ": "
         + fig_link(o.downtime.forfeited) + " forfeited, "
         + fig_link(o.downtime.refunds) + " refunded at once"),
    ]
    revenue_items = [(r.key, v(r.tenant_paid) / 10**PAYMENT_DECIMALS, money(v(r.tenant_paid)), r.tenant_paid)
                     for r in o.revenue_by_day]
    util_items = [(u.key, u.utilization or 0.0,
                   f"{pct(u.utilization)} ({hours(v(u.leased_gpu_seconds))} of "
                   f"{hours(v(u.registered_gpu_seconds))})", u.leased_gpu_seconds)
                  for u in o.utilization_by_day]
    charts = ('<div class="charts">'
              + bar_chart("revenue-chart", f"Tenant payments per day ({PAYMENT_SYMBOL})", revenue_items,
                          lambda x: money(round(x * 10**PAYMENT_DECIMALS)).removesuffix(" " + PAYMENT_SYMBOL))
              + line_chart("utilization-chart", "GPU utilization per day (leased / registered)", util_items)
              + "</div>")
    revenue_rows = [[e(r.key), fig_link(r.tenant_paid), fig_link(r.provider_income),
                     fig_link(r.protocol_fees)] for r in o.revenue_by_day]
    util_rows = [[e(u.key), fig_link(u.leased_gpu_seconds), fig_link(u.registered_gpu_seconds),
                  e(pct(u.utilization))] for u in o.utilization_by_day]
    model_rows = [[e(u.key or "(any)"), fig_link(u.leased_gpu_seconds), fig_link(u.registered_gpu_seconds),
                   e(pct(u.utilization))] for u in o.utilization_by_model]
    price_rows = [[e(p.model or "(any)"), fig_link(p.count, p.count.value),
                   *(fig_link(getattr(p, label)) for label in PERCENTILES), tusd(int(p.spread_base_units))]
                  for p in o.prices]
    return (f"<p class='muted'>Every figure is recomputed from the indexed chain events up to final block "
            f"{e(o.block)} (<span class='mono'>{e(o.block_hash)}</span>); click a value to see its "
            f"transactions. Revenue counts: {e(o.revenue_includes)}.</p>"
            + kv(totals) + charts
            + "<h2>Revenue per day (UTC)</h2>"
            + table(["day", "tenant payments", "provider income", "protocol fees"], revenue_rows, {1, 2, 3},
                    "revenue")
            + "<h2>Utilization per day (UTC)</h2>"
            + table(["day", "leased", "registered", "utilization"], util_rows, {1, 2, 3}, "utilization")
            + "<h2>Utilization per model</h2>"
            + table(["model", "leased", "registered", "utilization"], model_rows, {1, 2, 3}, "models")
            + f"<h2>Price per GPU-hour by model ({PAYMENT_SYMBOL}, accepted bids)</h2>"
            + table(["model", "leases", *PERCENTILES, "spread (max-min)"], price_rows,
                    {1, 2, 3, 4, 5, 6, 7}, "prices")
            + "<h2>Agent payments (beside lease revenue)</h2>" + totals_html(o.agent_payments)
            + "<h2>Providers</h2>"
            + (f"<p class='muted'>The first {len(providers)} of {total:,} in registration order: "
               f"<a href='/providers?page=2'>more</a></p>" if total > len(providers) else "")
            + _providers_tables(snap, providers, "Uptime, probes, outages and reliability per provider"))



def providers_html(snap: Snapshot, providers: Paged) -> str:
    """One page of the providers (registration order): offers and stake, then the same
    providers' uptime, probes, outages and reliability."""
    links = pager("/providers", providers.page, providers.pages, providers.total, "providers",
                  newest_first=False)
    return (links + _providers_tables(snap, providers.rows, "Uptime, probes, outages and reliability")
            + links)


def _providers_tables(snap: Snapshot, providers: list[db.Provider], scores_title: str) -> str:
    """A page of providers: their offers and stake, then their uptime, probes and reliability."""
    outs = [provider_out(snap, p) for p in providers]
    return (providers_table(providers, outs) + f"<h2>{e(scores_title)}</h2>"
            + scores_table([provider_score(out) for out in outs]))


def provider_html(snap: Snapshot, explorer: Explorer, p: db.Provider, leases: Paged, payments: Paged,
                  cases: tuple[Paged, Paged, Paged], agent_payments: Paged, liveness: Paged) -> str:
    """Every list (leases, payouts, agent payments, slashes, challenges, hardware cases, liveness
    challenges) is one page of it, with its own `?<list>=N` pager: anyone can grow them."""
    out = provider_out(snap, p)
    path = f"/providers/{p.address}"
    cpu = is_cpu(p.gpu_model)     # a CPU provider registers its system memory, not a GPU's
    facts = kv([
        ("address", f'<span class="mono" id="address">{e(p.address)}</span>'),
        ("CPU model" if cpu else "GPU model", f'<span id="gpu-model">{e(p.gpu_model)}</span>'),
        ("CPUs" if cpu else "GPUs", e(p.gpu_count)),
        ("memory" if cpu else "GPU memory", f'<span id="memory">{e(f"{p.gpu_memory_mb:,} MB")}</span>'),
        ("endpoint", f'<code id="endpoint">{e(p.endpoint)}</code>'),
        ("floor price / GPU-hour", tusd(p.price_floor)),
        ("registered", f"{e(when(p.registered_at))} in {tx_link(p.registered_tx)}"),
        ("jailed until", e(when(p.jailed_until) if p.jailed_until else "-")),
        ("stake locked until", e(when(p.locked_until)) if p.locked_until else "-"),
        ("stake (active)", fig_link(out.stake_active)),
        ("stake (unbonding)", fig_link(out.stake_unbonding)),
        ("slashed", '<span id="slashed">' + fig_link(out.stake_slashed) + "</span>"),
        ("withdrawn stake", fig_link(out.stake_withdrawn)),
        ("leases", fig_link(out.leases, out.leases.value)
         + " (" + fig_link(out.leases_active, f"{out.leases_active.value} active") + ")"),
        ("tenant payments", fig_link(out.tenant_paid)),
        ("income", fig_link(out.provider_income)),
        ("protocol fees", fig_link(out.protocol_fees)),
        ("agent payments (beside lease revenue)",
         fig_link(out.agent_payments.count, f"{out.agent_payments.count.value} payments") + ", "
         + fig_link(out.agent_payments.amount) + ' (<a href="#agent_payments">list</a>)'),
    ])
    uptime = uptime_html(out.uptime)
    strip = epoch_strip(snap, explorer, p.address)
    chart = f'<div class="charts">{epoch_chart(strip)}</div>' if strip else ""
    slashes, challenges, hw = cases
    return (facts
            + "<h2 id='slashes'>Slashes and why</h2>" + list_pager(path, slashes, "slashes", "slashes", True)
            + slashes_table(slashes.rows)
            + "<h2 id='challenges'>Challenges of its training rounds</h2>"
            + list_pager(path, challenges, "challenges", "challenges", True)
            + challenges_table(challenges.rows)
            + "<h2 id='cases'>Hardware reports against it</h2>"
            + list_pager(path, hw, "hardware cases", "cases", True) + hardware_table(hw.rows)
            + "<h2>Uptime</h2>" + uptime + chart + provider_liveness_html(path, liveness)
            + "<h2>Probes, outages and downtime</h2>"
            + liveness_html(out.liveness, explorer.outages(p.address))
            + "<h2>Reliability</h2>" + reliability_html(out.reliability)
            + "<p class='muted'>Computed only from on-chain events; definition and weights in "
              "docs/explorer.md. Its uptime part is smoothed towards 50 % (a newcomer's prior), so it "
              "differs from the uptime above.</p>"
            + "<h2 id='leases'>Leases</h2>" + list_pager(path, leases, "leases", "leases", True)
            + leases_table(snap, leases.rows)
            + "<h2 id='payments'>Payouts</h2>" + list_pager(path, payments, "payouts", "payments", True)
            + payments_table(payments.rows)
            + provider_agents_html(path, out.agent_payments, agent_payments))


def tx_html(tx: str, events: Paged, agent_payments: list[db.AgentPayment] = ()) -> str:
    """One page of the transaction's decoded events, in log order, args in their units; first
    the agent payments it made, if any."""
    first = events.rows[0]
    count = f"{events.total:,} indexed event{'s' * (events.total != 1)}"
    pager = list_pager(f"/tx/{tx}", events, "events")
    return (f'<p>Block {e(first.block_number)} (<span class="mono">{e(first.block_hash)}</span>), '
            f"{e(when(first.timestamp))}: {count}.</p>" + tx_agents_html(list(agent_payments))
            + "<h2>Events</h2>" + pager + events_table(events.rows, with_tx=False) + pager)


def figure_html(f: Figure, txs: Paged, by_tx: dict[str, list]) -> str:
    """`txs`: one page of the figure's transactions; `by_tx` is `Explorer.tx_summaries` of that
    page: [block, timestamp, event names] per indexed tx."""
    table_rows = [[tx_link(tx, short=False), e(by_tx.get(tx, ["-"])[0]),
                   e(when(by_tx[tx][1]) if tx in by_tx else "-"),
                   e(", ".join(by_tx[tx][2]) if tx in by_tx else "-")] for tx in txs.rows]
    shown, exact = figure_text(f)
    rounded = exact is not None and exact.split(" ")[0] != shown.split(" ")[0]
    path = "/figure?" + urlencode({"name": f.name, "key": f.key})
    pager = list_pager(path, txs, "transactions")
    return (kv([("figure", f"<code>{e(f.name)}</code>"), ("key", f"<code>{e(f.key)}</code>"),
                ("value", f'<span id="value" data-value="{e(f.value)}" title="{e(exact or f.value)}">'
                          f"{e(shown)}</span>" + (f' <span class="muted">(exactly {e(exact)})</span>'
                                                  if rounded else "")),
                ("unit", e(figure_unit(f.name))),
                ("transactions", e(f"{len(f.txs):,}"))])
            + "<p class='muted'>Definition: docs/explorer.md. Transactions sorted by hash.</p>"
            + pager + table(["transaction", "block", "time", "events"], table_rows, {1}, "txs") + pager)
