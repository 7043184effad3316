"""HTML tables of events (args in their units), round roots, settlement, challenges, votes, slashes,
hardware cases and validators, and a lease's money section (`protocol.ledger`)."""

from __future__ import annotations

import json

from tessera.explorer import db
from tessera.explorer.derive import CHALLENGE_STATUS, HARDWARE_OUTCOMES
from tessera.explorer.web.markup import (
    address_text,
    amount,
    bps_text,
    challenge_link,
    e,
    lease_link,
    provider_link,
    short_hash,
    span,
    table,
    tstk,
    tusd,
    tx_link,
    validator_link,
    when,
)
from tessera.explorer.web.outputs_cases import after_last_root, round_settlement
from tessera.explorer.web.queries import LeaseView
from tessera.explorer.web.units import DECIMALS, PROVIDER_ARGS, VALIDATOR_ARGS, arg_unit
from tessera.protocol.ledger import LeaseLedger
from tessera.protocol.liveness import indices_of

VERDICTS = {"open": "open: voting", "upheld": "guilty (upheld)", "rejected": "innocent (rejected)",
            "expired": "no quorum (expired)"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def arg_html(contract: str, event: str, name: str, value) -> str:
    """One event arg for a person: amounts in their token, times as dates, durations, links to
    providers, validators, leases and challenges; hashes shortened with the whole in a tooltip."""
    unit = arg_unit(contract, event, name)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_int(value):
        if unit in DECIMALS:
            return amount(value, unit)
        if unit == "time":
            return e(when(value)) if value else "0 (none)"
        if unit == "seconds":
            return f'<span title="{value:,} s">{e(span(value))}</span>'
        if unit == "bps":
            return e(bps_text(value))
        if name == "lease_id":
            return lease_link(value)
        if name == "challenge_id" and contract == "Verification":
            return challenge_link(value)       # Uptime's inclusion challenges are numbered apart
        if name == "outcome" and contract == "Verification":
            return e(f"{value}: {VERDICTS.get(CHALLENGE_STATUS.get(value, ''), '?')}")
        if name == "outcome" and contract == "HardwareReports":
            return e(f"{value}: {HARDWARE_OUTCOMES.get(value, '?')}")
        return e(value)          # ids, epochs, rounds, counts: as the chain has them
    if isinstance(value, str) and value.startswith("0x"):
        if len(value) == 42:
            if name in PROVIDER_ARGS:
                return provider_link(value)
            if name in VALIDATOR_ARGS:
                return validator_link(value)
            return address_text(value)
        if len(value) == 66:
            return short_hash(value)
    if isinstance(value, list) and contract == "Uptime" and name in ("words", "named"):
        named = indices_of(v for v in value if _is_int(v))
        shown = ", ".join(str(i) for i in named[:20]) + (", …" if len(named) > 20 else "")
        return e(f"{len(named)} providers named (registry indices {shown or 'none'})")
    if isinstance(value, list):
        return e(", ".join(str(v) for v in value))
    return e(value)


def args_html(ev: db.Event) -> str:
    args = json.loads(ev.args)
    return ('<div class="args">' + "".join(
        f"<div><b>{e(name)}</b>: {arg_html(ev.contract, ev.event, name, args[name])}</div>"
        for name in sorted(args)) + "</div>")


def events_table(events: list[db.Event], with_tx: bool = True) -> str:
    rows = [[*([tx_link(ev.tx_hash)] if with_tx else []), e(ev.block_number), e(ev.log_index),
             e(when(ev.timestamp)), e(ev.contract), f'<span class="event">{e(ev.event)}</span>',
             args_html(ev)] for ev in events]
    return table([*(["tx"] if with_tx else []), "block", "log", "time", "contract", "event", "args"],
                 rows, set(), "events")


def rounds_table(view: LeaseView) -> str:
    rows = []
    for r in view.rounds:
        state, tx, forfeited = round_settlement(view, r)
        cls = {"refunded": "bad", "released": "ok"}.get(state, "muted")
        why = "" if state != "refunded" else (
            ' <span class="muted why">(forfeited: a cheat proven in another round)</span>' if forfeited
            else ' <span class="muted why">(proven to cheat)</span>')
        challenged = [c for c in view.challenges.rows if c.round_index == r.round_index]
        rows.append([e(r.round_index), short_hash(r.root), e(r.n_leaves), e(when(r.posted_at)),
                     tx_link(r.tx_hash),
                     f'<span class="{cls} settled">{e(state)}</span>' + why
                     + (f" in {tx_link(tx)}" if tx else ""),
                     " ".join(challenge_link(c.challenge_id) + f" ({e(VERDICTS[c.status])})"
                              if c.status in VERDICTS else challenge_link(c.challenge_id)
                              for c in challenged) or "-"])
    return table(["round", "root", "leaves", "posted", "tx", "this lease's pay", "challenges"], rows, {0, 2},
                 "rounds")


def settlements_table(settlements: list[db.Settlement], rounds: list[db.Round]) -> str:
    """Each Settlement event of the lease; a refund says why: its round was proven to cheat, or
    it was forfeited (a cheat proven for the lease in another round: none of its pay still held
    is released), the time after the last root included."""
    rows = []
    for s in settlements:
        if s.kind == "release":
            what = f"rounds {e(s.from_round)} to {e(s.to_round - 1)}" if s.to_round > s.from_round else "time"
            what += f", pay up to {e(when(s.released_until))}"
        elif not s.forfeited:
            what = f"round {e(s.round_index)} proven to cheat"
        else:
            tail = after_last_root(s, rounds)
            what = ("the time after the last root" if tail else f"round {e(s.round_index)}") + \
                " forfeited (a cheat proven in another round)"
        rows.append([e("released" if s.kind == "release" else "refunded"), what, tusd(s.amount),
                     tusd(s.withheld), tusd(s.refund), e(when(s.timestamp)), tx_link(s.tx_hash)])
    return table(["event", "what", "gross pay", "withheld", "refunded to tenant", "time", "tx"], rows,
                 {2, 3, 4}, "settlements")


def votes_table(votes: list[db.Vote], with_challenge: bool = False) -> str:
    rows = [[*([challenge_link(v.challenge_id)] if with_challenge else []), validator_link(v.validator),
             f'<span class="{"bad" if v.guilty else "ok"} vote">'
             f'{"guilty" if v.guilty else "innocent"}</span>',
             tstk(v.weight), tstk(v.reward) if v.reward else "-", e(when(v.voted_at)), tx_link(v.tx_hash)]
            for v in votes]
    return table([*(["challenge"] if with_challenge else []), "validator", "vote", "weight (stake)",
                  "reward claimed", "time", "tx"], rows, {2, 3} if not with_challenge else {3, 4}, "votes")


def verdict_html(c: db.Challenge) -> str:
    cls = {"upheld": "bad", "rejected": "ok"}.get(c.status, "muted")
    return f'<span class="{cls} verdict">{e(VERDICTS.get(c.status, c.status))}</span>'


def challenges_table(challenges: list[db.Challenge], with_lease: bool = True) -> str:
    rows = [[challenge_link(c.challenge_id), *([lease_link(c.lease_id), provider_link(c.provider)]
                                               if with_lease else []),
             e(c.round_index), address_text(c.challenger), tstk(c.bond), verdict_html(c),
             e(f"{c.guilty_votes} guilty / {c.innocent_votes} innocent"),
             tstk(c.slashed) if c.slashed else "-", e(when(c.opened_at)), tx_link(c.opened_tx)]
            for c in challenges]
    return table(["challenge", *(["lease", "provider"] if with_lease else []), "round", "challenger", "bond",
                  "verdict", "votes", "slashed", "opened", "tx"], rows, set(), "challenges")


def cause_html(s: db.Slash) -> str:
    """Why a slash happened: the challenge, the hardware case or the downtime claim of its tx."""
    if s.cause == "challenge" and s.cause_ref:
        return "verdict of " + challenge_link(int(s.cause_ref))
    if s.cause == "hardware" and s.cause_ref:
        epoch = s.cause_ref.rpartition("/")[2]
        return f"hardware reports for epoch {e(epoch)} (validators' quorum)"
    if s.cause == "downtime" and s.cause_ref:
        return "downtime claimed on lease " + lease_link(int(s.cause_ref))
    if s.cause == "liveness" and s.cause_ref:
        return (f"liveness inclusion challenge {e(s.cause_ref)} left unanswered (a report named "
                "providers whose beats were never shown)")
    return "direct slash by " + address_text(s.slasher)


def slashes_table(slashes: list[db.Slash]) -> str:
    rows = [[f'<span class="cause">{cause_html(s)}</span>', tstk(s.amount), address_text(s.recipient),
             e(when(s.timestamp)), tx_link(s.tx_hash)] for s in slashes]
    return table(["cause", "slashed", "sent to", "time", "tx"], rows, {1}, "slashes")


def hardware_table(cases: list[db.HardwareCase]) -> str:
    rows = [[e(h.epoch), e(h.status), e(h.reporters), tstk(h.reported), tstk(h.quorum),
             tstk(h.slashed) if h.slashed else "-", e(when(h.first_at)), tx_link(h.first_tx),
             tx_link(h.resolved_tx)] for h in cases]
    return table(["epoch", "status", "reports", "reported stake", "quorum", "slashed", "first report",
                  "tx", "decided in"], rows, {0, 2}, "hardware")


def validators_table(validators: list[db.Validator]) -> str:
    rows = [[validator_link(v.address), tstk(v.stake), tstk(v.unbonding), tstk(v.slashed), e(v.slashes),
             e(v.votes), e(v.reports), f"<code>{e(v.endpoint or '-')}</code>",
             e(when(v.locked_until)) if v.locked_until else "-", e(when(v.registered_at))]
            for v in validators]
    return table(["validator", "stake", "unbonding", "slashed", "slashes", "votes", "hardware reports",
                  "endpoint", "locked until", "registered"], rows, {1, 2, 3, 4, 5, 6}, "validators")


LEDGER_PARTS = (
    ("provider_paid", "paid to the provider", "Withdrawn and LeaseClosed, net of fees"),
    ("fees", "protocol fees", "to the treasury"),
    ("refunded", "refunded at close", "LeaseClosed.refund"),
    ("downtime_refunded", "refunded for downtime", "DowntimeClaimed.refund"),
    ("round_refunded", "refunded for rounds proven to cheat or forfeited",
     "Settlement RoundRefunded.refund (forfeited: once a cheat is proven for the lease, "
     "every round's pay still held)"),
    ("held", "held for Settlement", "streamed pay not yet released or refunded"),
    ("escrow", "still in escrow", "the rest of an open lease's budget"),
)


LEDGER_TXS = 10     # tx links per ledger part: a lease may have a payout a block (the rest: events below)


def _tx_links(txs: list[str]) -> str:
    more = len(txs) - LEDGER_TXS
    return " ".join(tx_link(t) for t in txs[:LEDGER_TXS]) + (
        f' <span class="muted">and {more:,} more (the payouts and events below)</span>' if more > 0 else "")


def ledger_html(ledger: LeaseLedger) -> str:
    """budget = each part (with the txs behind it) and whether it adds up, then who can claim
    what the Market still holds for the lease."""
    rows = [["<b>budget</b>", f'<b>{tusd(ledger.budget)}</b>', "LeaseCreated and top-ups",
             _tx_links(ledger.txs.get("budget", []))]]
    for part, label, source in LEDGER_PARTS:
        value = getattr(ledger, part)
        of_it = (f' <span class="muted forfeited">(of it {tusd(ledger.forfeited_refunded)} forfeited)</span>'
                 if part == "round_refunded" and ledger.forfeited_refunded else "")
        rows.append([e(("= " if part == "provider_paid" else "+ ") + label),
                     f'<span data-part="{part}">{tusd(value)}</span>' + of_it, e(source),
                     _tx_links(sorted(set(ledger.txs.get(part, []))))])
    verdict = ('<span class="ok" id="adds-up">adds up to the budget</span>' if ledger.adds_up else
               f'<span class="bad" id="adds-up">does not add up: {tusd(ledger.unaccounted)} '
               "unaccounted</span>")
    rows.append(["check", verdict, "", ""])
    claims = [[e(c.party), address_text(c.address) if c.address else "-", tusd(c.amount),
               f"<code>{e(c.call)}</code>"] for c in ledger.claims]
    return (table(["", "TUSD", "from", "txs"], rows, {1}, "ledger")
            + f"<p class='muted'>As of {e(when(ledger.as_of))}. Who can still take what the Market holds "
              "for this lease:</p>"
            + table(["party", "address", "amount", "by calling"], claims, {2}, "claims"))
