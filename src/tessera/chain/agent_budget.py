"""AgentBudget.vy: an owner's deposit, the session keys it grants, and their signed payments.

The owner deposits TUSD (`deposit`), grants a session key a budget per period, a cap per
payment, payees, a start and an expiry (`grant`), and may pause, revoke and withdraw at any
time. The key signs an EIP-712 `AgentPayment` (`sign_payment`, refused before signing when the
contract would refuse it: protocol/agent_budget.py mirrors its limits) and anyone submits it
(`pay`). Inputs are checked here, before anything is sent, with errors that name the field.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import TxReceipt

from tessera.chain.client import tx_hash
from tessera.chain.contract import ContractWrapper
from tessera.chain.tokens import PaymentToken
from tessera.errors import ChainError, PaymentRefused, TxRefused
from tessera.protocol.agent_budget import (
    MAX_PAYEES,
    Grant,
    SignedPayment,
    parse_payment,
    payment_refusal,
    payment_typed_data,
)

DEFAULT_DEADLINE_S = 300  # a payment signed now may be submitted for this long


@dataclass(frozen=True)
class AgentPaid:
    """One settled payment, from its AgentPaid event."""
    grant_id: int
    owner: str
    payee: str
    key: str
    amount: int
    nonce: bytes
    tx: str


def checksum(what: str, value: object) -> str:
    """`value` as a checksummed address; ValueError naming `what` when it is not one."""
    if isinstance(value, str | bytes):
        try:
            address = Web3.to_checksum_address(value)
        except (ValueError, TypeError):
            address = None
        if address is not None:
            return address
    raise ValueError(f"{what} is not an address: {value!r}")


def _uint(what: str, value: object, *, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
        raise ValueError(f"{what} must be an unsigned integer, got {value!r}")
    if positive and value == 0:
        raise ValueError(f"{what} must be positive")
    return value


class AgentBudget(ContractWrapper):
    """What an owner, a session key and a payment submitter do with AgentBudget."""

    NAME = "AgentBudget"

    def __init__(self, chain):
        super().__init__(chain)
        self.payment_token = PaymentToken(chain)
        self._domain: tuple[str, str] | None = None

    # -- the owner's deposit ---------------------------------------------------------------
    def deposit(self, amount: int) -> list[TxReceipt]:
        """Move `amount` of the account's TUSD in (approving it first if needed)."""
        _uint("amount", amount, positive=True)
        receipts = self.payment_token.fund(self.address, amount, "the agent budget deposit")
        return [*receipts, self._send("deposit", amount)]

    def withdraw(self, amount: int) -> TxReceipt:
        """Take back `amount` of the account's unspent deposit (any time)."""
        _uint("amount", amount, positive=True)
        have = self.balance_of(self.chain.address)
        if amount > have:
            raise TxRefused(f"withdraw refused: {self.chain.address} has "
                            f"{self.payment_token.format(have)} in the agent budget, asked "
                            f"{self.payment_token.format(amount)}")
        return self._send("withdraw", amount)

    # -- grants ----------------------------------------------------------------------------
    def grant(self, key: str, budget: int, period: int, cap: int, start: int, expiry: int,
              payees: Iterable[str] = (), any_provider: bool = False) -> tuple[int, TxReceipt]:
        """Let session key `key` pay from the account's deposit within these limits; returns
        the grant id (from the Granted event) and the receipt."""
        key = checksum("session key", key)
        _uint("budget", budget, positive=True)
        _uint("period", period, positive=True)
        _uint("cap", cap, positive=True)
        _uint("start", start)
        _uint("expiry", expiry)
        if expiry <= start:
            raise ValueError(f"expiry ({expiry}) must be after start ({start})")
        payees = [checksum(f"payee {i}", p) for i, p in enumerate(payees)]
        if len(payees) > MAX_PAYEES:
            raise ValueError(f"at most {MAX_PAYEES} payees, got {len(payees)}")
        if not payees and not any_provider:
            raise ValueError("a grant needs payees or any_provider")
        if int(key, 16) == 0 or any(int(p, 16) == 0 for p in payees):
            raise ValueError("the zero address cannot be a session key or a payee")
        receipt = self._send("grant", key, budget, period, cap, start, expiry, payees,
                             bool(any_provider))
        return self._event(receipt, "Granted")["grant_id"], receipt

    def set_paused(self, grant_id: int, paused: bool) -> TxReceipt:
        return self._send("set_paused", _uint("grant_id", grant_id), bool(paused))

    def revoke(self, grant_id: int) -> TxReceipt:
        return self._send("revoke", _uint("grant_id", grant_id))

    # -- views -----------------------------------------------------------------------------
    def grants(self, grant_id: int) -> Grant:
        """The grant's record (all zero, `exists` False, for an unknown grant)."""
        record = self._struct("grants", _uint("grant_id", grant_id))
        return Grant(**{name: record[name] for name in Grant.__dataclass_fields__})

    def grant_record(self, grant_id: int) -> Grant:
        """The grant's record; ChainError for an unknown grant."""
        grant = self.grants(grant_id)
        if not grant.exists:
            raise ChainError(f"agent budget grant {grant_id} does not exist")
        return grant

    def grant_count(self) -> int:
        return self._call("grant_count")

    def balance_of(self, owner: str) -> int:
        return self._call("balance_of", checksum("owner", owner))

    def payee_allowed(self, grant_id: int, payee: str) -> bool:
        return bool(self._call("payee_allowed", _uint("grant_id", grant_id),
                               checksum("payee", payee)))

    def nonce_used(self, grant_id: int, nonce: bytes) -> bool:
        return bool(self._call("nonce_used", _uint("grant_id", grant_id), bytes(nonce)))

    def spent_in_period(self, grant_id: int) -> int:
        return self._call("spent_in_period", _uint("grant_id", grant_id))

    def available(self, grant_id: int) -> int:
        """The most one payment can move now (0 when the grant is not usable)."""
        return self._call("available", _uint("grant_id", grant_id))

    def domain(self) -> tuple[str, str]:
        """The EIP-712 domain's (name, version), read once from `eip712Domain` (EIP-5267)."""
        if self._domain is None:
            fields = self._call("eip712Domain")
            self._domain = (fields[1], fields[2])
        return self._domain

    # -- payments --------------------------------------------------------------------------
    def refusal(self, grant_id: int, payee: str, amount: int, nonce: bytes, deadline: int,
                now: int | None = None) -> str | None:
        """The reason `pay` would give for this payment signed by the grant's key, or None
        (protocol/agent_budget.py's mirror fed with the chain's state; `now` defaults to the
        latest block's timestamp)."""
        grant = self.grants(grant_id)
        now = self.chain.block_timestamp() if now is None else now
        allowed = grant.exists and self.payee_allowed(grant_id, payee)
        balance = self.balance_of(grant.owner) if grant.exists else 0
        used = grant.exists and self.nonce_used(grant_id, nonce)
        return payment_refusal(grant, allowed, balance, used, now, payee, amount, deadline)

    def sign_payment(self, account: LocalAccount, grant_id: int, payee: str, amount: int,
                     nonce: bytes | None = None, deadline: int | None = None,
                     *, check: bool = True) -> dict:
        """The session key `account` signs a payment of `amount` to `payee` from the grant.

        `nonce` defaults to 32 random bytes, `deadline` to the latest block's timestamp +
        DEFAULT_DEADLINE_S. With `check` (the default) a payment the contract would refuse
        is refused here, before signing (PaymentRefused naming the limit). Returns the x402
        "tessera-budget" payload: grant, payee, amount, nonce, deadline, signature."""
        if not hasattr(account, "sign_typed_data"):
            raise ValueError(f"account must be a local signing account, got {type(account).__name__}")
        _uint("grant_id", grant_id)
        payee = checksum("payee", payee)
        _uint("amount", amount, positive=True)
        nonce = secrets.token_bytes(32) if nonce is None else bytes(nonce)
        if len(nonce) != 32:
            raise ValueError(f"nonce must be 32 bytes, got {len(nonce)}")
        now = self.chain.block_timestamp()
        deadline = now + DEFAULT_DEADLINE_S if deadline is None else _uint("deadline", deadline)
        if check:
            grant = self.grants(grant_id)
            if grant.exists and grant.key != account.address:
                raise PaymentRefused(f"payment refused before signing: grant {grant_id}'s session key "
                                f"is {grant.key}, not {account.address}")
            reason = self.refusal(grant_id, payee, amount, nonce, deadline, now=now)
            if reason is not None:
                raise PaymentRefused(f"payment refused before signing: {reason}")
        name, version = self.domain()
        typed = payment_typed_data(self.chain.network.chain_id, self.address, grant_id, payee,
                                   amount, nonce, deadline, name, version)
        signature = bytes(account.sign_typed_data(full_message=typed).signature)
        return SignedPayment(grant_id, payee, amount, nonce, deadline, signature).to_dict()

    def pay(self, payment: dict | SignedPayment) -> AgentPaid:
        """Submit a signed payment (anyone may: the payee, a facilitator); the chain's refusal
        (TxRefused) names the limit it broke, and nothing is sent then."""
        p = payment if isinstance(payment, SignedPayment) else parse_payment(payment)
        receipt = self._send("pay", p.grant, checksum("payee", p.payee), p.amount, p.nonce,
                             p.deadline, p.signature)
        args = self._event(receipt, "AgentPaid")
        return AgentPaid(grant_id=args["grant_id"], owner=args["owner"], payee=args["payee"],
                         key=args["key"], amount=args["amount"], nonce=bytes(args["nonce"]),
                         tx=tx_hash(receipt))

    def payments(self, receipt: TxReceipt) -> list[dict]:
        """Every AgentPaid event of a transaction."""
        return self._events(receipt, "AgentPaid")
