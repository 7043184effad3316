"""Shared helpers for the AgentBudget tests: deploy next to the `system` fixture, sign payments."""

from __future__ import annotations

from dataclasses import dataclass, field

import boa
from contracts_support import CONTRACTS_DIR, USD, key_account
from eth_account.signers.local import LocalAccount

from tessera.protocol.agent_budget import DOMAIN_NAME, DOMAIN_VERSION, Grant, payment_typed_data

DAY = 86_400
OWNER_FUNDS = 1_000 * USD


def deploy_budget(system, name: str = DOMAIN_NAME, version: str = DOMAIN_VERSION):
    """An AgentBudget on the system's PaymentToken and ProviderRegistry (the `factories`
    fixture has set the search paths)."""
    factory = boa.load_partial(str(CONTRACTS_DIR / "AgentBudget.vy"))
    return factory.deploy(system.usd.address, system.registry.address, name, version)


def sign_payment(key: LocalAccount, budget_address: str, grant: int, payee: str, amount: int,
                 nonce: bytes, deadline: int, *, chain_id: int | None = None,
                 name: str = DOMAIN_NAME, version: str = DOMAIN_VERSION) -> bytes:
    typed = payment_typed_data(chain_id or boa.env.evm.patch.chain_id, budget_address, grant,
                               payee, amount, nonce, deadline, name, version)
    return bytes(key.sign_typed_data(full_message=typed).signature)


def as_grant(record) -> Grant:
    """The contract's Grant struct (a boa named tuple) as the protocol dataclass."""
    return Grant(**{name: getattr(record, name) for name in Grant.__dataclass_fields__})


@dataclass
class Setup:
    """A deployed AgentBudget with funded owners, their session keys and payees."""
    system: object
    budget: object
    owners: list[LocalAccount]
    keys: list[LocalAccount]
    payees: list[str]
    nonces: int = field(default=0)

    @property
    def usd(self):
        return self.system.usd

    def fund(self, owner: LocalAccount, amount: int) -> None:
        with boa.env.prank(owner.address):
            self.usd.approve(self.budget.address, amount)
            self.budget.deposit(amount)

    def grant(self, owner: LocalAccount, key: LocalAccount, *, budget=100 * USD, period=DAY,
              cap=10 * USD, start=None, expiry=None, payees=None, any_provider=False) -> int:
        start = boa.env.timestamp if start is None else start
        expiry = start + 30 * DAY if expiry is None else expiry
        payees = self.payees[:1] if payees is None else payees
        with boa.env.prank(owner.address):
            return self.budget.grant(key.address, budget, period, cap, start, expiry, payees,
                                     any_provider)

    def fresh_nonce(self) -> bytes:
        self.nonces += 1
        return self.nonces.to_bytes(32, "big")

    def pay(self, key: LocalAccount, grant_id: int, payee: str, amount: int, *,
            nonce: bytes | None = None, deadline: int | None = None, signature: bytes | None = None,
            sender: str | None = None):
        nonce = self.fresh_nonce() if nonce is None else nonce
        deadline = boa.env.timestamp + 600 if deadline is None else deadline
        if signature is None:
            signature = sign_payment(key, self.budget.address, grant_id, payee, amount, nonce,
                                     deadline)
        with boa.env.prank(sender or self.system.outsider.address):
            self.budget.pay(grant_id, payee, amount, nonce, deadline, signature)
        return nonce

    def snapshot(self) -> tuple:
        """Every balance a refused payment must leave alone."""
        who = [self.budget.address, *self.payees, *(o.address for o in self.owners),
               *(p.address for p in self.system.providers)]
        return (tuple(self.usd.balanceOf(a) for a in who),
                tuple(self.budget.balance_of(o.address) for o in self.owners),
                tuple(self.budget.grants(i).spent for i in range(1, self.budget.grant_count() + 1)))


def make_setup(system) -> Setup:
    owners = [key_account(200), key_account(201)]
    keys = [key_account(300), key_account(301), key_account(302)]
    payees = [boa.env.generate_address(f"payee{i}") for i in range(3)]
    budget = deploy_budget(system)
    for owner in owners:
        system.usd.mint(owner.address, OWNER_FUNDS)
    return Setup(system, budget, owners, keys, payees)
