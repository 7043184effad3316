"""An agent's x402 client: refuse before signing anything over its limits.

Two layers of refusal, both before a signature exists:

- **The grant's limits** (`BudgetGuard`, for "tessera-budget"): the grant is read from chain
  (grant record, payee allowance, nonce, owner's deposit) and run through
  protocol/agent_budget.payment_refusal, the mirror of the contract's checks; a payment the
  contract would refuse raises PaymentRefused naming the limit ("over cap", "over period
  budget", "revoked", "paused", "expired", "payee not allowed", "nonce used", ...). The
  contract checks again when the payment is settled: the guard saves a pointless signature and
  round trip, it is not the protection.
- **The SDK's spend controls** (`spend_controls`), for every scheme on the network's TUSD,
  "exact" included: the SDK refuses (NoMatchingRequirementsError) requirements in an asset that
  is not listed, or above `max_amount_per_payment`, before any scheme is asked to sign. TUSD is
  no built-in asset of the SDK, so without an entry the SDK refuses every Tessera price.

`budget_client` builds the SDK's x402Client for an agent from a network file, a session key
and a grant id (and optionally a wallet for "exact"); hand it to `x402HttpxClient`.
"""

from __future__ import annotations

import time
from typing import Any

from x402 import x402Client
from x402.client_base import SpendControls, prefer_scheme
from x402.mechanisms.evm.exact import ExactEvmClientScheme

from tessera.chain.agent_budget import AgentBudget, checksum
from tessera.chain.client import Chain
from tessera.chain.network import Network
from tessera.chain.x402_budget import SCHEME, BudgetClientScheme
from tessera.chain.x402_facilitator import caip2
from tessera.errors import PaymentRefused


class BudgetGuard:
    """One grant on one network's AgentBudget, read from chain to refuse before signing.

    Needs no account: an agent holding only its session key reads the chain with it."""

    def __init__(self, budget: AgentBudget, grant_id: int):
        if isinstance(grant_id, bool) or not isinstance(grant_id, int) or grant_id <= 0:
            raise ValueError(f"grant id must be a positive integer, got {grant_id!r}")
        self.budget = budget
        self.grant_id = grant_id
        self.chain_id = budget.chain.network.chain_id
        self.network = caip2(self.chain_id)
        self.budget_address = budget.address
        self._token: str | None = None

    @property
    def token(self) -> str:
        """The contract's token (what it pays out in), read once."""
        if self._token is None:
            self._token = self.budget.chain.call(self.budget.contract.functions.token())
        return self._token

    def domain(self) -> tuple[str, str]:
        return self.budget.domain()

    def now(self) -> int:
        """The timestamp the payment's block will have, at the earliest: the latest block's, or
        the wall clock when that block is older (a node mines the next one at the current time)."""
        return max(self.budget.chain.block_timestamp(), int(time.time()))

    @staticmethod
    def payee(address: str) -> str:
        return checksum("payee", address)

    def available(self) -> int:
        """The most one payment can move now (the contract's `available`)."""
        return self.budget.available(self.grant_id)

    def refusal(self, key: str, payee: str, amount: int, nonce: bytes, deadline: int,
                now: int | None = None) -> str | None:
        """Why the contract would refuse this payment signed by `key`, or None."""
        grant = self.budget.grants(self.grant_id)
        if grant.exists and grant.key.lower() != key.lower():
            return f"session key {key} is not grant {self.grant_id}'s key {grant.key}"
        now = self.now() if now is None else now
        return self.budget.refusal(self.grant_id, self.payee(payee), amount, nonce, deadline,
                                   now=now)

    def check(self, key: str, payee: str, amount: int, nonce: bytes, deadline: int,
              now: int | None = None) -> None:
        """PaymentRefused naming the limit when the contract would refuse the payment."""
        reason = self.refusal(key, payee, amount, nonce, deadline, now)
        if reason is not None:
            raise PaymentRefused(f"payment refused before signing: {reason} (grant "
                                 f"{self.grant_id}, {amount} to {payee})")


def spend_controls(network: str, token: str, max_amount_per_payment: int | None = None
                   ) -> SpendControls:
    """The SDK's spend controls allowing `token` on `network` (CAIP-2), capped per payment at
    `max_amount_per_payment` base units (uncapped when None), for every scheme."""
    entry: dict[str, Any] = {"network": network, "asset": token}
    if max_amount_per_payment is not None:
        if isinstance(max_amount_per_payment, bool) or not isinstance(max_amount_per_payment, int) \
                or max_amount_per_payment <= 0:
            raise ValueError("max_amount_per_payment must be a positive integer (base units), "
                             f"got {max_amount_per_payment!r}")
        entry["max_amount_per_payment"] = str(max_amount_per_payment)
    return {"allowed_assets": [entry]}  # type: ignore[typeddict-item]


def budget_client(network: Network, session_key: Any, grant_id: int, *, wallet: Any = None,
                  max_amount_per_payment: int | None = None, timeout: float = 10) -> x402Client:
    """The SDK's async x402Client for an agent: "tessera-budget" with `session_key` (an
    eth_account account or an SDK ClientEvmSigner) on grant `grant_id`, preferred over "exact",
    which it also offers when `wallet` (an account holding TUSD) is given; spend controls
    allowing the network's TUSD up to `max_amount_per_payment`."""
    budget = AgentBudget(Chain(network, timeout=timeout))
    guard = BudgetGuard(budget, grant_id)
    name = caip2(network.chain_id)
    client = x402Client()
    client.register(name, BudgetClientScheme(session_key, guard))
    if wallet is not None:
        client.register(name, ExactEvmClientScheme(wallet))
    client.register_policy(prefer_scheme(SCHEME))
    client.set_spend_controls(spend_controls(name, guard.token, max_amount_per_payment))
    return client
