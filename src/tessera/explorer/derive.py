"""The explorer's derived tables, updated one event at a time in chain order.

`apply_event` is the only writer of the tables in `db.DERIVED`; they are a pure function of the raw
events. Events of contracts nobody derives a table from (Probes, Timelock, the tokens but for agents'
EIP-3009 payments; Uptime's but for its inclusion challenges) are kept raw. Agents' payments, grants
and owners: `derive_agents.py`; Uptime's inclusion challenges and the registry indices they name:
`derive_liveness.py`.

Two kinds of derived rows, so that a reorg rollback costs what the reorg removed, not the history
(indexer.Indexer._rollback):
- per-event rows (`db.PER_EVENT`: payments, settlements, slashes, hardware entries, registry indices,
  the providers a liveness challenge names) are written once, by one event, from that event, its own
  transaction and earlier per-event rows (a challenge's named indices resolve through the registry
  indices): the rollback deletes those of the removed transactions and never rewrites the others;
- entity rows (a provider, an order, a lease, a round, a challenge with its votes, a validator, a
  hardware case) change with several events. `entities_of` names the rows an event changes; every
  event stores the first of them in `db.Event.entity` and a validator it names in `db.Event.validator`
  (both indexed), so one entity's events are one indexed query. The rollback rebuilds only the rows
  the removed events changed, replaying their kept events with a `Replay` scope: `apply_event`
  then changes only those rows and writes no per-event row.
The one read of another entity's changing state is a lease's GPU model (its provider's at
LeaseCreated): a rebuilt lease whose LeaseCreated is kept keeps its row and is reset from that event
(`_lease_fields`) rather than re-read from today's provider.

Every amount is an integer in base units; the tables say what each event did, never a figure
(figures are `protocol.figures.compute_figures` over the raw events).
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from tessera.explorer import db
from tessera.explorer.derive_agents import agent_budget, agent_entities, payment_token
from tessera.explorer.derive_liveness import liveness_entities, registry_index, uptime_challenges
from tessera.protocol.events import EventRecord
from tessera.protocol.figures import day_of
from tessera.protocol.money import slash_split

# Verification.ChallengeResolved.outcome and HardwareReports' round states (the contracts' constants).
CHALLENGE_STATUS = {1: "open", 2: "upheld", 3: "rejected", 4: "expired"}
HARDWARE_OUTCOMES = {1: "late", 2: "wrong", 3: "no answer"}
# The events whose transaction explains a registry `Slashed` (or, for 'liveness', a Validators
# `ValidatorSlashed`) in it, and what they point at.
SLASH_CAUSES = {("Verification", "ChallengeResolved"): "challenge",
                ("HardwareReports", "HardwareSlashed"): "hardware",
                ("Market", "DowntimeClaimed"): "downtime",
                ("Uptime", "ChallengeResolved"): "liveness"}
MAX_ID = 2**63 - 1     # a BigInteger column: larger ids are not ours (no counter gets there)


def _id(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID else None


# The columns `record_of` reads: selecting them (rows, not ORM objects) reads a long history
# about twice as fast (the figures' first build at a million events).
RECORD_COLUMNS = (db.Event.block_number, db.Event.block_hash, db.Event.timestamp, db.Event.tx_hash,
                  db.Event.log_index, db.Event.contract, db.Event.event, db.Event.args)


def record_of(row: db.Event) -> EventRecord:
    """A stored event (an ORM row, or a row of RECORD_COLUMNS) as the record it was made from."""
    return EventRecord(block_number=row.block_number, block_hash=row.block_hash,
                       timestamp=row.timestamp, tx_hash=row.tx_hash, log_index=row.log_index,
                       contract=row.contract, event=row.event, args=json.loads(row.args))


def _address(value) -> str | None:
    return value if isinstance(value, str) and len(value) == 42 else None


Entity = tuple[str, object]     # (kind, key): ("lease", 5), ("hardware", (provider, epoch)), ...


def entities_of(r: EventRecord) -> list[Entity]:
    """The entity rows `apply_event` may change for this event (kinds of `db.ENTITY_TABLES`)."""
    a, c, out = r.args, r.contract, []
    if c == "ProviderRegistry" and _address(a.get("provider")):
        out.append(("provider", a["provider"]))
    elif c == "Market":
        if r.event in ("OrderCreated", "OrderCancelled"):
            if _id(a.get("order_id")) is not None:
                out.append(("order", a["order_id"]))
        elif _id(a.get("lease_id")) is not None:
            out.append(("lease", a["lease_id"]))
    elif c == "Verification":
        if r.event == "RootPosted":
            if _id(a.get("job")) is not None and "round_index" in a:
                out.append(("round", (a["job"], a["round_index"])))
        elif _id(a.get("challenge_id")) is not None:
            out.append(("challenge", a["challenge_id"]))
        if r.event == "Voted" and _address(a.get("validator")):
            out.append(("validator", a["validator"]))
    elif c == "Validators" and _address(a.get("validator")):
        out.append(("validator", a["validator"]))
    elif c == "HardwareReports":
        if "provider" in a and _id(a.get("epoch")) is not None:
            out.append(("hardware", (a["provider"], a["epoch"])))
        if r.event == "HardwareReported" and _address(a.get("validator")):
            out.append(("validator", a["validator"]))
    elif c == "AgentBudget":
        out += agent_entities(r)
    elif c == "Uptime":
        out += liveness_entities(r)
    return out


def entity_key(entity: Entity) -> str:
    """`db.Event.entity`'s text for an entity: 'lease:5', 'hardware:0xab..:7', 'round:3:0'."""
    kind, key = entity
    return ":".join([kind, *(str(k) for k in (key if isinstance(key, tuple) else (key,)))])


def event_columns(session: Session, r: EventRecord) -> dict:
    """`db.Event`'s indexed columns for an event: lease_id, provider, entity, validator."""
    lease_id, provider = event_keys(session, r)
    entities = entities_of(r)
    return {"lease_id": lease_id, "provider": provider,
            "entity": entity_key(entities[0]) if entities else None,
            "validator": _address(r.args.get("validator"))}


class Replay:
    """A rollback's scope: the entity rows the removed events changed. `apply_event` with a Replay
    changes only these rows and writes no per-event row (the kept ones are final)."""

    def __init__(self, touched: set[Entity]):
        self.touched = touched
        self.applied = 0


def _wants(scope: Replay | None, kind: str, key) -> bool:
    return scope is None or (kind, key) in scope.touched


def event_keys(session: Session, r: EventRecord) -> tuple[int | None, str | None]:
    """(lease id, provider) an event is about, for `db.Event`'s indexed columns: its own `lease_id`
    and `provider` args, or those of the challenge it names (votes, answers, verdicts)."""
    a = r.args
    lease_id, provider = _id(a.get("lease_id")), a.get("provider")
    if lease_id is None and r.contract == "Verification" and _id(a.get("challenge_id")) is not None:
        challenge = session.get(db.Challenge, a["challenge_id"])
        if challenge is not None:
            lease_id, provider = challenge.lease_id, provider or challenge.provider
    return lease_id, provider if isinstance(provider, str) and len(provider) == 42 else None


def cause_of(session: Session, r: EventRecord) -> tuple[str, str, str | None] | None:
    """(kind, ref, provider) for an event that explains a provider's slash in its transaction:
    ('challenge', id, the challenged provider), ('hardware', '<provider>/<epoch>', provider) or
    ('downtime', lease id, provider); None for any other event (a validator's: `validator_cause`)."""
    kind = SLASH_CAUSES.get((r.contract, r.event))
    if kind == "challenge" and r.args.get("slashed"):
        challenge = session.get(db.Challenge, _id(r.args["challenge_id"]) or 0)
        return "challenge", str(r.args["challenge_id"]), challenge.provider if challenge else None
    if kind == "hardware":
        return "hardware", f"{r.args['provider']}/{r.args['epoch']}", r.args["provider"]
    if kind == "downtime" and r.args.get("stake_slashed"):
        return "downtime", str(r.args["lease_id"]), r.args["provider"]
    return None


def validator_cause(r: EventRecord) -> tuple[str, str, str] | None:
    """('liveness', challenge id, validator) for an Uptime `ChallengeResolved` that slashed: it
    explains the `ValidatorSlashed` logged before it in its transaction; None otherwise."""
    if SLASH_CAUSES.get((r.contract, r.event)) == "liveness" and r.args.get("slashed"):
        return "liveness", str(r.args["challenge_id"]), r.args["validator"]
    return None


def apply_event(session: Session, r: EventRecord, scope: Replay | None = None) -> None:
    """Update the derived tables with one event, in chain order (with a `scope`: only its rows)."""
    handler = _HANDLERS.get(r.contract)
    if handler is not None:
        handler(session, r, scope)
    if scope is not None:
        scope.applied += 1
        return
    _explain_validator_slash(session, r)
    cause = cause_of(session, r)
    if cause is not None:
        # The contracts log the registry's Slashed before their own event: this explains the
        # nearest earlier unexplained slash of the same provider in this transaction (one
        # transaction may hold several slashes: two downtime claims, two resolves...).
        kind, ref, provider = cause
        query = select(db.Slash).where(
            db.Slash.tx_hash == r.tx_hash, db.Slash.kind == "provider", db.Slash.cause == "direct",
            db.Slash.log_index < r.log_index)
        if provider is not None:        # None: a challenge this database never saw opened
            query = query.where(db.Slash.address == provider)
        slash = session.scalars(query.order_by(db.Slash.log_index.desc()).limit(1)).first()
        if slash is not None:
            slash.cause, slash.cause_ref = kind, ref


def _explain_validator_slash(session: Session, r: EventRecord) -> None:
    """Uptime logs ChallengeResolved after the Validators' ValidatorSlashed it caused: it
    explains the nearest earlier unexplained slash of that validator in its transaction."""
    cause = validator_cause(r)
    if cause is None:
        return
    slash = session.scalars(select(db.Slash).where(
        db.Slash.tx_hash == r.tx_hash, db.Slash.kind == "validator", db.Slash.cause == "direct",
        db.Slash.address == cause[2], db.Slash.log_index < r.log_index)
        .order_by(db.Slash.log_index.desc()).limit(1)).first()
    if slash is not None:
        slash.cause, slash.cause_ref = cause[0], cause[1]


def _slash(session: Session, r: EventRecord, kind: str, address: str) -> None:
    """A slash row, 'direct' until a later event of its transaction explains it (apply_event);
    a cause logged before the slash (no contract does so today) explains it here: the nearest
    earlier cause of the same provider that explains no other slash."""
    a = r.args
    what, ref = "direct", None
    if kind == "provider":
        rows = session.scalars(select(db.Event).where(db.Event.tx_hash == r.tx_hash,
                                                      db.Event.log_index < r.log_index)
                               .order_by(db.Event.log_index.desc()))
        taken = {(s.cause, s.cause_ref) for s in session.scalars(
            select(db.Slash).where(db.Slash.tx_hash == r.tx_hash))}
        for row in rows:
            cause = cause_of(session, record_of(row))
            if cause and cause[2] in (address, None) and cause[:2] not in taken:
                what, ref = cause[:2]
                break
    session.add(db.Slash(
        tx_hash=r.tx_hash, log_index=r.log_index, kind=kind, address=address, amount=a["amount"],
        recipient=a["recipient"], slasher=a["slasher"], block_number=r.block_number, timestamp=r.timestamp,
        cause=what, cause_ref=ref))


def _registry(session: Session, r: EventRecord, scope: Replay | None) -> None:
    a = r.args
    if r.event == "ProviderRegistered" and scope is None:
        registry_index(session, r)          # the bit liveness reports and challenges name
    if "provider" not in a or not _wants(scope, "provider", a["provider"]):
        return
    if r.event == "ProviderRegistered":
        session.add(db.Provider(
            address=a["provider"], gpu_model=a["gpu_model"], gpu_count=a["gpu_count"],
            gpu_memory_mb=a["gpu_memory_mb"], endpoint=a["endpoint"], price_floor=a["price_floor"],
            registered_at=r.timestamp, registered_tx=r.tx_hash, stake=a["stake"], unbonding=0,
            slashed=0, withdrawn=0, jailed_until=0, locked_until=0))
        return
    p = session.get(db.Provider, a["provider"])
    if p is None:
        return
    if r.event == "OfferUpdated":
        p.gpu_model, p.gpu_count, p.gpu_memory_mb = a["gpu_model"], a["gpu_count"], a["gpu_memory_mb"]
        p.endpoint, p.price_floor = a["endpoint"], a["price_floor"]
    elif r.event == "StakeAdded":
        p.stake = p.stake + a["amount"]
    elif r.event == "UnbondRequested":
        p.stake, p.unbonding = p.stake - a["amount"], p.unbonding + a["amount"]
    elif r.event == "StakeWithdrawn":
        p.unbonding, p.withdrawn = p.unbonding - a["amount"], p.withdrawn + a["amount"]
    elif r.event == "Slashed":
        from_stake, from_unbonding = slash_split(a["amount"], p.stake)
        p.stake, p.unbonding = p.stake - from_stake, p.unbonding - from_unbonding
        p.slashed = p.slashed + a["amount"]
        if scope is None:
            _slash(session, r, "provider", p.address)
    elif r.event == "Jailed":
        p.jailed_until = a["until"]
    elif r.event == "StakeHeld":
        p.locked_until = a["locked_until"]


def _lease_fields(r: EventRecord) -> dict:
    """A lease row's columns as LeaseCreated sets them (all but those read from its provider/order)."""
    a = r.args
    return dict(order_id=a["order_id"], tenant=a["tenant"], provider=a["provider"],
                price_per_gpu_hour=a["price_per_gpu_hour"], gpus=a["gpus"], budget=a["budget"],
                start=a["start"], closed_at=None, earned=0, provider_income=0, fees=0, refund=0,
                result_hash=None, created_tx=r.tx_hash, closed_tx=None)


def _market(session: Session, r: EventRecord, scope: Replay | None) -> None:
    a = r.args
    if r.event in ("OrderCreated", "OrderCancelled") and not _wants(scope, "order", a.get("order_id")):
        return
    if r.event == "OrderCreated":
        session.add(db.Order(order_id=a["order_id"], tenant=a["tenant"], verified=bool(a["verified"]),
                             deposit=a["deposit"], created_at=r.timestamp, created_tx=r.tx_hash,
                             created_log_index=r.log_index))
        return
    if r.event == "OrderCancelled":
        order = session.get(db.Order, a["order_id"])
        if order is not None:
            order.cancelled_tx = r.tx_hash
        return
    if "lease_id" not in a or not _wants(scope, "lease", a["lease_id"]):
        return
    if r.event == "LeaseCreated":
        lease = session.get(db.Lease, a["lease_id"]) if scope is not None else None
        if lease is not None:      # a rollback's reset: the provider's GPU model then is kept
            for column, value in _lease_fields(r).items():
                setattr(lease, column, value)
            return
        p = session.get(db.Provider, a["provider"])
        order = session.get(db.Order, a["order_id"])
        session.add(db.Lease(lease_id=a["lease_id"], gpu_model=p.gpu_model if p else "",
                             verified=bool(order and order.verified), **_lease_fields(r)))
        return
    lease = session.get(db.Lease, a["lease_id"])
    if lease is None:
        return
    if r.event == "LeaseToppedUp":
        lease.budget = a["budget"]
    elif r.event == "ResultCommitted":
        lease.result_hash = a["result_hash"]
    elif r.event in ("Withdrawn", "LeaseClosed"):
        income = a["amount_to_provider"] if r.event == "Withdrawn" else a["provider_amount"]
        fee = a["fee"]
        lease.earned = lease.earned + income + fee
        lease.provider_income = lease.provider_income + income
        lease.fees = lease.fees + fee
        if r.event == "LeaseClosed":
            lease.closed_at, lease.closed_tx, lease.refund = r.timestamp, r.tx_hash, a["refund"]
        if income + fee > 0 and scope is None:
            session.add(db.Payment(
                tx_hash=r.tx_hash, log_index=r.log_index, block_number=r.block_number,
                lease_id=lease.lease_id, provider=lease.provider, timestamp=r.timestamp,
                day=day_of(r.timestamp), kind="withdraw" if r.event == "Withdrawn" else "close",
                provider_amount=income, fee=fee))


def _verification(session: Session, r: EventRecord, scope: Replay | None) -> None:
    a = r.args
    if r.event == "RootPosted":
        if _id(a["job"]) is not None and _wants(scope, "round", (a["job"], a["round_index"])):
            session.merge(db.Round(job=a["job"], round_index=a["round_index"], root=a["root"],
                                   n_leaves=a["n_leaves"], coordinator=a["coordinator"],
                                   posted_at=r.timestamp, block_number=r.block_number, tx_hash=r.tx_hash))
        return
    if r.event == "ChallengeOpened":
        if not _wants(scope, "challenge", a["challenge_id"]):
            return
        session.add(db.Challenge(
            challenge_id=a["challenge_id"], job=a["job"], round_index=a["round_index"],
            lease_id=a["lease_id"], provider=a["provider"], challenger=a["challenger"],
            result_hash=a["result_hash"], evidence=a["evidence"], bond=a["bond"], quorum=a["quorum"],
            deadline=a["deadline"],
            opened_at=r.timestamp, opened_tx=r.tx_hash, status="open", guilty_votes=0, innocent_votes=0,
            guilty_stake=0, innocent_stake=0, slashed=0, to_challenger=0, to_tenant=0, to_voters=0, burned=0,
            bond_to_provider=0, bond_returned=0, rewards_claimed=0))
        return
    c = session.get(db.Challenge, a["challenge_id"]) if _id(a.get("challenge_id")) is not None else None
    if c is None:
        return
    if r.event == "Voted":
        if _wants(scope, "challenge", c.challenge_id):
            if a["guilty"]:
                c.guilty_votes, c.guilty_stake = c.guilty_votes + 1, c.guilty_stake + a["weight"]
            else:
                c.innocent_votes, c.innocent_stake = c.innocent_votes + 1, c.innocent_stake + a["weight"]
            session.add(db.Vote(challenge_id=c.challenge_id, validator=a["validator"],
                                guilty=bool(a["guilty"]), weight=a["weight"], voted_at=r.timestamp,
                                tx_hash=r.tx_hash, reward=0))
        v = session.get(db.Validator, a["validator"]) if _wants(scope, "validator", a["validator"]) else None
        if v is not None:
            v.votes += 1
        return
    if not _wants(scope, "challenge", c.challenge_id):
        return
    if r.event == "ChallengeAnswered":
        c.answer, c.answered_tx = a["opening_hash"], r.tx_hash
    elif r.event == "ChallengeResolved":
        c.status = CHALLENGE_STATUS.get(a["outcome"], f"outcome {a['outcome']}")
        for part in ("slashed", "to_challenger", "to_tenant", "to_voters", "burned", "bond_to_provider",
                     "bond_returned"):
            setattr(c, part, a[part])
        c.resolved_at, c.resolved_tx = r.timestamp, r.tx_hash
    elif r.event == "RewardClaimed":
        c.rewards_claimed = c.rewards_claimed + a["amount"]
        vote = session.get(db.Vote, (c.challenge_id, a["voter"]))
        if vote is not None:
            vote.reward, vote.reward_tx = vote.reward + a["amount"], r.tx_hash


def _settlement(session: Session, r: EventRecord, scope: Replay | None) -> None:
    a = r.args
    if r.event not in ("PayReleased", "RoundRefunded") or scope is not None:
        return
    release = r.event == "PayReleased"
    session.add(db.Settlement(
        tx_hash=r.tx_hash, log_index=r.log_index, lease_id=a["lease_id"],
        kind="release" if release else "refund", block_number=r.block_number, timestamp=r.timestamp,
        from_round=a["from_round"] if release else None, to_round=a["to_round"] if release else None,
        round_index=None if release else a["round_index"],
        released_until=a["released_until"] if release else None, amount=a["amount"],
        withheld=a["withheld"] if release else 0, refund=a["refund"],
        forfeited=not release and bool(a.get("forfeited", False))))


def _validators(session: Session, r: EventRecord, scope: Replay | None) -> None:
    a = r.args
    if "validator" not in a or not _wants(scope, "validator", a["validator"]):
        return
    if r.event == "ValidatorRegistered":
        session.add(db.Validator(address=a["validator"], registered_at=r.timestamp, registered_tx=r.tx_hash,
                                 stake=a["stake"], unbonding=0, release_at=0, withdrawn=0, slashed=0,
                                 slashes=0, endpoint="", locked_until=0, votes=0, reports=0))
        return
    v = session.get(db.Validator, a["validator"])
    if v is None:
        return
    if r.event == "ValidatorStakeAdded":
        v.stake = v.stake + a["amount"]
    elif r.event == "ValidatorUnbondRequested":
        v.stake, v.unbonding, v.release_at = v.stake - a["amount"], v.unbonding + a["amount"], a["release_at"]
    elif r.event == "ValidatorStakeWithdrawn":
        v.unbonding, v.withdrawn = v.unbonding - a["amount"], v.withdrawn + a["amount"]
    elif r.event == "ValidatorSlashed":
        from_stake, from_unbonding = slash_split(a["amount"], v.stake)
        v.stake, v.unbonding = v.stake - from_stake, max(v.unbonding - from_unbonding, 0)
        v.slashed, v.slashes = v.slashed + a["amount"], v.slashes + 1
        if scope is None:
            _slash(session, r, "validator", v.address)
    elif r.event == "ValidatorEndpointSet":
        v.endpoint = a["endpoint"]
    elif r.event == "ValidatorLocked":
        v.locked_until = a["locked_until"]


def _hardware(session: Session, r: EventRecord, scope: Replay | None) -> None:
    a = r.args
    if "provider" not in a or _id(a.get("epoch")) is None:
        return
    key = (a["provider"], a["epoch"])
    mine = _wants(scope, "hardware", key)
    case = session.get(db.HardwareCase, key) if mine else None
    if r.event == "HardwareReported":
        if mine:
            if case is None:
                case = db.HardwareCase(provider=key[0], epoch=key[1], status="open", first_at=r.timestamp,
                                       first_tx=r.tx_hash, reporters=0, reported=0, quorum=0, jury_quorum=0,
                                       pass_stake=0, fail_stake=0, slashed=0, reward_pool=0, burned=0)
                session.add(case)
            case.reporters, case.reported, case.quorum = case.reporters + 1, a["reported"], a["quorum"]
        if scope is None:
            session.add(db.HardwareEntry(
                tx_hash=r.tx_hash, log_index=r.log_index, provider=key[0], epoch=key[1],
                validator=a["validator"], kind="report", timestamp=r.timestamp, outcome=a["outcome"],
                evidence=a["evidence"], amount=a["weight"]))
        v = session.get(db.Validator, a["validator"]) if _wants(scope, "validator", a["validator"]) else None
        if v is not None:
            v.reports += 1
        return
    if case is None:
        return
    if r.event == "HardwareQuorumReached":
        case.status, case.dispute_deadline = "pending", a["dispute_deadline"]
    elif r.event == "HardwareDisputed":
        case.status, case.vote_deadline, case.jury_quorum = "disputed", a["vote_deadline"], a["jury_quorum"]
    elif r.event == "HardwareDisputeVoted":
        if a["passed"]:
            case.pass_stake = case.pass_stake + a["weight"]
        else:
            case.fail_stake = case.fail_stake + a["weight"]
        if scope is None:
            session.add(db.HardwareEntry(
                tx_hash=r.tx_hash, log_index=r.log_index, provider=key[0], epoch=key[1],
                validator=a["validator"], kind="vote", timestamp=r.timestamp, passed=bool(a["passed"]),
                amount=a["weight"]))
    elif r.event == "HardwareCleared":
        case.status, case.pass_stake, case.fail_stake = "cleared", a["pass_stake"], a["fail_stake"]
        case.resolved_at, case.resolved_tx = r.timestamp, r.tx_hash
    elif r.event == "HardwareSlashed":
        case.status, case.slashed, case.reward_pool = "slashed", a["slashed"], a["reward_pool"]
        case.burned, case.jailed_until = a["burned"], a["jailed_until"]
        case.resolved_at, case.resolved_tx = r.timestamp, r.tx_hash
    elif r.event == "HardwareRewardClaimed" and scope is None:
        session.add(db.HardwareEntry(tx_hash=r.tx_hash, log_index=r.log_index, provider=key[0], epoch=key[1],
                                     validator=a["validator"], kind="reward", timestamp=r.timestamp,
                                     amount=a["amount"]))


_HANDLERS = {"ProviderRegistry": _registry, "Market": _market, "Verification": _verification,
             "Settlement": _settlement, "Validators": _validators, "HardwareReports": _hardware,
             "AgentBudget": agent_budget, "PaymentToken": payment_token, "Uptime": uptime_challenges}
