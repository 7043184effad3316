"""The audit's bridge part (`tessera audit` on a network with peer chains; docs/explorer.md).

No database is trusted: each chain's bridge events are read again over JSON-RPC from its deploy
block up to the block its cursor calls final, and from them alone:
- the cross-chain transfers are recomputed (derive_bridge.transfers) and compared, row by row and
  column by column, with the database's derived table; the stored event count of each chain with
  the chain's;
- every rule of derive_bridge.problems: per direction and token (TUSD by the TokenBridges, TSTK
  by the StakeBridges), locked = received + in flight + refunded; no delivery without its send,
  none twice, none on another chain, none of another amount; every refund for a cancelled
  transfer, of what was sent; no value sent by a contract that is neither token bridge;
- each token bridge moves the token the network file names for it (its `token()`: TokenBridge the
  chain's PaymentToken, StakeBridge its StakeToken);
- on each lock-mode token bridge, the `balanceOf` of its `token()` at the audited block (an
  independent reading) must cover what its logs say it holds (sent - received - bounced): less is
  a shortfall; more is tokens sent to it directly, outside the formula (docs/bridge.md), shown,
  not a problem;
- on each mint-mode token bridge, the home token's supply (audit_supply.py): its totalSupply
  against its own mint and burn logs, every bridge receipt and send against its mint or burn,
  and what was minted at home outside the bridge (shown);
- where the home chain has BridgeOrders, what it owes each funding's sender by the logs against
  its `owed(id)` and its `balanceOf` (audit_orders.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from web3 import Web3

from tessera.chain.client import Chain
from tessera.chain.eth_calls import balance_of_call, calls_at
from tessera.chain.network import Network
from tessera.chain.token_bridge import StakeBridge, TokenBridge
from tessera.explorer import db
from tessera.explorer.audit_orders import OrdersAudit, orders_audit
from tessera.explorer.audit_supply import Supply, read_supply
from tessera.explorer.bridge_index import book_of, bridge_chains, bridge_cursors, bridge_reader, bridge_tokens
from tessera.explorer.derive_bridge import (
    BRIDGE_TOKENS,
    COLUMNS,
    TOKEN_DECIMALS,
    ChainEvent,
    Direction,
    differences,
    directions,
    problems,
    transfers,
)
from tessera.protocol.money import show_amount

WRAPPERS: dict[str, type[TokenBridge]] = {TokenBridge.NAME: TokenBridge, StakeBridge.NAME: StakeBridge}
assert set(WRAPPERS) == set(BRIDGE_TOKENS)


def show(value: int, token: str) -> str:
    """An amount of `token` ("TUSD", "TSTK") for a person."""
    return show_amount(value, TOKEN_DECIMALS[token], token)


@dataclass
class LockSide:
    """A lock-mode token bridge: what its logs say it holds, and its token's balanceOf."""

    chain_id: int
    held_by_logs: int
    balance_of: int
    bridge: str = TokenBridge.NAME      # "TokenBridge" or "StakeBridge"
    token: str = TokenBridge.TOKEN.SYMBOL


@dataclass
class BridgeAudit:
    blocks: dict[int, int] = field(default_factory=dict)      # chain id -> audited block
    events: int = 0
    transfers: int = 0
    directions: list[Direction] = field(default_factory=list)
    lock_sides: list[LockSide] = field(default_factory=list)
    supplies: list[Supply] = field(default_factory=list)    # the home tokens (audit_supply.py)
    orders: OrdersAudit | None = None                        # BridgeOrders (audit_orders.py)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"blocks": {str(k): v for k, v in self.blocks.items()}, "events": self.events,
                "transfers": self.transfers, "directions": [d.to_json() for d in self.directions],
                "lock_sides": [vars(s) for s in self.lock_sides],
                "supplies": [s.to_json() for s in self.supplies],
                "orders": self.orders.to_json() if self.orders else None, "problems": self.problems}

    def lines(self) -> list[str]:
        """The audit's bridge lines for a person."""
        out = [f"bridge: {self.transfers} cross-chain messages from {self.events} events on chains "
               + ", ".join(f"{c} (block {b})" for c, b in sorted(self.blocks.items()))]
        for d in self.directions:
            t = d.token
            out.append(f"  {d.source} -> {d.destination} {t}: locked {show(d.locked, t)} = received "
                       f"{show(d.received, t)} + in flight {show(d.in_flight, t)} + refunded "
                       f"{show(d.refunded, t)}: " + ("adds up" if d.adds_up else "DOES NOT ADD UP"))
        for s in self.lock_sides:
            out.append(f"  {s.bridge} on {s.chain_id} holds {show(s.balance_of, s.token)} (balanceOf); "
                       f"its logs say {show(s.held_by_logs, s.token)}")
        for s in self.supplies:
            out.append(f"  {s.token} supply on {s.chain_id}: {show(s.supply, s.token)} = "
                       f"{show(s.bridged, s.token)} minted by {s.bridge} (locked on peers) + "
                       f"{show(s.outside_minted, s.token)} minted at home outside the bridge - "
                       f"{show(s.outside_burned, s.token)} burned outside it")
        if self.orders:
            out.append(self.orders.line())
        return out


def bridge_audit(network: Network, engine: Engine) -> BridgeAudit:
    """Every bridge check of `tessera audit` over the chains `network` names."""
    out = BridgeAudit()
    cursors = bridge_cursors(engine)
    events: list[ChainEvent] = []
    outboxes: dict[int, str] = {}
    chains: dict[int, tuple[Chain, int]] = {}
    nets = bridge_chains(network)
    bridges = bridge_tokens(nets)
    for net in nets:
        cid = net.chain_id
        outboxes[cid] = Web3.to_checksum_address(net.address("BridgeOutbox"))
        cursor = cursors.get(cid)
        if cursor is None or cursor.last_hash is None:
            out.problems.append(f"chain {cid}: its bridge is not indexed: run `tessera explorer index`")
            continue
        chain = Chain(net, timeout=60)
        reader = bridge_reader(chain)
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
    rows = transfers(events, bridges)
    out.events, out.transfers = len(events), len(rows)
    out.problems += [f"derived table vs logs: {p}" for p in _compare_rows(engine, rows)]
    out.problems += problems(events, rows, outboxes, bridges)
    out.directions = list(directions(events, rows, bridges).values())
    for cid, (chain, block) in sorted(chains.items()):
        for name in BRIDGE_TOKENS:
            if name not in chain.network.contracts:
                continue
            side = _lock_side(chain, WRAPPERS[name], block, events, out.problems)
            if side is None:
                continue
            out.lock_sides.append(side)
            if side.balance_of < side.held_by_logs:
                out.problems.append(f"chain {cid}: {name} holds {side.balance_of} {side.token} base units "
                                    f"at block {block} but its logs say {side.held_by_logs}: "
                                    f"{side.held_by_logs - side.balance_of} missing")
        here = [e.record for e in events if e.chain_id == cid]
        for name in BRIDGE_TOKENS:
            supply = read_supply(chain, WRAPPERS[name], block, here)
            if supply is not None:
                out.supplies.append(supply)
                out.problems += supply.problems
    book = book_of([chain.network for chain, _ in chains.values()], events, rows)
    home = next(((c, b) for c, b in chains.values() if "BridgeOrders" in c.network.contracts), None)
    if book is not None and home is not None:
        out.orders = orders_audit(home[0], home[1], book, engine)
        out.problems += out.orders.problems
    return out


def _lock_side(chain: Chain, kind: type[TokenBridge], block: int, events: list[ChainEvent],
               problems_out: list[str]) -> LockSide | None:
    """A lock-mode token bridge's (`kind`: TokenBridge or StakeBridge) holding by its logs, and
    the balanceOf of its `token()` at `block` (None on the mint side: it holds nothing). A bridge
    whose `token()` is not the token the network file names for it is a problem (its amounts
    would be read in the wrong unit), and so is a network file that names no such token."""
    cid, token = chain.network.chain_id, kind.TOKEN
    if token.NAME not in chain.network.contracts:
        problems_out.append(f"chain {cid}: the network file names a {kind.NAME} but no {token.NAME}: "
                            "its lock cannot be checked")
        return None
    bridge = kind(chain)
    moves = Web3.to_checksum_address(bridge.token())
    if moves != Web3.to_checksum_address(bridge.token_wrapper.address):
        problems_out.append(f"chain {cid}: {kind.NAME} moves the token at {moves}, not the network "
                            f"file's {token.NAME} {bridge.token_wrapper.address}")
    if bridge.mint_mode():
        return None
    held = 0
    for item in events:
        if item.chain_id != cid or item.record.contract != kind.NAME:
            continue
        name, amount = item.record.event, int(item.record.args.get("amount", 0))
        held += amount if name == "TransferSent" else -amount if name in (
            "TransferReceived", "TransferBounced") else 0
    [balance] = calls_at(chain, [balance_of_call(moves, bridge.address)], block, "balanceOf")
    return LockSide(cid, held, balance, kind.NAME, token.SYMBOL)


def _compare_rows(engine: Engine, rows: dict) -> list[str]:
    with Session(engine) as session:
        stored = {r.message_id: r for r in session.scalars(select(db.CrossChainTransfer))}
    return differences("message", stored, rows, COLUMNS)
