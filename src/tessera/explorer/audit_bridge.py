"""The audit's bridge part (`tessera audit` on a network with peer chains; docs/explorer.md).

No database is trusted: each chain's bridge events are read again over JSON-RPC from its deploy
block up to the block its cursor calls final, and from them alone:
- the cross-chain transfers are recomputed (derive_bridge.transfers) and compared, row by row and
  column by column, with the database's derived table; the stored event count of each chain with
  the chain's;
- every rule of derive_bridge.problems: per direction, locked = received + in flight + refunded;
  no delivery without its send, none twice, none on another chain, none of another amount; every
  refund for a cancelled transfer, of what was sent;
- on a lock-mode TokenBridge, its PaymentToken `balanceOf` at the audited block (an independent
  reading) must cover what its logs say it holds (sent - received - bounced): less is a shortfall;
  more is tokens sent to it directly, outside the formula (docs/bridge.md), shown, not a problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from web3 import Web3

from tessera.chain.client import Chain
from tessera.chain.compiler import BRIDGE_CONTRACT_NAMES
from tessera.chain.events import EventReader
from tessera.chain.network import Network
from tessera.chain.token_bridge import TokenBridge
from tessera.explorer import db
from tessera.explorer.bridge_index import bridge_chains, bridge_cursors
from tessera.explorer.derive_bridge import COLUMNS, ChainEvent, Direction, directions, problems, transfers
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL, show_amount

BALANCE_OF = "0x70a08231"   # ERC-20 balanceOf(address)


@dataclass
class LockSide:
    chain_id: int
    held_by_logs: int
    balance_of: int


@dataclass
class BridgeAudit:
    blocks: dict[int, int] = field(default_factory=dict)      # chain id -> audited block
    events: int = 0
    transfers: int = 0
    directions: list[Direction] = field(default_factory=list)
    lock_sides: list[LockSide] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"blocks": {str(k): v for k, v in self.blocks.items()}, "events": self.events,
                "transfers": self.transfers, "directions": [d.to_json() for d in self.directions],
                "lock_sides": [vars(s) for s in self.lock_sides], "problems": self.problems}

    def lines(self) -> list[str]:
        """The audit's bridge lines for a person."""
        show = lambda v: show_amount(v, PAYMENT_DECIMALS, PAYMENT_SYMBOL)  # noqa: E731
        out = [f"bridge: {self.transfers} cross-chain messages from {self.events} events on chains "
               + ", ".join(f"{c} (block {b})" for c, b in sorted(self.blocks.items()))]
        for d in self.directions:
            out.append(f"  {d.source} -> {d.destination}: locked {show(d.locked)} = received "
                       f"{show(d.received)} + in flight {show(d.in_flight)} + refunded {show(d.refunded)}: "
                       + ("adds up" if d.adds_up else "DOES NOT ADD UP"))
        for s in self.lock_sides:
            out.append(f"  TokenBridge on {s.chain_id} holds {show(s.balance_of)} (balanceOf); its logs "
                       f"say {show(s.held_by_logs)}")
        return out


def _balance_of(chain: Chain, token: str, holder: str, block: int) -> int:
    data = BALANCE_OF + holder.lower().removeprefix("0x").rjust(64, "0")
    raw = chain.rpc(lambda: chain.w3.eth.call({"to": token, "data": data}, block), what="balanceOf")
    return int.from_bytes(bytes(raw), "big")


def bridge_audit(network: Network, engine: Engine) -> BridgeAudit:
    """Every bridge check of `tessera audit` over the chains `network` names."""
    out = BridgeAudit()
    cursors = bridge_cursors(engine)
    events: list[ChainEvent] = []
    outboxes: dict[int, str] = {}
    chains: dict[int, tuple[Chain, int]] = {}
    for net in bridge_chains(network):
        cid = net.chain_id
        outboxes[cid] = Web3.to_checksum_address(net.address("BridgeOutbox"))
        cursor = cursors.get(cid)
        if cursor is None or cursor.last_hash is None:
            out.problems.append(f"chain {cid}: its bridge is not indexed: run `tessera explorer index`")
            continue
        chain = Chain(net, timeout=60)
        reader = EventReader(chain, contracts=BRIDGE_CONTRACT_NAMES)
        block = reader.block(cursor.last_block)
        if block is None or block[0] != cursor.last_hash:
            out.problems.append(f"chain {cid}: block {cursor.last_block} is not the one the database "
                                f"indexed ({cursor.last_hash}): a reorg; run `tessera explorer index` again")
        records = reader.events(cursor.first_block, cursor.last_block)
        events += [ChainEvent(cid, r) for r in records]
        out.blocks[cid] = cursor.last_block
        chains[cid] = (chain, cursor.last_block)
        with Session(engine) as session:
            stored = session.scalar(select(func.count()).select_from(db.BridgeEvent)
                                    .where(db.BridgeEvent.chain_id == cid)) or 0
        if stored != len(records):
            out.problems.append(f"chain {cid}: {len(records)} bridge events on chain, {stored} in "
                                "the database")
    rows = transfers(events)
    out.events, out.transfers = len(events), len(rows)
    out.problems += [f"derived table vs logs: {p}" for p in _compare_rows(engine, rows)]
    out.problems += problems(events, rows, outboxes)
    out.directions = [d for _, d in sorted(directions(events, rows, outboxes).items())]
    for cid, (chain, block) in sorted(chains.items()):
        side = _lock_side(chain, cid, block, events)
        if side is None:
            continue
        out.lock_sides.append(side)
        if side.balance_of < side.held_by_logs:
            out.problems.append(f"chain {cid}: TokenBridge holds {side.balance_of} base units at block "
                                f"{block} but its logs say {side.held_by_logs}: "
                                f"{side.held_by_logs - side.balance_of} missing")
    return out


def _lock_side(chain: Chain, cid: int, block: int, events: list[ChainEvent]) -> LockSide | None:
    """A lock-mode TokenBridge's holding by its logs, and its balanceOf at `block` (None on the
    mint side: it holds nothing)."""
    bridge = TokenBridge(chain)
    if bridge.mint_mode():
        return None
    held = 0
    for item in events:
        if item.chain_id != cid:
            continue
        name, amount = item.record.event, int(item.record.args.get("amount", 0))
        held += amount if name == "TransferSent" else -amount if name in (
            "TransferReceived", "TransferBounced") else 0
    token = Web3.to_checksum_address(chain.network.address("PaymentToken"))
    return LockSide(cid, held, _balance_of(chain, token, bridge.address, block))


def _compare_rows(engine: Engine, rows: dict) -> list[str]:
    with Session(engine) as session:
        stored = {r.message_id: r for r in session.scalars(select(db.CrossChainTransfer))}
    out = []
    for mid in sorted(set(rows) | set(stored)):
        if mid not in stored:
            out.append(f"message {mid}: in the logs, not in the database")
            continue
        if mid not in rows:
            out.append(f"message {mid}: in the database, not in the logs")
            continue
        want = rows[mid].values()
        for column in COLUMNS:
            have = getattr(stored[mid], column)
            if have != want[column]:
                out.append(f"message {mid}: {column} is {have!r} in the database, {want[column]!r} "
                           "by the logs")
    return out
