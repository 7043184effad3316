"""The explorer's tables of the bridge (docs/explorer.md, "The bridge"): every chain the network
file names is indexed apart, with its own cursor and block hashes, into the same database.

- `BridgeCursor`: one row per chain (its id, its outbox: a database indexes one deployment; its
  StakeBridge and its BridgeOrders, or none where the network file names none);
- `BridgeBlock`: the hashes of a chain's indexed blocks that hold bridge events, and of each
  batch's last block (the reorg check's checkpoints), keyed by (chain, number);
- `BridgeEvent`: every event of the chain's BridgeOutbox, BridgeInbox, TokenBridge, StakeBridge and
  BridgeOrders (where named), and the Market's `Refunded` to BridgeOrders, with the chain id and
  the message id it is about (a bounce's `TransferBounced` names the transfer it refunds);
- `CrossChainTransfer`: the derived table, one row per message id (derive_bridge.py), rebuilt
  from the stored events after every run that changed them: anyone can recompute it from logs;
- `BridgeFunding`: the derived table of BridgeOrders' fundings, one row per funding message
  (derive_orders.py), rebuilt with the transfers.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tessera.explorer.db_base import Base, BigAmount, LogColumns


class BridgeCursor(Base):
    __tablename__ = "explorer_bridge_cursors"
    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    outbox: Mapped[str] = mapped_column(String(42))
    stake_bridge: Mapped[str | None] = mapped_column(String(42), nullable=True)
    bridge_orders: Mapped[str | None] = mapped_column(String(42), nullable=True)
    first_block: Mapped[int] = mapped_column(BigInteger)
    last_block: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str | None] = mapped_column(String(66))
    last_timestamp: Mapped[int | None] = mapped_column(BigInteger)


class BridgeBlock(Base):
    __tablename__ = "explorer_bridge_blocks"
    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(66))
    timestamp: Mapped[int] = mapped_column(BigInteger)


class BridgeEvent(LogColumns, Base):
    __tablename__ = "explorer_bridge_events"
    __table_args__ = (UniqueConstraint("chain_id", "tx_hash", "log_index", name="uq_bridge_event"),
                      Index("ix_bridge_event_chain", "chain_id", "block_number", "log_index"),
                      Index("ix_bridge_event_message", "message_id"),
                      Index("ix_bridge_event_tx", "tx_hash"))
    chain_id: Mapped[int] = mapped_column(BigInteger, sort_order=-2)   # before the log columns
    message_id: Mapped[str | None] = mapped_column(String(66), nullable=True)


class CrossChainTransfer(Base):
    """One bridge message and what became of it on both chains (derive_bridge.TransferRow)."""

    __tablename__ = "explorer_crosschain_transfers"
    __table_args__ = (Index("ix_crosschain_sent", "source_timestamp", "message_id"),
                      Index("ix_crosschain_state", "state", "source_timestamp"),
                      Index("ix_crosschain_token", "token", "source_timestamp"))
    message_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    kind: Mapped[int] = mapped_column(BigAmount)
    source_chain: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    destination_chain: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    nonce: Mapped[int | None] = mapped_column(BigAmount, nullable=True)
    sender: Mapped[str | None] = mapped_column(String(42), nullable=True)
    recipient: Mapped[str | None] = mapped_column(String(42), nullable=True)
    amount: Mapped[int] = mapped_column(BigAmount, default=0)
    # "TUSD" (sent by a TokenBridge) or "TSTK" (a StakeBridge); None: neither bridge sent it
    token: Mapped[str | None] = mapped_column(String(8), nullable=True)
    state: Mapped[str] = mapped_column(String(10))
    source_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    source_timestamp: Mapped[int] = mapped_column(BigInteger, default=0)
    queued_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    release_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    delivery_chain: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    delivery_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    delivered_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    received: Mapped[int] = mapped_column(BigAmount, default=0)     # TransferReceived's amount
    cancelled_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    bounce_id: Mapped[str | None] = mapped_column(String(66), nullable=True)
    bounce_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    refunded: Mapped[int] = mapped_column(BigAmount, default=0)     # TransferBounced's amount
    bounce_of: Mapped[str | None] = mapped_column(String(66), nullable=True)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)


class BridgeFunding(Base):
    """A message delivered to BridgeOrders and what it owes its sender (derive_orders.FundingRow)."""

    __tablename__ = "explorer_bridge_fundings"
    __table_args__ = (Index("ix_bridge_funding_delivered", "delivered_at", "message_id"),
                      Index("ix_bridge_funding_order", "order_id"))
    message_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    source_chain: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sender: Mapped[str | None] = mapped_column(String(42), nullable=True)
    amount: Mapped[int] = mapped_column(BigAmount, default=0)
    order_id: Mapped[int | None] = mapped_column(BigAmount, nullable=True)
    tenant: Mapped[str | None] = mapped_column(String(42), nullable=True)
    lease_id: Mapped[int | None] = mapped_column(BigAmount, nullable=True)
    target: Mapped[str | None] = mapped_column(String(66), nullable=True)
    refunded: Mapped[int] = mapped_column(BigAmount, default=0)
    returned: Mapped[int] = mapped_column(BigAmount, default=0)
    owed: Mapped[int] = mapped_column(BigAmount, default=0)
    returns: Mapped[int] = mapped_column(Integer, default=0)
    delivery_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    delivered_at: Mapped[int] = mapped_column(BigInteger, default=0)
