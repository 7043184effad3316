"""The derived rows of agents' money, one event at a time in chain order (called by
`derive.apply_event`, whose rules they follow):

- entity rows: an AgentBudget grant (`Granted`, `PayeeAllowed`, `GrantPaused`, `GrantRevoked`:
  kind 'grant') and an owner's deposits and withdrawals (`Deposited`, `Withdrawn`: kind
  'agent_owner');
- per-event rows: one `db.AgentPayment` per agent payment, an `AgentPaid` (scheme 'budget') or
  the PaymentToken Transfer an EIP-3009 authorization made (scheme 'exact'), paired by
  protocol/agent_payments.py's rule, the one the figures use. What a grant spent and what an
  owner paid are sums of these rows, so an `AgentPaid` changes no entity row.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from tessera.explorer import db
from tessera.protocol.agent_payments import AgentPayment, AgentPayments
from tessera.protocol.events import EventRecord
from tessera.protocol.figure_parts import day_of

MAX_ID = 2**63 - 1
GRANT_EVENTS = ("Granted", "PayeeAllowed", "GrantPaused", "GrantRevoked")
OWNER_EVENTS = ("Deposited", "Withdrawn")
# session.info key: the transactions of this session's batch that hold an AuthorizationUsed. A
# batch is whole blocks, so an authorization and the Transfer it makes are in the same session;
# only a Transfer in one of these transactions can be an agent's payment (one query then).
AUTHORIZED_TXS = "tessera_authorized_txs"


def _id(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID else None


def _owner(a: dict) -> str | None:
    owner = a.get("owner")
    return owner if isinstance(owner, str) and len(owner) == 42 else None


def agent_entities(r: EventRecord) -> list[tuple[str, object]]:
    """The entity rows an AgentBudget event changes (derive.entities_of)."""
    if r.event in OWNER_EVENTS and _owner(r.args):
        return [("agent_owner", r.args["owner"])]
    if r.event in GRANT_EVENTS and _id(r.args.get("grant_id")) is not None:
        return [("grant", r.args["grant_id"])]
    return []


def _wants(scope, kind: str, key) -> bool:
    return scope is None or (kind, key) in scope.touched


def agent_budget(session: Session, r: EventRecord, scope) -> None:
    a = r.args
    if r.event == "AgentPaid":
        if scope is None:
            fold = AgentPayments()
            if session.get(db.Provider, a["payee"]) is not None:
                fold.providers.add(a["payee"])
            _add_payment(session, fold.apply(r))
        return
    if r.event in OWNER_EVENTS:
        owner = _owner(a)
        if owner is None or not _wants(scope, "agent_owner", owner):
            return
        row = session.get(db.AgentOwner, owner)
        if row is None:
            row = db.AgentOwner(address=owner, deposited=0, withdrawn=0, first_at=r.timestamp,
                                first_tx=r.tx_hash)
            session.add(row)
        if r.event == "Deposited":
            row.deposited = row.deposited + a["amount"]
        else:
            row.withdrawn = row.withdrawn + a["amount"]
        return
    grant_id = _id(a.get("grant_id"))
    if grant_id is None or r.event not in GRANT_EVENTS or not _wants(scope, "grant", grant_id):
        return
    if r.event == "Granted":
        session.add(db.AgentGrant(
            grant_id=grant_id, owner=a["owner"], key=a["key"], budget=a["budget"], period=a["period"],
            cap=a["cap"], start=a["start"], expiry=a["expiry"], any_provider=bool(a["any_provider"]),
            payees=0, paused=False, revoked=False, granted_at=r.timestamp, granted_tx=r.tx_hash))
        return
    grant = session.get(db.AgentGrant, grant_id)
    if grant is None:
        return
    if r.event == "PayeeAllowed":
        grant.payees += 1
    elif r.event == "GrantPaused":
        grant.paused = bool(a["paused"])
    else:
        grant.revoked, grant.revoked_tx = True, r.tx_hash


def payment_token(session: Session, r: EventRecord, scope) -> None:
    """An EIP-3009 payment: the Transfer an `AuthorizationUsed` of the same transaction made."""
    if scope is not None:
        return
    if r.event == "AuthorizationUsed":
        session.info.setdefault(AUTHORIZED_TXS, set()).add(r.tx_hash)
        return
    if r.event != "Transfer" or r.tx_hash not in session.info.get(AUTHORIZED_TXS, ()):
        return
    rows = session.scalars(select(db.Event).where(
        db.Event.tx_hash == r.tx_hash, db.Event.contract == "PaymentToken",
        db.Event.event.in_(("AuthorizationUsed", "Transfer")), db.Event.log_index < r.log_index)
        .order_by(db.Event.log_index))
    fold = AgentPayments()
    if session.get(db.Provider, r.args["receiver"]) is not None:
        fold.providers.add(r.args["receiver"])
    for row in rows:
        fold.apply(EventRecord(row.block_number, row.block_hash, row.timestamp, row.tx_hash,
                               row.log_index, row.contract, row.event, json.loads(row.args)))
    _add_payment(session, fold.apply(r))


def _add_payment(session: Session, p: AgentPayment | None) -> None:
    if p is None:
        return
    session.add(db.AgentPayment(
        tx_hash=p.tx_hash, log_index=p.log_index, block_number=p.block_number, timestamp=p.timestamp,
        day=day_of(p.timestamp), scheme=p.scheme, payer=p.payer, key=p.key, payee=p.payee,
        amount=p.amount, grant_id=_id(p.grant_id), nonce=p.nonce, to_provider=p.to_provider,
        self_paid=p.self_paid))
