"""Agents' payments, from event records (pure): who paid which provider, by which scheme.

Two schemes put an agent's money in a provider's hands (docs/agents_budget.md):

- **budget**: `AgentBudget.AgentPaid(grant_id, owner, payee, key, amount, nonce)`, a session key's
  signed payment out of its owner's deposit (the contract's own Transfer to the payee follows in
  the same transaction; `holdings.agent_payment_problems` checks that it does);
- **exact**: x402's "exact" scheme, an EIP-3009 `transferWithAuthorization` (or
  `receiveWithAuthorization`) on the PaymentToken straight from the agent's wallet: the token
  logs `AuthorizationUsed(authorizer, nonce)` and then the `Transfer(authorizer, to, value)` it
  makes. The payment is the first PaymentToken `Transfer` from the authorizer after its
  `AuthorizationUsed` in the same transaction (chain/events.py reads exactly those transfers, so
  the indexer never reads every transfer on the chain).

A payment counts as **agent revenue of a provider** only when its payee is a registered provider
at the payment (a `ProviderRegistered` before it; the registry never unregisters). The figures
do not exclude self-payments: a provider can pay itself through its own budget or wallet
(`self_paid`: payer == payee, visible) or through another address it controls (invisible on chain).
The payer is the budget's owner (budget) or the authorizer (exact); `payers` counts distinct ones.

`AgentPayments` is the fold: `apply(record)` in chain order gives the payment a record makes, or
None; `book(record, add)` also books every agent figure through `add(name, key, value, tx)`
(protocol/figure_book.py calls it). Figures (docs/explorer.md, "Agent payments"):

- `agent_payments.{total,by_provider,by_scheme,by_day}.{count,amount}`: payments to registered
  providers (keys: 'all', the provider, 'budget'/'exact', the UTC day);
- `agent_payments.{total,by_provider}.{self_count,self_amount,payers}`;
- `agent_budget.total.{deposits,withdrawals,paid,payments,balance,grants}`: the AgentBudget's
  money, payments to any payee included (`balance`: what owners can still withdraw).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tessera.protocol.events import EventRecord
from tessera.protocol.figure_parts import ALL, day_of
from tessera.protocol.messages import typed_data

BUDGET, EXACT = "budget", "exact"
SCHEMES = (BUDGET, EXACT)
AGENT_TUSD_PARTS = ("amount", "self_amount", "deposits", "withdrawals", "paid", "balance")


@dataclass(frozen=True)
class AgentPayment:
    """One agent payment, from the log that moved the money (AgentPaid, or the EIP-3009 Transfer)."""

    scheme: str             # BUDGET or EXACT
    payer: str              # budget: the grant's owner; exact: the authorizer (its wallet)
    key: str                # budget: the session key that signed; exact: the authorizer
    payee: str
    amount: int             # payment-token base units
    grant_id: int | None    # budget only
    nonce: str              # 0x hex: the AgentPayment's or the EIP-3009 authorization's
    to_provider: bool       # the payee was a registered provider at the payment
    tx_hash: str
    log_index: int
    block_number: int
    timestamp: int

    @property
    def self_paid(self) -> bool:
        """Paid by the payee's own address (its own budget or wallet): a visible self-payment."""
        return self.payer.lower() == self.payee.lower()


Add = Callable[[str, str, int, str | None], None]


class AgentPayments:
    """The payments of a stream of records in chain order (see the module docstring)."""

    def __init__(self) -> None:
        self.providers: set[str] = set()
        self.tx = ""                                # the transaction `pending` belongs to
        self.pending: dict[str, list[str]] = {}     # authorizer -> unpaired nonces, in `tx`
        self.payers: dict[str, set[str]] = {}       # provider (or ALL) -> distinct payers

    def apply(self, r: EventRecord) -> AgentPayment | None:
        if r.tx_hash != self.tx:
            self.tx, self.pending = r.tx_hash, {}
        a = r.args
        if r.contract == "ProviderRegistry" and r.event == "ProviderRegistered":
            self.providers.add(a["provider"])
        elif r.contract == "AgentBudget" and r.event == "AgentPaid":
            return AgentPayment(BUDGET, a["owner"], a["key"], a["payee"], int(a["amount"]),
                                int(a["grant_id"]), str(a["nonce"]), a["payee"] in self.providers,
                                r.tx_hash, r.log_index, r.block_number, r.timestamp)
        elif r.contract == "PaymentToken":
            if r.event == "AuthorizationUsed":
                self.pending.setdefault(a["authorizer"], []).append(str(a["nonce"]))
            elif r.event == "Transfer" and self.pending.get(a["sender"]):
                nonce = self.pending[a["sender"]].pop(0)
                return AgentPayment(EXACT, a["sender"], a["sender"], a["receiver"], int(a["value"]),
                                    None, nonce, a["receiver"] in self.providers, r.tx_hash,
                                    r.log_index, r.block_number, r.timestamp)
        return None

    def book(self, r: EventRecord, add: Add) -> AgentPayment | None:
        """`apply`, and book the agent figures of `r` through `add(name, key, value, tx)`."""
        a, tx = r.args, r.tx_hash
        if r.contract == "AgentBudget":
            if r.event == "Deposited":
                add("agent_budget.total.deposits", ALL, int(a["amount"]), tx)
                add("agent_budget.total.balance", ALL, int(a["amount"]), tx)
            elif r.event == "Withdrawn":
                add("agent_budget.total.withdrawals", ALL, int(a["amount"]), tx)
                add("agent_budget.total.balance", ALL, -int(a["amount"]), tx)
            elif r.event == "Granted":
                add("agent_budget.total.grants", ALL, 1, tx)
            elif r.event == "AgentPaid":
                add("agent_budget.total.paid", ALL, int(a["amount"]), tx)
                add("agent_budget.total.payments", ALL, 1, tx)
                add("agent_budget.total.balance", ALL, -int(a["amount"]), tx)
        p = self.apply(r)
        if p is None or not p.to_provider:
            return p
        keys = (("total", ALL), ("by_provider", p.payee), ("by_scheme", p.scheme),
                ("by_day", day_of(p.timestamp)))
        for scope, key in keys:
            add(f"agent_payments.{scope}.count", key, 1, tx)
            add(f"agent_payments.{scope}.amount", key, p.amount, tx)
        for scope, key in keys[:2]:
            add(f"agent_payments.{scope}.self_count", key, int(p.self_paid), tx)
            add(f"agent_payments.{scope}.self_amount", key, p.amount if p.self_paid else 0, tx)
            seen = self.payers.setdefault(key, set())
            add(f"agent_payments.{scope}.payers", key, int(p.payer not in seen), tx)
            seen.add(p.payer)
        return p

    # -- state -------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"providers": sorted(self.providers), "tx": self.tx,
                "pending": {k: list(v) for k, v in self.pending.items()},
                "payers": {k: sorted(v) for k, v in self.payers.items()}}

    @classmethod
    def from_json(cls, raw: dict) -> AgentPayments:
        out = cls()
        out.providers = set(raw["providers"])
        out.tx = raw["tx"]
        out.pending = {k: list(v) for k, v in raw["pending"].items()}
        out.payers = {k: set(v) for k, v in raw["payers"].items()}
        return out


def agent_payments(records: list[EventRecord]) -> list[AgentPayment]:
    """Every agent payment of `records` (chain order), to providers and to anyone else."""
    fold = AgentPayments()
    return [p for p in (fold.apply(r) for r in sorted(records, key=lambda r: r.order)) if p]


# EIP-3009's signed message (the "exact" x402 scheme's authorization)
AUTHORIZATION_TYPE = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]


def authorization_typed_data(chain_id: int, token: str, name: str, version: str,
                             authorization: dict) -> dict:
    """The full EIP-712 message of an EIP-3009 `transferWithAuthorization` (x402 "exact": the
    payload's `authorization`, its fields as the SDK writes them); ValueError if one is not."""
    fields = {}
    for key in ("validAfter", "validBefore", "value"):
        text = authorization.get(key)
        if not (isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 78):
            raise ValueError(f"authorization.{key} is not decimal digits: {str(text)[:80]!r}")
        fields[key] = int(text)
    nonce = authorization.get("nonce")
    if not (isinstance(nonce, str) and len(nonce) == 66 and nonce[:2] == "0x"):
        raise ValueError(f"authorization.nonce is not 0x and 32 bytes of hex: {str(nonce)[:80]!r}")
    message = {"from": authorization.get("from"), "to": authorization.get("to"), **fields,
               "nonce": bytes.fromhex(nonce[2:])}
    return typed_data("TransferWithAuthorization", AUTHORIZATION_TYPE, message, chain_id, token,
                      domain_name=name, version=version)
