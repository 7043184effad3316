"""Liveness in the web explorer (issue 15, docs/uptime.md): a provider's uptime by evidence
(heartbeat transaction, receipt claim, validators' report), the inclusion challenges of reports
naming it and their outcome, and a validator's liveness reports and the challenges against them.

The uptime numbers are figures of the snapshot (protocol/uptime_book.py defines them); the lists
are paged in SQL: challenges from `db.LivenessChallenge` (derive_liveness.py), reports from the raw
`LivenessReported` events by their indexed validator."""

from __future__ import annotations

import json

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
from tessera.explorer.web.models_cases import LivenessChallengeOut, LivenessReportOut
from tessera.explorer.web.queries import Explorer, Paged
from tessera.protocol.liveness import indices_of

STATUS_WORDS = {"open": "open: waiting for the beat signature",
                "answered": "answered: the beat was shown, the report stands",
                "resolved": "unanswered: validator slashed, the provider's reported bit revoked"}


# -- reads -------------------------------------------------------------------------------------
def liveness_challenges(explorer: Explorer, column: str, address: str, page_no: int = 1) -> Paged:
    """One page of the inclusion challenges naming `address` as `column` ('provider': reports
    naming it; 'validator': its reports), newest first."""
    field = db.LivenessChallenge.provider if column == "provider" else db.LivenessChallenge.validator
    with Session(explorer.engine) as session:
        rows = explorer.paged(session, select(db.LivenessChallenge).where(field == address)
                              .order_by(db.LivenessChallenge.challenge_id.desc()), page_no,
                              "liveness challenges")
        session.expunge_all()
    return rows


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
def liveness_challenge_out(c: db.LivenessChallenge) -> LivenessChallengeOut:
    return LivenessChallengeOut(
        challenge_id=c.challenge_id, validator=c.validator, provider=c.provider, epoch=str(c.epoch),
        challenger=c.challenger, status=c.status, answer_by_epoch=str(c.answer_by_epoch),
        bond_base_units=str(c.bond), to_answerer_base_units=str(c.to_answerer),
        to_validator_base_units=str(c.to_validator), slashed_base_units=str(c.slashed), opened_at=c.opened_at,
        opened_tx=c.opened_tx, answered_by=c.answered_by, answered_tx=c.answered_tx,
        resolved_tx=c.resolved_tx)


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


def liveness_challenges_table(rows: list[db.LivenessChallenge], who: str = "validator") -> str:
    """Inclusion challenges, with the validator (a provider's page) or the provider (a validator's)."""
    body = []
    for c in rows:
        cls = {"resolved": "bad", "answered": "ok"}.get(c.status, "muted")
        outcome = (f'<span class="{cls} liveness-status">{e(STATUS_WORDS.get(c.status, c.status))}</span>'
                   + (f" (answer by the end of epoch {e(c.answer_by_epoch)})" if c.status == "open" else "")
                   + (answer_paid(c) if c.status == "answered" else ""))
        body.append([e(c.challenge_id),
                     validator_link(c.validator) if who == "validator" else provider_link(c.provider),
                     e(c.epoch), outcome, tstk(c.bond), tstk(c.slashed) if c.slashed else "-",
                     e(when(c.opened_at)), tx_link(c.opened_tx), tx_link(c.answered_tx or c.resolved_tx)])
    return table(["challenge", who, "epoch", "outcome", "bond", "validator slashed", "opened", "tx",
                  "answered / resolved in"], body, {0, 2, 4, 5}, "liveness-challenges")


def answer_paid(c: db.LivenessChallenge) -> str:
    """Who the answered challenge's bond went to (ChallengeAnswered's to_answerer and to_validator)."""
    if not c.to_answerer:
        return f"; bond {tstk(c.to_validator)} to the validator"
    return (f"; bond {tstk(c.to_answerer)} to the answerer <span class='answerer'>"
            f"{address_text(c.answered_by)}</span>, {tstk(c.to_validator)} to the validator")


def liveness_reports_table(rows: list[db.Event]) -> str:
    body = []
    for row in rows:
        r = liveness_report_out(row)
        body.append([e(r.epoch), e(r.providers_named), short_hash(r.words_hash), e(when(r.timestamp)),
                     tx_link(r.tx_hash)])
    return table(["epoch", "providers named", "words hash", "time", "tx"], body, {0, 1}, "liveness-reports")


def provider_liveness_html(path: str, challenges: Paged) -> str:
    return ("<h2 id='liveness'>Liveness challenges of reports naming it</h2>"
            "<p class='muted'>Anyone may bond that a validator's liveness report named this provider "
            "without holding its signed beat; unless the beat is shown in time the validator is slashed "
            "and the epoch's reported bit revoked (docs/uptime.md).</p>"
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
