"""HTML sections shared by the pages: the provider, lease, payout, event and outage tables, the
per-provider scores, and the liveness and reliability breakdowns. Every value links to its figure.
"""

from __future__ import annotations

from tessera.explorer import db
from tessera.explorer.web.markup import (
    bps_text,
    e,
    fig_link,
    kv,
    lease_link,
    provider_link,
    table,
    tusd,
    tx_link,
    when,
)
from tessera.explorer.web.models import (
    LivenessOut,
    OutageOut,
    ProviderOut,
    ProviderScore,
    ReliabilityOut,
    UptimeOut,
)
from tessera.explorer.web.outputs import lease_out
from tessera.explorer.web.queries import Snapshot
from tessera.protocol import reliability


def beats_of(u: UptimeOut) -> str:
    """'up / epochs owed' (+ pending), each linked to its figure."""
    pending = int(u.pending.value)
    return (fig_link(u.up, u.up.value) + " / " + fig_link(u.epochs, u.epochs.value)
            + (" (" + fig_link(u.pending, f"{pending} pending") + ")" if pending else ""))


def probes_of(lv: LivenessOut) -> str:
    return ('<span class="probes">' + fig_link(lv.probes_answered, lv.probes_answered.value) + " / "
            + fig_link(lv.probes_missed, lv.probes_missed.value) + "</span>")


def outages_of(lv: LivenessOut) -> str:
    return ('<span class="outages">' + fig_link(lv.outages, lv.outages.value) + " ("
            + fig_link(lv.outage_epochs, f"{lv.outage_epochs.value} epochs") + ")</span>")


def downtime_of(lv: LivenessOut) -> str:
    return ('<span class="downtime">' + fig_link(lv.downtime_epochs, f"{lv.downtime_epochs.value} epochs")
            + ", " + fig_link(lv.downtime_forfeited) + "</span>")


def scores_table(scores: list[ProviderScore]) -> str:
    """Uptime, probes, outages, downtime and reliability per provider; every value links to its
    figure's transactions."""
    rows = []
    for s in scores:
        r, u, lv = s.reliability, s.uptime, s.liveness
        uptime_cells = ["-", "-"]
        if u:
            uptime_cells = [beats_of(u), fig_link(u.bps, bps_text(u.bps.value)) if u.bps else "-"]
        rows.append([provider_link(s.address), *uptime_cells, probes_of(lv), outages_of(lv), downtime_of(lv),
                     fig_link(r.finished, r.finished.value), fig_link(r.failed, r.failed.value),
                     fig_link(r.slashes, r.slashes.value), fig_link(r.jails, r.jails.value),
                     fig_link(r.age_seconds, f"{int(r.age_seconds.value) / 86_400:,.1f} d"),
                     '<span class="score">' + fig_link(r.bps, bps_text(r.bps.value)) + "</span>"])
    return table(["provider", "up / epochs owed", "uptime (not smoothed)", "probes answered / missed",
                  "outages reported", "downtime claimed", "leases finished", "leases failed", "slashes",
                  "jailings", "age", "reliability"], rows, set(range(1, 12)), "reliability")


def outages_table(outages: list[OutageOut]) -> str:
    rows = [[e(o.first_epoch), e(o.last_epoch), e(when(o.jailed_until)),
             f'<span class="mono">{e(o.reporter)}</span>', e(when(o.timestamp)), tx_link(o.tx_hash)]
            for o in outages]
    return table(["first epoch", "last epoch", "jailed until", "reported by", "time", "tx"], rows,
                 {0, 1}, "outage-reports")


def liveness_html(lv: LivenessOut, outages: list[OutageOut]) -> str:
    """Probes by validators, outages reported (each a jailing) and downtime claimed by tenants."""
    facts = kv([
        ("probes answered / missed", probes_of(lv)),
        ("outages reported", outages_of(lv)),
        ("downtime claimed on its leases", downtime_of(lv)),
    ])
    return (facts + "<p class='muted'>Probes are the validators' word, summed as posted "
            "(docs/validators.md); an outage is <code>jail_after</code> final epochs not up (no "
            "heartbeat, receipt claim or unrevoked validators' report), reported by anyone; downtime "
            "is pay for such epochs refunded to tenants "
            "(docs/uptime.md).</p>" + outages_table(outages))


def reliability_html(r: ReliabilityOut) -> str:
    """The score and each part with its weight, as docs/explorer.md defines them."""
    weights = reliability.WEIGHT_UPTIME + reliability.WEIGHT_COMPLETION + reliability.WEIGHT_TENURE
    rows = [
        ["uptime (smoothed)", fig_link(r.uptime_bps, bps_text(r.uptime_bps.value)),
         e(f"× {reliability.WEIGHT_UPTIME}/{weights}")],
        ["lease completion (smoothed): " + fig_link(r.finished, f"{r.finished.value} finished") + ", "
         + fig_link(r.failed, f"{r.failed.value} failed"),
         fig_link(r.completion_bps, bps_text(r.completion_bps.value)),
         e(f"× {reliability.WEIGHT_COMPLETION}/{weights}")],
        ["tenure: " + fig_link(r.age_seconds, f"{int(r.age_seconds.value) / 86_400:,.1f} days registered"),
         fig_link(r.tenure_bps, bps_text(r.tenure_bps.value)), e(f"× {reliability.WEIGHT_TENURE}/{weights}")],
        ["penalty: " + fig_link(r.slashes, f"{r.slashes.value} slashes") + ", "
         + fig_link(r.jails, f"{r.jails.value} jailings"),
         fig_link(r.penalty_bps, ("−" if int(r.penalty_bps.value) else "") + bps_text(r.penalty_bps.value)),
         e(f"{reliability.SLASH_PENALTY_BPS} bps per slash, {reliability.JAIL_PENALTY_BPS} per jailing")],
        ["<b>reliability</b>", f'<b id="reliability">{fig_link(r.bps, bps_text(r.bps.value))}</b>',
         e(f"a new provider scores {bps_text(reliability.NEW_PROVIDER_BPS)}")],
    ]
    return table(["part", "value", "weight"], rows, {1}, "score-parts")


def providers_table(providers: list[db.Provider], outs: list[ProviderOut]) -> str:
    """Offers and stake of `providers`, with their `provider_out`s (same order)."""
    rows = []
    for p, out in zip(providers, outs, strict=True):
        rows.append([provider_link(p.address), e(p.gpu_model), e(p.gpu_count),
                     tusd(p.price_floor), fig_link(out.leases), fig_link(out.provider_income),
                     fig_link(out.stake_active), fig_link(out.stake_slashed)])
    return table(["provider", "model", "GPUs", "floor / GPU-h", "leases", "income", "stake", "slashed"],
                 rows, {2, 3, 4, 5, 6, 7}, "providers")


def leases_table(snap: Snapshot, leases: list[db.Lease]) -> str:
    rows = []
    for row in leases:
        out = lease_out(snap, row)
        rows.append([lease_link(row.lease_id), e(out.status), e(row.gpu_model), e(row.gpus),
                     tusd(row.price_per_gpu_hour), tusd(row.budget), tusd(row.earned),
                     e(when(row.start)), tx_link(row.created_tx)])
    return table(["lease", "status", "model", "GPUs", "price / GPU-h", "budget", "paid out",
                  "start", "created in"], rows, {3, 4, 5, 6}, "leases")


def payments_table(payments: list[db.Payment]) -> str:
    rows = [[tx_link(p.tx_hash), e(p.block_number), e(when(p.timestamp)), e(p.kind), lease_link(p.lease_id),
             tusd(p.provider_amount), tusd(p.fee)] for p in payments]
    return table(["tx", "block", "time", "kind", "lease", "to provider", "fee"], rows, {1, 5, 6},
                 "payments")
