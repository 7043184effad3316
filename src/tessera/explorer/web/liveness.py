"""Liveness in the web explorer (issue 15, docs/uptime.md): a provider's uptime by evidence
(heartbeat transaction, receipt claim, validators' report), the inclusion challenges naming it and
their outcome, and a validator's liveness reports and the challenges against them.

The uptime numbers are figures of the snapshot (protocol/uptime_book.py defines them); the lists
are paged in SQL: challenges from `db.LivenessChallenge` and the providers each names from
`db.LivenessNamed` (derive_liveness.py), who showed a named beat from the raw `InclusionAnswered`
events by their indexed provider, reports from the raw `LivenessReported` events by their indexed
validator."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from tessera.explorer import db
from tessera.explorer.web.markup import (
    address_text,
    bps_text,
    e,
    fig_link,
    kv,
    list_pager,
    provider_link,
    short_hash,
    table,
    tstk,
    tx_link,
    validator_link,
    when,
)
from tessera.explorer.web.models import UptimeOut
from tessera.explorer.web.models_cases import LivenessChallengeOut, LivenessNamedOut, LivenessReportOut
from tessera.explorer.web.queries import Explorer, Paged
from tessera.protocol.liveness import indices_of

NAMED_SHOWN = 20        # named providers listed per challenge (the rest: a count)
STATUS_WORDS = {"open": "open: waiting for the beat signatures",
                "answered": "answered: every named beat shown, the report stands",
                "resolved": "unanswered: validator slashed, the unanswered providers' reported bits revoked"}


@dataclass
class NamedView:
    """A provider a challenge names, with the `InclusionAnswered` that showed its beat, if any."""

    registry_index: int
    provider: str | None
    answered_by: str | None = None          # on this challenge
    answered_tx: str | None = None
    to_answerer: int = 0
    shown_on: int | None = None             # another challenge of the epoch that showed it


@dataclass
class LivenessRow:
    challenge: db.LivenessChallenge
    named: list[NamedView] = field(default_factory=list)
    named_more: int = 0


# -- reads -------------------------------------------------------------------------------------
def liveness_challenges(explorer: Explorer, column: str, address: str, page_no: int = 1) -> Paged:
    """One page of the inclusion challenges naming `address` as `column` ('provider': those
    naming it, each with that provider's answer; 'validator': those against its reports, each
    with its first NAMED_SHOWN named providers), newest first."""
    c = db.LivenessChallenge
    if column == "provider":
        query = (select(c).join(db.LivenessNamed, db.LivenessNamed.challenge_id == c.challenge_id)
                 .where(db.LivenessNamed.provider == address))
    else:
        query = select(c).where(c.validator == address)
    with Session(explorer.engine) as session:
        rows = explorer.paged(session, query.order_by(c.challenge_id.desc()), page_no, "liveness challenges")
        rows.rows = [_row(session, challenge, address if column == "provider" else None)
                     for challenge in rows.rows]
        session.expunge_all()
    return rows


def _row(session: Session, c: db.LivenessChallenge, provider: str | None) -> LivenessRow:
    """The challenge with its named providers (only `provider`, if given) and their answers."""
    query = select(db.LivenessNamed).where(db.LivenessNamed.challenge_id == c.challenge_id)
    if provider is not None:
        query = query.where(db.LivenessNamed.provider == provider)
    named = [NamedView(n.registry_index, n.provider) for n in session.scalars(
        query.order_by(db.LivenessNamed.registry_index).limit(NAMED_SHOWN))]
    by_provider = {n.provider: n for n in named if n.provider}
    # A provider's beat is shown once per epoch, on whichever challenge of it came first.
    for ev in [] if not by_provider else session.scalars(select(db.Event).where(
            db.Event.provider.in_(list(by_provider)), db.Event.event == "InclusionAnswered",
            db.Event.contract == "Uptime")):
        a = json.loads(ev.args)
        n = by_provider.get(a.get("provider"))
        if n is None or a.get("epoch") != c.epoch:
            continue
        if a.get("challenge_id") == c.challenge_id:
            n.answered_by, n.answered_tx, n.to_answerer = a["answered_by"], ev.tx_hash, a["to_answerer"]
        else:
            n.shown_on = a.get("challenge_id")
    more = 0 if provider is not None else max(c.named_count - len(named), 0)
    return LivenessRow(c, named, more)


def liveness_reports(explorer: Explorer, validator: str, page_no: int = 1) -> Paged:
    """One page of a validator's `LivenessReported` events, newest first (the index on
    (validator, event, block_number, log_index))."""
    with Session(explorer.engine) as session:
        rows = explorer.paged(session, select(db.Event).where(
            db.Event.validator == validator, db.Event.event == "LivenessReported",
            db.Event.contract == "Uptime")
            .order_by(db.Event.block_number.desc(), db.Event.log_index.desc()), page_no,
            "its liveness reports")
        session.expunge_all()
    return rows


# -- API answers -------------------------------------------------------------------------------
def liveness_challenge_out(row: LivenessRow) -> LivenessChallengeOut:
    c = row.challenge
    return LivenessChallengeOut(
        challenge_id=c.challenge_id, validator=c.validator, epoch=str(c.epoch), challenger=c.challenger,
        status=c.status, answer_by_epoch=str(c.answer_by_epoch), named_count=c.named_count,
        named=[LivenessNamedOut(registry_index=n.registry_index, provider=n.provider,
                                answered_by=n.answered_by, answered_tx=n.answered_tx,
                                to_answerer_base_units=str(n.to_answerer), shown_on_challenge=n.shown_on)
               for n in row.named],
        named_more=row.named_more, answered=c.answered, unanswered=c.unanswered,
        bond_base_units=str(c.bond), paid_base_units=str(c.paid),
        bond_returned_base_units=str(c.bond_returned),
        slashed_base_units=str(c.slashed), to_challenger_base_units=str(c.to_challenger),
        burned_base_units=str(c.burned), opened_at=c.opened_at, opened_tx=c.opened_tx,
        resolved_at=c.resolved_at, resolved_tx=c.resolved_tx)


def liveness_report_out(row: db.Event) -> LivenessReportOut:
    args = json.loads(row.args)
    return LivenessReportOut(validator=args["validator"], epoch=args["epoch"],
                             providers_named=len(indices_of(args["words"])),
                             words_hash=args["words_hash"], block_number=row.block_number,
                             timestamp=row.timestamp, tx_hash=row.tx_hash)


# -- HTML --------------------------------------------------------------------------------------
def uptime_html(u: UptimeOut | None) -> str:
    """A provider's measured uptime, by evidence; every value links to its figure."""
    if u is None:
        return "<p class='muted'>This network has no Uptime contract.</p>"
    return kv([
        ("uptime (up / epochs owed, not smoothed)",
         '<span id="uptime">' + (fig_link(u.bps, bps_text(u.bps.value)) if u.bps else "-") + "</span>"),
        ("up / epochs owed", '<span id="up">' + fig_link(u.up, u.up.value) + "</span> / "
         + fig_link(u.epochs, u.epochs.value)),
        ("up by", fig_link(u.heartbeats, f"{u.heartbeats.value} heartbeat transactions") + ", "
         + fig_link(u.reported, f"{u.reported.value} validators' reports") + ", "
         + fig_link(u.claimed, f"{u.claimed.value} receipt claims")),
        ("down: report revoked", fig_link(u.revoked, f"{u.revoked.value} epochs")
         + " (an unanswered inclusion challenge)"),
        ("pending", '<span id="pending">' + fig_link(u.pending, f"{u.pending.value} epochs")
         + "</span> not final yet (reports, receipt claims and challenges can still change them; "
           "neither up nor down until then)"),
    ])


def liveness_challenges_table(rows: list[LivenessRow], who: str = "validator") -> str:
    """Inclusion challenges, with the validator and the page's provider's beat (a provider's page)
    or the named providers and theirs (a validator's, `who` = 'provider')."""
    body = []
    for row in rows:
        c = row.challenge
        cls = {"resolved": "bad", "answered": "ok"}.get(c.status, "muted")
        outcome = (f'<span class="{cls} liveness-status">{e(STATUS_WORDS.get(c.status, c.status))}</span>'
                   + (f" ({e(c.answered)} of {e(c.named_count)} beats shown so far; answer by the end "
                      f"of epoch {e(c.answer_by_epoch)})" if c.status == "open" else "")
                   + bond_paid(c))
        named = "; ".join(named_html(n, who == "provider") for n in row.named) or "-"
        if row.named_more:
            named += f"; and {row.named_more:,} more"
        body.append([e(c.challenge_id),
                     validator_link(c.validator) if who == "validator" else e(f"{c.named_count:,}"),
                     e(c.epoch), f'<span class="named">{named}</span>', outcome, tstk(c.bond),
                     tstk(c.slashed) if c.slashed else "-", e(when(c.opened_at)), tx_link(c.opened_tx),
                     tx_link(c.resolved_tx)])
    return table(["challenge", who if who == "validator" else "providers named", "epoch",
                  "named provider" if who == "validator" else "named (registry index: beat)", "outcome",
                  "bond", "validator slashed", "opened", "tx", "resolved in"], body, {0, 2, 5, 6},
                 "liveness-challenges")


def named_html(n: NamedView, with_provider: bool) -> str:
    """One named provider and its beat: shown here (by whom, for what fee), elsewhere, or not."""
    if n.answered_by:
        beat = (f"beat shown by <span class='answerer'>{address_text(n.answered_by)}</span> "
                f"({tstk(n.to_answerer)} to the answerer) in {tx_link(n.answered_tx)}")
    elif n.shown_on is not None:
        beat = f"beat shown on inclusion challenge {e(n.shown_on)}"
    else:
        beat = "beat not shown"
    if not with_provider:
        return beat
    who = provider_link(n.provider) if n.provider else e("unregistered")
    return f"#{e(n.registry_index)} {who}: {beat}"


def bond_paid(c: db.LivenessChallenge) -> str:
    """Where the bond and the slash went (ChallengeResolved's split; the answer fees): the bond less
    the fees goes back to the challenger whatever the outcome."""
    if c.status == "open":
        return f"; {tstk(c.paid)} of the bond paid to answerers so far" if c.paid else ""
    paid = f"{tstk(c.paid)} to the answerers, " if c.paid else ""
    if c.status == "answered":
        return f"; bond: {paid}{tstk(c.bond_returned)} back to the challenger"
    return (f"; {e(c.unanswered)} of {e(c.named_count)} beats never shown: validator slashed "
            f"{tstk(c.slashed)} ({tstk(c.to_challenger)} to the challenger, {tstk(c.burned)} burned); "
            f"bond: {paid}{tstk(c.bond_returned)} back to the challenger")


def liveness_reports_table(rows: list[db.Event]) -> str:
    body = []
    for row in rows:
        r = liveness_report_out(row)
        body.append([e(r.epoch), e(r.providers_named), short_hash(r.words_hash), e(when(r.timestamp)),
                     tx_link(r.tx_hash)])
    return table(["epoch", "providers named", "words hash", "time", "tx"], body, {0, 1}, "liveness-reports")


def provider_liveness_html(path: str, challenges: Paged) -> str:
    return ("<h2 id='liveness'>Liveness challenges of reports naming it</h2>"
            "<p class='muted'>Anyone may bond that a validator's liveness report named providers, "
            "this one among them, without holding their signed beats; for each beat not shown in "
            "time the validator is slashed and that provider's reported bit revoked "
            "(docs/uptime.md).</p>"
            + list_pager(path, challenges, "liveness challenges", "liveness", True)
            + liveness_challenges_table(challenges.rows))


def validator_liveness_html(path: str, reports: Paged, challenges: Paged) -> str:
    return ("<h2 id='reports'>Liveness reports</h2><p class='muted'>One bitmap per epoch of the "
            "providers whose signed beats it held (docs/uptime.md).</p>"
            + list_pager(path, reports, "liveness reports", "reports", True)
            + liveness_reports_table(reports.rows)
            + "<h2 id='liveness'>Inclusion challenges against its reports</h2>"
            + list_pager(path, challenges, "liveness challenges", "liveness", True)
            + liveness_challenges_table(challenges.rows, who="provider"))
