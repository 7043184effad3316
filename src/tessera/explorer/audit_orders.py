"""The audit's check of BridgeOrders (docs/explorer.md, "Orders funded across the bridge"): what
the home chain's logs say it owes each funding's sender (derive_orders.py), against the
contract's own `owed(id)` and its TUSD `balanceOf` at the audited block, two independent readings.

- every funding row in the database must equal the one recomputed from the logs, column by column;
- every rule of derive_orders (a delivery behind each funding, none twice, none returned more
  than it was owed, no bounce recovered that never bounced);
- for each funding, `BridgeOrders.owed(id)` at the audited block must equal `owed` by the logs;
- its TUSD Transfer logs in and out must add up to what its events account for (every funding's
  `owed`, every send-back that bounced back and is not yet recovered: each has a way out; and
  tokens that funded nothing, a plain `send` to it or a holder's `transfer`: shown, not a
  problem), and its `balanceOf` must equal what the Transfer logs leave it: a drain with no log
  is named even where tokens that funded nothing would cover it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tessera.chain.client import Chain
from tessera.chain.eth_calls import balance_of_call, calls_at
from tessera.explorer import db
from tessera.explorer.derive_bridge import differences
from tessera.explorer.derive_orders import FUNDING_COLUMNS, ORDERS, OrdersBook
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL, show_amount


def show(value: int) -> str:
    return show_amount(value, PAYMENT_DECIMALS, PAYMENT_SYMBOL)


@dataclass
class OrdersAudit:
    """BridgeOrders' holding at the audited block, by its logs and by the chain (base units)."""

    chain_id: int
    block: int
    fundings: int = 0
    owed: int = 0             # every funding's owed, by the logs
    bounced: int = 0          # send-backs bounced back, not yet recovered
    stranded: int = 0         # delivered with no funding: nobody's
    direct: int = 0           # sent straight to it (a holder's transfer): nobody's
    held_by_transfers: int = 0
    balance_of: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def held_by_logs(self) -> int:
        return self.owed + self.bounced

    def to_json(self) -> dict:
        return {"chain_id": self.chain_id, "block": self.block, "fundings": self.fundings,
                "owed": self.owed, "bounced": self.bounced, "stranded": self.stranded,
                "direct": self.direct, "held_by_logs": self.held_by_logs,
                "held_by_transfers": self.held_by_transfers, "balance_of": self.balance_of,
                "covered": self.balance_of >= self.held_by_logs}

    def line(self) -> str:
        extra = self.stranded + self.direct
        fundings = f"{self.fundings} funding" + ("s owe" if self.fundings != 1 else " owes")
        return (f"  BridgeOrders on {self.chain_id}: {fundings} {show(self.owed)}"
                f" + {show(self.bounced)} bounced back, not yet recovered; it holds "
                f"{show(self.balance_of)} (balanceOf)"
                + (f", {show(extra)} of it funded nothing" if extra > 0 else ""))


def orders_audit(chain: Chain, block: int, book: OrdersBook, engine: Engine) -> OrdersAudit:
    """Every check of BridgeOrders on `chain` (the home chain) at `block` against `book`, the
    book recomputed from the logs read again."""
    out = OrdersAudit(chain.network.chain_id, block, fundings=len(book.fundings), owed=book.owed,
                      bounced=sum(book.bounced.values()), stranded=sum(book.stranded.values()),
                      direct=book.direct, held_by_transfers=book.held_by_transfers)
    out.problems += [f"BridgeOrders: {p}" for p in book.problems]
    out.problems += _compare(engine, book)
    contract = chain.contract(ORDERS)
    ids = sorted(book.fundings)
    calls = [{"to": contract.address, "data": contract.encode_abi("owed", args=[bytes.fromhex(i[2:])])}
             for i in ids]
    calls.append(balance_of_call(chain.contract("PaymentToken").address, contract.address))
    results = calls_at(chain, calls, block, what="BridgeOrders reads")
    out.balance_of = results.pop()
    for mid, on_chain in zip(ids, results, strict=True):
        by_logs = book.fundings[mid].owed
        if on_chain != by_logs:
            out.problems.append(f"BridgeOrders: funding {mid} is owed {show(on_chain)} by owed() at block "
                                f"{block}, {show(by_logs)} by the logs")
    if out.balance_of < out.held_by_logs:
        short = out.held_by_logs - out.balance_of
        out.problems.append(f"BridgeOrders holds {show(out.balance_of)} at block {block} but owes "
                            f"{show(out.held_by_logs)} by its logs: {show(short)} missing")
    if out.balance_of != out.held_by_transfers:
        out.problems.append(f"BridgeOrders' TUSD balanceOf at block {block} is {show(out.balance_of)} but "
                            f"its Transfer logs leave it {show(out.held_by_transfers)}: "
                            f"{show(out.balance_of - out.held_by_transfers)} moved without a log")
    return out


def _compare(engine: Engine, book: OrdersBook) -> list[str]:
    with Session(engine) as session:
        stored = {r.message_id: r for r in session.scalars(select(db.BridgeFunding))}
    return differences("funding", stored, book.fundings, FUNDING_COLUMNS)
