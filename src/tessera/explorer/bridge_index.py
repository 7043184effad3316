"""Indexing the bridge of every chain the network file names (docs/explorer.md, "The bridge").

`BridgeIndexer` is the market's `Indexer` (same batches, confirmations, resumable cursor and
reorg rollback) over one chain's BridgeOutbox, BridgeInbox and TokenBridge events, its
StakeBridge's where the network file names one (docs/bridge.md, "Stake on another chain"), and on
the home chain BridgeOrders' with the Market's `Refunded` paid to it and the TUSD `Transfer`s in
and out of it (docs/bridge.md, "An order funded in one message"), written to the bridge's tables
(db_bridge.py) with the chain id: one run per chain, each with its own cursor and confirmations.
A cursor remembers the StakeBridge and the BridgeOrders it indexed (or none): a network file
that names another later is refused, since the events before would be missing.

After the chains' runs, if any stored bridge event changed, the derived tables are rebuilt from the
stored events of all chains: the cross-chain transfers (derive_bridge.py), each row with its
token by the bridge that sent it (`bridge_tokens`: the network file's addresses), and
BridgeOrders' fundings (derive_orders.py): a transfer's row needs both chains' events, and the
bridge's history is small beside the market's (every transfer costs gas and passes the bucket),
so a whole rebuild is a few reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from web3 import Web3

from tessera.chain.client import Chain
from tessera.chain.compiler import BRIDGE_CONTRACT_NAMES
from tessera.chain.events import EventReader
from tessera.chain.network import Network
from tessera.errors import IndexerError
from tessera.explorer import db
from tessera.explorer.derive_bridge import (
    BRIDGE_TOKENS,
    Bridges,
    ChainEvent,
    TransferRow,
    message_of,
    transfers,
)
from tessera.explorer.derive_orders import ORDERS, OrdersBook, orders_book
from tessera.explorer.indexer import Indexer, RollbackStats, SyncReport, _put_blocks
from tessera.protocol.events import EventRecord, args_json

STAKE_BRIDGE = "StakeBridge"
# Optional contracts a cursor remembers (an index that missed one's past events is refused)
REMEMBERED = {"stake_bridge": STAKE_BRIDGE, "bridge_orders": ORDERS}


def bridge_contract_names(network: Network) -> tuple[str, ...]:
    """The bridge contracts of one chain whose events are indexed: the outbox, the inbox, the
    TokenBridge, and the StakeBridge and BridgeOrders where the chain's network file names them."""
    return BRIDGE_CONTRACT_NAMES + tuple(name for name in REMEMBERED.values() if name in network.contracts)


def bridge_reader(chain: Chain) -> EventReader:
    """The reader of one chain's bridge events (and the Market's refunds paid to BridgeOrders,
    and the TUSD transfers in and out of it)."""
    also = ((("Market", "Refunded", (ORDERS,)), ("PaymentToken", "Transfer", (ORDERS,)))
            if ORDERS in chain.network.contracts else ())
    return EventReader(chain, contracts=bridge_contract_names(chain.network), also=also)


def bridge_tokens(networks: list[Network]) -> Bridges:
    """{chain id: {token bridge address, lower-case: the token it moves}} of `networks`."""
    return {net.chain_id: {net.contracts[name].lower(): token for name, token in BRIDGE_TOKENS.items()
                           if name in net.contracts} for net in networks}


def _named(network: Network, name: str) -> str | None:
    address = network.contracts.get(name)
    return Web3.to_checksum_address(address) if address else None


class BridgeIndexer(Indexer):
    """The bridge events of one chain (`chain.network`: the home chain or a peer as a Network)."""

    def _reader(self, chain: Chain) -> EventReader:
        return bridge_reader(chain)

    @property
    def chain_id(self) -> int:
        return self.chain.network.chain_id

    def _cursor(self, session: Session) -> db.BridgeCursor:
        cursor = session.get(db.BridgeCursor, self.chain_id)
        outbox = Web3.to_checksum_address(self.chain.network.address("BridgeOutbox"))
        named = {column: _named(self.chain.network, name) for column, name in REMEMBERED.items()}
        if cursor is None:
            first = self.chain.network.deploy_block
            cursor = db.BridgeCursor(chain_id=self.chain_id, outbox=outbox, first_block=first,
                                     last_block=first - 1, last_hash=None, last_timestamp=None,
                                     **named)
            session.add(cursor)
            session.flush()
        elif cursor.outbox != outbox:
            raise IndexerError(
                f"this database indexes the bridge with outbox {cursor.outbox} on chain {self.chain_id}, "
                f"not {outbox}: use another --database")
        for column, name in REMEMBERED.items():
            have, want = getattr(cursor, column), named[column]
            if have != want:
                raise IndexerError(
                    f"this database indexes the bridge of chain {self.chain_id} with "
                    f"{f'{name} {have}' if have else f'no {name}'}, and the network file names "
                    f"{f'{name} {want}' if want else 'none'}: its events up to block "
                    f"{cursor.last_block} would be missing or wrong; use another --database")
        return cursor

    def _stored_blocks(self, session: Session, below: int) -> list[tuple[int, str]]:
        b = db.BridgeBlock
        return [tuple(row) for row in session.execute(
            select(b.number, b.hash).where(b.chain_id == self.chain_id, b.number < below)
            .order_by(b.number.desc()).limit(200)).all()]

    def _rollback_rows(self, session: Session, keep: int) -> RollbackStats:
        removed = session.scalar(select(func.count()).select_from(db.BridgeEvent).where(
            db.BridgeEvent.chain_id == self.chain_id, db.BridgeEvent.block_number > keep)) or 0
        session.execute(delete(db.BridgeEvent).where(db.BridgeEvent.chain_id == self.chain_id,
                                                     db.BridgeEvent.block_number > keep))
        session.execute(delete(db.BridgeBlock).where(db.BridgeBlock.chain_id == self.chain_id,
                                                     db.BridgeBlock.number > keep))
        return RollbackStats(keep=keep, removed_events=removed)

    def _store(self, session: Session, records: list[EventRecord]) -> None:
        for r in records:
            session.add(db.BridgeEvent(
                chain_id=self.chain_id, block_number=r.block_number, block_hash=r.block_hash,
                timestamp=r.timestamp, tx_hash=r.tx_hash, log_index=r.log_index, contract=r.contract,
                event=r.event, args=args_json(r.args), message_id=message_of(r)))

    def _put_blocks(self, session: Session, blocks: dict[int, tuple[str, int]]) -> None:
        _put_blocks(session, blocks, db.BridgeBlock, chain_id=self.chain_id)


@dataclass
class BridgeSync:
    """One run over every chain: each chain's report, and how many transfer rows there are."""

    reports: dict[int, SyncReport] = field(default_factory=dict)
    rebuilt: bool = False
    transfers: int = 0

    def lines(self, quiet: bool = False) -> list[str]:
        """A line per chain for a person (`quiet`: only the chains that indexed something)."""
        out = []
        for cid, r in sorted(self.reports.items()):
            if r.reorg_rolled_back_to is not None:
                out.append(f"bridge on {cid}: reorg: rolled back to block {r.reorg_rolled_back_to}")
            if r.batches:
                out.append(f"bridge on {cid}: indexed blocks {r.from_block}..{r.to_block}: {r.events} "
                           f"events (head {r.head}, final up to {r.safe_head})")
            elif not quiet:
                out.append(f"bridge on {cid}: up to date (head {r.head}, final up to {r.safe_head})")
        if self.rebuilt or not quiet:
            out.append(f"bridge: {self.transfers} cross-chain messages")
        return out


def parse_chain_confirmations(specs: list[str]) -> dict[int, int]:
    """['31338=4'] -> {31338: 4}; a clear ValueError otherwise."""
    out: dict[int, int] = {}
    for spec in specs:
        chain, _, depth = spec.partition("=")
        try:
            cid, n = int(chain), int(depth)
        except ValueError:
            raise ValueError(f"--chain-confirmations {spec!r}: write CHAIN_ID=N, e.g. 31338=4") from None
        if n < 0:
            raise ValueError(f"--chain-confirmations {spec!r}: confirmations must be >= 0")
        if cid in out:
            raise ValueError(f"--chain-confirmations names chain {cid} twice")
        out[cid] = n
    return out


def bridge_chains(network: Network) -> list[Network]:
    """The chains whose bridge is indexed: every chain of a network that names peers, else none."""
    return network.chains() if network.peers else []


def bridge_indexers(network: Network, engine: Engine, confirmations: int = 12,
                    batch_blocks: int = 500, per_chain: dict[int, int] | None = None,
                    timeout: float = 60) -> list[BridgeIndexer]:
    """One BridgeIndexer per chain, at `confirmations` or the chain's own in `per_chain`."""
    chains = bridge_chains(network)
    unknown = sorted(set(per_chain or {}) - {net.chain_id for net in chains})
    if unknown:
        names = ", ".join(str(n.chain_id) for n in chains) or "none"
        raise ValueError(f"--chain-confirmations names chain {unknown[0]}, which the network file's "
                         f"bridge does not (chains: {names})")
    out = []
    for net in chains:
        depth = (per_chain or {}).get(net.chain_id, confirmations)
        out.append(BridgeIndexer(Chain(net, timeout=timeout), engine, confirmations=depth,
                                 batch_blocks=batch_blocks))
    return out


def sync_bridge(indexers: list[BridgeIndexer], engine: Engine,
                progress: Callable[[int, SyncReport], None] | None = None) -> BridgeSync:
    """Sync each chain, then rebuild the transfers if any chain's events changed."""
    out = BridgeSync()
    for indexer in indexers:
        report = indexer.sync()
        out.reports[indexer.chain_id] = report
        if progress:
            progress(indexer.chain_id, report)
    changed = any(r.events or r.reorg_rolled_back_to is not None for r in out.reports.values())
    with Session(engine) as session, session.begin():
        count = session.scalar(select(func.count()).select_from(db.CrossChainTransfer)) or 0
        if changed or (count == 0 and stored_bridge_events(session)):
            count = rebuild_transfers(session, [i.chain.network for i in indexers])
            out.rebuilt = True
    out.transfers = count
    return out


def stored_bridge_events(session: Session) -> list[ChainEvent]:
    rows = session.scalars(select(db.BridgeEvent).order_by(
        db.BridgeEvent.chain_id, db.BridgeEvent.block_number, db.BridgeEvent.log_index))
    return [ChainEvent(row.chain_id, EventRecord(
        block_number=row.block_number, block_hash=row.block_hash, timestamp=row.timestamp,
        tx_hash=row.tx_hash, log_index=row.log_index, contract=row.contract, event=row.event,
        args=json.loads(row.args))) for row in rows]


def rebuild_transfers(session: Session, networks: list[Network]) -> int:
    """Replace the derived tables (transfers and fundings) by what the stored events of
    `networks`' chains give; returns the transfers' row count."""
    events = stored_bridge_events(session)
    rows = transfers(events, bridge_tokens(networks))
    session.execute(delete(db.CrossChainTransfer))
    session.add_all(db.CrossChainTransfer(**row.values()) for row in rows.values())
    session.execute(delete(db.BridgeFunding))
    book = book_of(networks, events, rows)
    if book is not None:
        session.add_all(db.BridgeFunding(**f.values()) for f in book.fundings.values())
    session.flush()
    return len(rows)


def book_of(networks: list[Network], events: list[ChainEvent],
            rows: dict[str, TransferRow]) -> OrdersBook | None:
    """BridgeOrders' book from the events of the chain that names it (None: no chain does)."""
    for net in networks:
        if ORDERS in net.contracts:
            return orders_book(events, net.chain_id, net.contracts[ORDERS], rows)
    return None


def bridge_cursors(engine: Engine) -> dict[int, db.BridgeCursor]:
    with Session(engine) as session:
        found = {c.chain_id: c for c in session.scalars(select(db.BridgeCursor))}
        session.expunge_all()
        return found
