"""Page bodies for a lease (rounds, settlement, challenges, votes, money that adds up to the budget),
a challenge, a validator, and the paged lists of leases, challenges and validators."""

from __future__ import annotations

from tessera.explorer import db
from tessera.explorer.web.liveness import validator_liveness_html
from tessera.explorer.web.markup import (
    address_text,
    challenge_link,
    e,
    kv,
    lease_link,
    list_pager,
    pager,
    provider_link,
    short_hash,
    span,
    table,
    tstk,
    tusd,
    tx_link,
    when,
)
from tessera.explorer.web.outputs import is_cpu, lease_out
from tessera.explorer.web.outputs_cases import lease_ledger
from tessera.explorer.web.queries import ChallengeView, LeaseView, Paged, Snapshot
from tessera.explorer.web.sections import payments_table
from tessera.explorer.web.tables import (
    challenges_table,
    events_table,
    ledger_html,
    rounds_table,
    settlements_table,
    slashes_table,
    validators_table,
    verdict_html,
    votes_table,
)


def time_left_html(snap: Snapshot, row: db.Lease) -> str:
    """'2 h 13 min (the budget runs out at …)' for an active lease; why not, otherwise."""
    out = lease_out(snap, row)
    if out.status == "closed":
        return "- (closed)"
    if out.status == "exhausted":
        return f"none: the budget ran out at {e(when(out.exhausts_at))}"
    return (f'<span id="time-left" title="{out.time_left_s:,} s">{e(span(out.time_left_s))}</span> '
            f"(the budget runs out at {e(when(out.exhausts_at))})")


def lease_html(snap: Snapshot, view: LeaseView) -> str:
    row = view.lease
    out = lease_out(snap, row)
    facts = kv([
        ("status", f'<span id="status">{e(out.status)}</span>'),
        ("time left", time_left_html(snap, row)),
        ("order", e(row.order_id) + (" (a verified job: rounds below)" if row.verified else "")),
        ("tenant", address_text(row.tenant)),
        ("provider", provider_link(row.provider)), ("model (at start)", e(row.gpu_model)),
        ("CPUs" if is_cpu(row.gpu_model) else "GPUs", e(row.gpus)),
        ("price / GPU-hour", tusd(row.price_per_gpu_hour)),
        ("budget", tusd(row.budget)), ("start", e(when(row.start))),
        ("closed", (e(when(row.closed_at)) + " in " + tx_link(row.closed_tx))
         if row.closed_at is not None else "-"),
        ("result hash", short_hash(row.result_hash)),
        ("created in", tx_link(row.created_tx, short=False)),
    ])
    ledger = lease_ledger(view, snap.as_of)
    money = (ledger_html(ledger) if ledger else
             "<p class='err'>This lease's events are incomplete: its money cannot be accounted.</p>")
    path = f"/leases/{row.lease_id}"
    parts = [facts, "<h2 id='money'>Money</h2>", money]
    if row.verified or view.rounds or view.challenges.total:
        parts += ["<h2>Rounds</h2><p class='muted'>The job's round roots (Verification) and what became of "
                  "this lease's pay for each round (Settlement).</p>", rounds_table(view),
                  "<h2 id='settlements'>Settlement</h2>",
                  list_pager(path, view.settlement_page, "settlement events", "settlements"),
                  settlements_table(view.settlement_page.rows, view.rounds),
                  "<h2 id='challenges'>Challenges</h2>",
                  list_pager(path, view.challenges, "challenges", "challenges"),
                  challenges_table(view.challenges.rows, with_lease=False)]
        for c in view.challenges.rows:
            slashes, votes = view.slashes[c.challenge_id], view.votes[c.challenge_id]
            link = challenge_link(c.challenge_id)
            parts += [f"<h3>{link}: {verdict_html(c)}</h3>", votes_table(votes.rows)]
            if votes.pages > 1:
                parts.append(f"<p class='pager'>the first {len(votes.rows):,} of {votes.total:,} votes: "
                             f"all on {link}</p>")
            if slashes:
                parts.append(slashes_table(slashes))
    parts += ["<h2 id='payments'>Payouts</h2>", list_pager(path, view.payments, "payouts", "payments"),
              payments_table(view.payments.rows),
              "<h2 id='events'>Events</h2>", list_pager(path, view.events, "events"),
              events_table(view.events.rows), list_pager(path, view.events, "events")]
    return "".join(parts)


def challenge_html(view: ChallengeView) -> str:
    c = view.challenge
    split = [(label, tstk(getattr(c, part))) for part, label in (
        ("slashed", "slashed from the provider"), ("to_voters", "to the winning voters"),
        ("to_challenger", "to the challenger"), ("to_tenant", "to the tenant"), ("burned", "burned"),
        ("bond_returned", "bond returned to the challenger"), ("bond_to_provider", "bond to the provider"))
        if getattr(c, part)]
    facts = kv([
        ("verdict", verdict_html(c)),
        ("lease", lease_link(c.lease_id)), ("job (order)", e(c.job)), ("round", e(c.round_index)),
        ("provider", provider_link(c.provider)), ("challenger", address_text(c.challenger)),
        ("result hash", short_hash(c.result_hash)), ("evidence", short_hash(c.evidence)),
        ("bond", tstk(c.bond)), ("quorum (stake)", tstk(c.quorum)),
        ("votes", e(f"{c.guilty_votes} guilty / {c.innocent_votes} innocent")),
        ("stake voting guilty / innocent", tstk(c.guilty_stake) + " / " + tstk(c.innocent_stake)),
        ("opened", e(when(c.opened_at)) + " in " + tx_link(c.opened_tx)),
        ("answered by the provider", tx_link(c.answered_tx) if c.answered_tx else "no"),
        ("voting deadline", e(when(c.deadline))),
        ("resolved", (e(when(c.resolved_at)) + " in " + tx_link(c.resolved_tx))
         if c.resolved_tx else "not yet"),
        *split,
    ])
    path = f"/challenges/{c.challenge_id}"
    return (facts + "<h2 id='votes'>Votes</h2>" + list_pager(path, view.votes, "votes", "votes")
            + votes_table(view.votes.rows)
            + "<h2>Slash</h2>"
            + (slashes_table(view.slashes) if view.slashes else "<p class='muted'>none</p>")
            + "<h2 id='events'>Events</h2>" + list_pager(path, view.events, "events")
            + events_table(view.events.rows) + list_pager(path, view.events, "events")
            + ("<h2>The registry's events in the verdict's transaction</h2>"
               + events_table(view.verdict_events) if view.verdict_events else ""))


def leases_list_html(snap: Snapshot, rows: list[db.Lease], page_no: int, pages: int, total: int) -> str:
    body = []
    for row in rows:
        out = lease_out(snap, row)
        left = span(out.time_left_s) if out.time_left_s is not None else "-"
        body.append([lease_link(row.lease_id), e(out.status), e(left), provider_link(row.provider),
                     e("yes" if row.verified else "no"), e(row.gpus), tusd(row.price_per_gpu_hour),
                     tusd(row.budget), tusd(row.earned), tusd(row.refund) if row.refund else "-",
                     e(when(row.start))])
    return (pager("/leases", page_no, pages, total, "leases")
            + table(["lease", "status", "time left", "provider", "verified", "GPUs", "price / GPU-h",
                     "budget", "paid out", "refunded at close", "start"], body, {5, 6, 7, 8, 9}, "lease-list")
            + pager("/leases", page_no, pages, total, "leases"))


def challenges_list_html(rows: list[db.Challenge], page_no: int, pages: int, total: int) -> str:
    return (pager("/challenges", page_no, pages, total, "challenges") + challenges_table(rows)
            + pager("/challenges", page_no, pages, total, "challenges"))


def validators_html(validators: list[db.Validator]) -> str:
    return ("<p class='muted'>Validators stake TSTK to vote on challenges of training rounds, to report "
            "providers' hardware (docs/validators.md) and providers' liveness (docs/uptime.md); a vote "
            "or a challenged liveness report locks their stake until the verdict.</p>"
            + validators_table(validators))


def validator_html(v: db.Validator, votes: Paged, entries: Paged, slashes: Paged,
                   reports: Paged, liveness: Paged) -> str:
    """Its votes, hardware entries, liveness reports, the inclusion challenges against them and its
    slashes (an unanswered challenge's among them): one page each, newest first (`?votes=N`, ...)."""
    path = f"/validators/{v.address}"
    facts = kv([
        ("address", f'<span class="mono" id="address">{e(v.address)}</span>'),
        ("stake", tstk(v.stake)), ("unbonding", tstk(v.unbonding)
                                   + (f" (released at {e(when(v.release_at))})" if v.unbonding else "")),
        ("withdrawn", tstk(v.withdrawn)), ("slashed", tstk(v.slashed) + f" in {v.slashes} slashes"),
        ("endpoint", f"<code>{e(v.endpoint or '-')}</code>"),
        ("locked until", e(when(v.locked_until)) if v.locked_until else "-"),
        ("registered", e(when(v.registered_at)) + " in " + tx_link(v.registered_tx)),
    ])
    rows = [[provider_link(h.provider), e(h.epoch), e(h.kind),
             e({1: "late", 2: "wrong", 3: "no answer"}.get(h.outcome, "-") if h.kind == "report"
               else ("pass" if h.passed else "fail") if h.kind == "vote" else "-"),
             tstk(h.amount), e(when(h.timestamp)), tx_link(h.tx_hash)] for h in entries.rows]
    return (facts + "<h2 id='votes'>Votes on challenges</h2>"
            + list_pager(path, votes, "votes", "votes", True)
            + votes_table(votes.rows, with_challenge=True)
            + "<h2 id='hardware'>Hardware reports, jury votes and rewards</h2>"
            + list_pager(path, entries, "entries", "hardware", True)
            + table(["provider", "epoch", "action", "outcome", "weight or reward", "time", "tx"], rows,
                    {1, 4}, "hardware-entries")
            + validator_liveness_html(path, reports, liveness)
            + "<h2 id='slashes'>Slashes</h2>" + list_pager(path, slashes, "slashes", "slashes", True)
            + slashes_table(slashes.rows))
