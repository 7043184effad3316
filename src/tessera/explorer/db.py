"""The explorer's database: raw events, a cursor, checkpoint block hashes and derived tables.

SQLAlchemy 2; SQLite by default, any SQLAlchemy URL (PostgreSQL included) accepted. Amounts can
exceed 64 bits (stake has 18 decimals), so every money column is a `BigAmount`: decimal text in
the database, a Python int in code. Values a caller chooses freely (a job's round index, a root's
leaf count) are `BigAmount` too: a uint256 must never stop the indexer.

The derived tables (`DERIVED`) are a pure function of the raw events in chain order
(`explorer/derive.py`). A reorg rollback deletes the per-event rows (`PER_EVENT`) of the removed
transactions and rebuilds only the entity rows (`ENTITY_TABLES`) the removed events changed, from
their own kept events, found through `Event.entity` and `Event.validator` (indexer._rollback).
The base and column types are in db_base.py, Uptime's inclusion challenges' tables in
db_liveness.py, the bridge's (every chain of the network) in db_bridge.py (all re-exported here).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy import inspect as sql_inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column

from tessera.chain.accounts import tessera_home
from tessera.errors import IndexerError
from tessera.explorer.db_base import Base, BigAmount, ChainText, LogColumns
from tessera.explorer.db_bridge import (
    BridgeBlock,
    BridgeCursor,
    BridgeEvent,
    BridgeFunding,
    CrossChainTransfer,
)
from tessera.explorer.db_liveness import LivenessChallenge, LivenessNamed, RegistryIndex


class Cursor(Base):
    __tablename__ = "explorer_cursor"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    market: Mapped[str] = mapped_column(String(42))
    registry_address: Mapped[str] = mapped_column("registry", String(42))
    first_block: Mapped[int] = mapped_column(BigInteger)
    last_block: Mapped[int] = mapped_column(BigInteger)          # last block indexed as final
    last_hash: Mapped[str | None] = mapped_column(String(66))
    last_timestamp: Mapped[int | None] = mapped_column(BigInteger)


class Block(Base):
    """Hashes of indexed blocks that hold events, and of every batch's last block (checkpoints)."""

    __tablename__ = "explorer_blocks"
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(66))
    timestamp: Mapped[int] = mapped_column(BigInteger)


class Event(LogColumns, Base):
    __tablename__ = "explorer_events"
    # Composite indexes serve the pages' paged queries in chain order without a sort (and the
    # equality lookups by their first column): a lease's events, a lease's money events by name,
    # an entity's events (rollback, challenge page), a provider's events of one kind by time.
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_event_tx_log"),
                      Index("ix_event_block_log", "block_number", "log_index"),
                      Index("ix_event_lease_chain", "lease_id", "block_number", "log_index"),
                      Index("ix_event_lease_event", "lease_id", "event", "block_number", "log_index"),
                      Index("ix_event_entity_chain", "entity", "block_number", "log_index"),
                      Index("ix_event_provider_event", "provider", "event", "timestamp"),
                      Index("ix_event_validator_event", "validator", "event", "block_number", "log_index"))
    # The lease the event is about (its `lease_id` arg, or the lease of the challenge it names),
    # and the provider it names: a lease's or a provider's events are one indexed query.
    lease_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    provider: Mapped[str | None] = mapped_column(String(42), nullable=True)
    # The derived entity row the event changes ('lease:5', 'provider:0x..', 'challenge:2',
    # 'hardware:0x..:7', ...: derive.entities_of), and the validator it names (a vote or a hardware
    # report also counts on its validator's row): a rollback finds an entity's events by them.
    entity: Mapped[str | None] = mapped_column(String(120), nullable=True)
    validator: Mapped[str | None] = mapped_column(String(42), nullable=True, index=True)


class Provider(Base):
    __tablename__ = "explorer_providers"
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    gpu_model: Mapped[str] = mapped_column(ChainText(64))
    gpu_count: Mapped[int] = mapped_column(BigInteger)          # uint32: past PostgreSQL's int4
    gpu_memory_mb: Mapped[int] = mapped_column(BigInteger)
    endpoint: Mapped[str] = mapped_column(ChainText(256))
    price_floor: Mapped[int] = mapped_column(BigAmount)
    registered_at: Mapped[int] = mapped_column(BigInteger)
    registered_tx: Mapped[str] = mapped_column(String(66))
    stake: Mapped[int] = mapped_column(BigAmount, default=0)
    unbonding: Mapped[int] = mapped_column(BigAmount, default=0)
    slashed: Mapped[int] = mapped_column(BigAmount, default=0)
    withdrawn: Mapped[int] = mapped_column(BigAmount, default=0)
    jailed_until: Mapped[int] = mapped_column(BigInteger, default=0)
    locked_until: Mapped[int] = mapped_column(BigInteger, default=0)   # StakeHeld: no unbond before


class Order(Base):
    """A Market order (`OrderCreated`): a verified order is a Verification job of the same id."""

    __tablename__ = "explorer_orders"
    order_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    tenant: Mapped[str] = mapped_column(String(42))
    verified: Mapped[bool] = mapped_column(Boolean)
    deposit: Mapped[int] = mapped_column(BigAmount)
    created_at: Mapped[int] = mapped_column(BigInteger)
    created_tx: Mapped[str] = mapped_column(String(66))
    created_log_index: Mapped[int] = mapped_column(Integer)
    cancelled_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)


class Lease(Base):
    __tablename__ = "explorer_leases"
    __table_args__ = (Index("ix_lease_provider_id", "provider", "lease_id"),)
    lease_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    order_id: Mapped[int] = mapped_column(BigInteger)
    tenant: Mapped[str] = mapped_column(String(42))
    provider: Mapped[str] = mapped_column(String(42))
    gpu_model: Mapped[str] = mapped_column(ChainText(64))
    price_per_gpu_hour: Mapped[int] = mapped_column(BigAmount)
    gpus: Mapped[int] = mapped_column(BigInteger)
    budget: Mapped[int] = mapped_column(BigAmount)
    start: Mapped[int] = mapped_column(BigInteger)
    closed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    earned: Mapped[int] = mapped_column(BigAmount, default=0)            # gross paid out so far
    provider_income: Mapped[int] = mapped_column(BigAmount, default=0)
    fees: Mapped[int] = mapped_column(BigAmount, default=0)
    refund: Mapped[int] = mapped_column(BigAmount, default=0)
    result_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    created_tx: Mapped[str] = mapped_column(String(66))
    closed_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)


class Payment(Base):
    """One payout from escrow: a Withdrawn or a LeaseClosed that moved money to the provider."""

    __tablename__ = "explorer_payments"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_payment_tx_log"),
                      Index("ix_payment_lease_chain", "lease_id", "block_number", "log_index"),
                      Index("ix_payment_provider_chain", "provider", "block_number", "log_index"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    lease_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("explorer_leases.lease_id"))
    provider: Mapped[str] = mapped_column(String(42))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    day: Mapped[str] = mapped_column(String(10), index=True)
    kind: Mapped[str] = mapped_column(String(8))          # "withdraw" | "close"
    provider_amount: Mapped[int] = mapped_column(BigAmount)
    fee: Mapped[int] = mapped_column(BigAmount)


class Round(Base):
    """One Verification round root (`RootPosted`): a job is a Market order, so a lease's rounds
    are those of its order."""

    __tablename__ = "explorer_rounds"
    job: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    round_index: Mapped[int] = mapped_column(BigAmount, primary_key=True)
    root: Mapped[str] = mapped_column(String(66))
    n_leaves: Mapped[int] = mapped_column(BigAmount)
    coordinator: Mapped[str] = mapped_column(String(42))
    posted_at: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))


class Challenge(Base):
    """A challenge of one lease's commitment in one round, from opening to verdict."""

    __tablename__ = "explorer_challenges"
    challenge_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    job: Mapped[int] = mapped_column(BigInteger, index=True)
    round_index: Mapped[int] = mapped_column(BigAmount)
    lease_id: Mapped[int] = mapped_column(BigInteger, index=True)
    provider: Mapped[str] = mapped_column(String(42), index=True)
    challenger: Mapped[str] = mapped_column(String(42))
    result_hash: Mapped[str] = mapped_column(String(66))
    evidence: Mapped[str] = mapped_column(String(66))
    bond: Mapped[int] = mapped_column(BigAmount)
    quorum: Mapped[int] = mapped_column(BigAmount)
    deadline: Mapped[int] = mapped_column(BigInteger)
    opened_at: Mapped[int] = mapped_column(BigInteger)
    opened_tx: Mapped[str] = mapped_column(String(66))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open|upheld|rejected|expired
    answer: Mapped[str | None] = mapped_column(String(66), nullable=True)
    answered_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    guilty_votes: Mapped[int] = mapped_column(Integer, default=0)
    innocent_votes: Mapped[int] = mapped_column(Integer, default=0)
    guilty_stake: Mapped[int] = mapped_column(BigAmount, default=0)
    innocent_stake: Mapped[int] = mapped_column(BigAmount, default=0)
    slashed: Mapped[int] = mapped_column(BigAmount, default=0)
    to_challenger: Mapped[int] = mapped_column(BigAmount, default=0)
    to_tenant: Mapped[int] = mapped_column(BigAmount, default=0)
    to_voters: Mapped[int] = mapped_column(BigAmount, default=0)
    burned: Mapped[int] = mapped_column(BigAmount, default=0)
    bond_to_provider: Mapped[int] = mapped_column(BigAmount, default=0)
    bond_returned: Mapped[int] = mapped_column(BigAmount, default=0)
    rewards_claimed: Mapped[int] = mapped_column(BigAmount, default=0)
    resolved_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolved_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)


class Vote(Base):
    """One validator's vote on a challenge (`Voted`), with the reward it claimed, if any."""

    __tablename__ = "explorer_votes"
    __table_args__ = (Index("ix_vote_challenge_time", "challenge_id", "voted_at", "validator"),
                      Index("ix_vote_validator_time", "validator", "voted_at", "challenge_id"))
    challenge_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    validator: Mapped[str] = mapped_column(String(42), primary_key=True)
    guilty: Mapped[bool] = mapped_column(Boolean)
    weight: Mapped[int] = mapped_column(BigAmount)
    voted_at: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    reward: Mapped[int] = mapped_column(BigAmount, default=0)
    reward_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)


class Settlement(Base):
    """One Settlement event of a verified lease: `PayReleased` (kind 'release': the rounds
    [from_round, to_round) walked) or `RoundRefunded` (kind 'refund': one round's pay back to the
    tenant, proven to cheat, or `forfeited`: a cheat was proven for the lease in another round;
    round_index = the rounds then posted for the time after the last root)."""

    __tablename__ = "explorer_settlements"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_settlement_tx_log"),
                      Index("ix_settlement_lease_chain", "lease_id", "block_number", "log_index"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    lease_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(8))
    block_number: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    from_round: Mapped[int | None] = mapped_column(BigAmount, nullable=True)
    to_round: Mapped[int | None] = mapped_column(BigAmount, nullable=True)
    round_index: Mapped[int | None] = mapped_column(BigAmount, nullable=True)
    released_until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    amount: Mapped[int] = mapped_column(BigAmount)     # release: pay released; refund: the round's pay
    withheld: Mapped[int] = mapped_column(BigAmount, default=0)
    refund: Mapped[int] = mapped_column(BigAmount, default=0)
    forfeited: Mapped[bool] = mapped_column(Boolean, default=False)   # refund: RoundRefunded.forfeited


class Validator(Base):
    __tablename__ = "explorer_validators"
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    registered_at: Mapped[int] = mapped_column(BigInteger)
    registered_tx: Mapped[str] = mapped_column(String(66))
    stake: Mapped[int] = mapped_column(BigAmount, default=0)
    unbonding: Mapped[int] = mapped_column(BigAmount, default=0)
    release_at: Mapped[int] = mapped_column(BigInteger, default=0)
    withdrawn: Mapped[int] = mapped_column(BigAmount, default=0)
    slashed: Mapped[int] = mapped_column(BigAmount, default=0)
    slashes: Mapped[int] = mapped_column(Integer, default=0)
    endpoint: Mapped[str] = mapped_column(ChainText(256), default="")
    locked_until: Mapped[int] = mapped_column(BigInteger, default=0)
    votes: Mapped[int] = mapped_column(Integer, default=0)
    reports: Mapped[int] = mapped_column(Integer, default=0)     # hardware reports filed


class HardwareCase(Base):
    """The hardware reports against one provider for one epoch, and their outcome."""

    __tablename__ = "explorer_hardware_cases"
    provider: Mapped[str] = mapped_column(String(42), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open|pending|disputed|slashed|cleared
    first_at: Mapped[int] = mapped_column(BigInteger)
    first_tx: Mapped[str] = mapped_column(String(66))
    reporters: Mapped[int] = mapped_column(Integer, default=0)
    reported: Mapped[int] = mapped_column(BigAmount, default=0)
    quorum: Mapped[int] = mapped_column(BigAmount, default=0)
    dispute_deadline: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    vote_deadline: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    jury_quorum: Mapped[int] = mapped_column(BigAmount, default=0)
    pass_stake: Mapped[int] = mapped_column(BigAmount, default=0)
    fail_stake: Mapped[int] = mapped_column(BigAmount, default=0)
    slashed: Mapped[int] = mapped_column(BigAmount, default=0)
    reward_pool: Mapped[int] = mapped_column(BigAmount, default=0)
    burned: Mapped[int] = mapped_column(BigAmount, default=0)
    jailed_until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolved_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolved_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)


class HardwareEntry(Base):
    """One HardwareReports action on a case: a validator's report, a juror's vote, a reward claim."""

    __tablename__ = "explorer_hardware_entries"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_hardware_tx_log"),
                      Index("ix_hardware_entry_case", "provider", "epoch"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(42))
    epoch: Mapped[int] = mapped_column(BigInteger)
    validator: Mapped[str] = mapped_column(String(42), index=True)
    kind: Mapped[str] = mapped_column(String(8))            # report|vote|reward
    timestamp: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[int | None] = mapped_column(Integer, nullable=True)   # report: 1 late, 2 wrong, 3 none
    passed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)     # vote
    evidence: Mapped[str | None] = mapped_column(String(66), nullable=True)
    amount: Mapped[int] = mapped_column(BigAmount, default=0)               # weight, or reward


class Slash(Base):
    """One `Slashed` (provider) or `ValidatorSlashed` event, with its cause: the challenge, the
    hardware case or the downtime claim in the same transaction, else a direct slash."""

    __tablename__ = "explorer_slashes"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_slash_tx_log"),
                      Index("ix_slash_cause", "cause", "cause_ref"),
                      Index("ix_slash_address_chain", "address", "block_number", "log_index"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(9))             # provider|validator
    address: Mapped[str] = mapped_column(String(42))
    amount: Mapped[int] = mapped_column(BigAmount)
    recipient: Mapped[str] = mapped_column(String(42))
    slasher: Mapped[str] = mapped_column(String(42))
    block_number: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    cause: Mapped[str] = mapped_column(String(9), default="direct")   # challenge|hardware|downtime|direct
    cause_ref: Mapped[str | None] = mapped_column(String(100), nullable=True)


class AgentPayment(Base):
    """One agent payment (protocol/agent_payments.py): an AgentBudget `AgentPaid` (scheme
    'budget') or an EIP-3009 PaymentToken Transfer (scheme 'exact'); `tx_hash`/`log_index` are
    the log that moved the money. `to_provider`: the payee was a registered provider then (only
    those count as agent revenue)."""

    __tablename__ = "explorer_agent_payments"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_agent_payment_tx_log"),
                      Index("ix_agent_payment_payee_chain", "payee", "block_number", "log_index"),
                      Index("ix_agent_payment_payer_chain", "payer", "block_number", "log_index"),
                      Index("ix_agent_payment_grant_chain", "grant_id", "block_number", "log_index"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    day: Mapped[str] = mapped_column(String(10))
    scheme: Mapped[str] = mapped_column(String(8))            # budget|exact
    payer: Mapped[str] = mapped_column(String(42))            # budget: the owner; exact: the wallet
    key: Mapped[str] = mapped_column(String(42))              # budget: the session key
    payee: Mapped[str] = mapped_column(String(42))
    amount: Mapped[int] = mapped_column(BigAmount)
    grant_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    nonce: Mapped[str] = mapped_column(String(66))
    to_provider: Mapped[bool] = mapped_column(Boolean)
    self_paid: Mapped[bool] = mapped_column(Boolean)          # payer == payee


class AgentGrant(Base):
    """An AgentBudget grant: a session key's limits (`Granted`), its listed payees
    (`PayeeAllowed`), paused or revoked. What it spent is summed from `AgentPayment`."""

    __tablename__ = "explorer_agent_grants"
    __table_args__ = (Index("ix_agent_grant_owner", "owner", "grant_id"),)
    grant_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(42))
    key: Mapped[str] = mapped_column(String(42))
    budget: Mapped[int] = mapped_column(BigAmount)
    period: Mapped[int] = mapped_column(BigAmount)
    cap: Mapped[int] = mapped_column(BigAmount)
    start: Mapped[int] = mapped_column(BigAmount)
    expiry: Mapped[int] = mapped_column(BigAmount)
    any_provider: Mapped[bool] = mapped_column(Boolean)
    payees: Mapped[int] = mapped_column(Integer, default=0)   # listed payees
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    granted_at: Mapped[int] = mapped_column(BigInteger)
    granted_tx: Mapped[str] = mapped_column(String(66))
    revoked_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)


class AgentOwner(Base):
    """An AgentBudget owner's deposits and withdrawals; its payments are `AgentPayment` rows."""

    __tablename__ = "explorer_agent_owners"
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    deposited: Mapped[int] = mapped_column(BigAmount, default=0)
    withdrawn: Mapped[int] = mapped_column(BigAmount, default=0)
    first_at: Mapped[int] = mapped_column(BigInteger)
    first_tx: Mapped[str] = mapped_column(String(66))


DERIVED = (Payment, Lease, Order, Provider, Round, Challenge, Vote, Settlement, Validator, HardwareCase,
           HardwareEntry, Slash, AgentPayment, AgentGrant, AgentOwner, LivenessChallenge, LivenessNamed,
           RegistryIndex)
# Rows one event writes once, final with its transaction (a rollback deletes them by tx_hash).
PER_EVENT = (Payment, Settlement, Slash, HardwareEntry, AgentPayment, LivenessNamed, RegistryIndex)
# Rows several events change, by derive.entities_of's kind (a challenge's votes go with it).
ENTITY_TABLES = {"provider": Provider, "order": Order, "lease": Lease, "round": Round, "challenge": Challenge,
                 "validator": Validator, "hardware": HardwareCase, "grant": AgentGrant,
                 "agent_owner": AgentOwner, "liveness": LivenessChallenge}
# The bridge's tables, every chain's (db_bridge.py): apart from the market's cursor and events.
BRIDGE_TABLES = (BridgeCursor, BridgeBlock, BridgeEvent, CrossChainTransfer, BridgeFunding)


def default_url() -> str:
    return f"sqlite:///{tessera_home() / 'explorer.db'}"


def make_engine(url: str | None = None) -> Engine:
    url = url or os.environ.get("TESSERA_EXPLORER_DB") or default_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    Base.metadata.create_all(engine)
    _check_columns(engine)
    return engine


def _check_columns(engine: Engine) -> None:
    """Refuse a database another explorer version made (create_all adds tables, never columns):
    a column missing, or one this explorer no longer has (a NOT NULL one would refuse its inserts)."""
    found = sql_inspect(engine)
    for table in Base.metadata.sorted_tables:
        have = {c["name"] for c in found.get_columns(table.name)}
        missing = sorted(c.name for c in table.columns if c.name not in have)
        extra = sorted(have - {c.name for c in table.columns})
        if missing or extra:
            what = "; ".join(part for part in (
                f"lacks {', '.join(missing)}" if missing else "",
                f"still has {', '.join(extra)}" if extra else "") if part)
            raise IndexerError(
                f"the explorer database {engine.url.render_as_string(hide_password=True)} was made by "
                f"another explorer version: table {table.name} {what}; delete it (or use "
                "another --database) and run `tessera explorer index` again")
