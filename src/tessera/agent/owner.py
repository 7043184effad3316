"""The owner's side of an agent's budget (`tessera agent grant / budget / pause / revoke /
withdraw`): deposit TUSD into AgentBudget, grant a session key limits on it, look at a grant,
pause, revoke, take the unspent deposit back. All through chain/agent_budget.AgentBudget; the
contract has no owner powers of its own (docs/agents_budget.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from web3 import Web3

from tessera.chain.accounts import keystore_address, resolve_account
from tessera.chain.agent_budget import AgentBudget
from tessera.chain.client import tx_hash
from tessera.errors import AccountError
from tessera.protocol.agent_budget import Grant
from tessera.protocol.money import parse_duration, parse_payment

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def address_of(what: str, spec: str) -> str:
    """An address given as itself, or as an account spec (devnet:N, keystore:NAME, 0x key)
    whose address it is; ValueError naming `what`."""
    if _ADDRESS.fullmatch(spec):
        return Web3.to_checksum_address(spec)
    try:
        if spec.startswith("keystore:"):   # the address alone: no password needed
            return Web3.to_checksum_address(keystore_address(spec.removeprefix("keystore:")))
        return resolve_account(spec).address
    except AccountError as exc:
        raise ValueError(f"{what}: {spec!r} is neither an address nor an account ({exc})") \
            from None


def seconds(what: str, text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


@dataclass(frozen=True)
class GrantTerms:
    """What `tessera agent grant` was asked, parsed and checked before anything is sent."""
    key: str
    budget: int
    period: int
    cap: int
    expiry_in: int
    payees: tuple[str, ...]
    any_provider: bool
    deposit: int

    @classmethod
    def parse(cls, key: str, budget: str, period: str, cap: str, expiry: str,
              payees: list[str], any_provider: bool, deposit: str | None) -> GrantTerms:
        terms = cls(address_of("--session-key", key), parse_payment(budget, "--budget"),
                    seconds("--period", period), parse_payment(cap, "--cap"), seconds("--expiry", expiry),
                    tuple(address_of(f"--payee {p}", p) for p in payees), any_provider,
                    parse_payment(deposit, "--deposit") if deposit else 0)
        if terms.budget == 0 or terms.cap == 0:
            raise ValueError("--budget and --cap must be above zero")
        if terms.cap > terms.budget:
            raise ValueError(f"--cap ({terms.cap} base units) is above --budget "
                             f"({terms.budget}): no payment could use the part above the budget")
        if not terms.payees and not any_provider:
            raise ValueError("name at least one --payee, or allow --any-provider")
        return terms


def grant(budget: AgentBudget, terms: GrantTerms) -> dict:
    """Deposit (when asked), then grant; what happened, with every transaction."""
    txs: dict[str, list[str] | str] = {}
    if terms.deposit:
        txs["deposit"] = [tx_hash(r) for r in budget.deposit(terms.deposit)]
    start = budget.chain.block_timestamp()
    grant_id, receipt = budget.grant(terms.key, terms.budget, terms.period, terms.cap, start,
                                     start + terms.expiry_in, list(terms.payees),
                                     terms.any_provider)
    txs["grant"] = tx_hash(receipt)
    return {"grant_id": grant_id, "owner": budget.chain.address, "key": terms.key,
            "budget": terms.budget, "period": terms.period, "cap": terms.cap, "start": start,
            "expiry": start + terms.expiry_in, "payees": list(terms.payees),
            "any_provider": terms.any_provider, "deposit": terms.deposit,
            "owner_balance": budget.balance_of(budget.chain.address), "transactions": txs}


def payees(budget: AgentBudget, grant_id: int) -> list[str]:
    """The payees a grant lists (from its PayeeAllowed events)."""
    chain = budget.chain
    logs = chain.events(AgentBudget.NAME, "PayeeAllowed", chain.network.deploy_block,
                        argument_filters={"grant_id": grant_id})
    return sorted({log["args"]["payee"] for log in logs})


def describe(budget: AgentBudget, grant_id: int) -> dict:
    """A grant as `tessera agent budget` shows it: its terms, its state, what it has spent in
    this period, what one payment can move now, the owner's deposit."""
    g: Grant = budget.grant_record(grant_id)
    now = budget.chain.block_timestamp()
    state = "revoked" if g.revoked else "paused" if g.paused else \
        "not started" if now < g.start else "expired" if now >= g.expiry else "active"
    return {"grant_id": grant_id, "state": state, "owner": g.owner, "key": g.key,
            "budget": g.budget, "period": g.period, "cap": g.cap, "start": g.start,
            "expiry": g.expiry, "any_provider": g.any_provider,
            "payees": payees(budget, grant_id),
            "spent_in_period": budget.spent_in_period(grant_id),
            "available": budget.available(grant_id),
            "owner_balance": budget.balance_of(g.owner), "chain_time": now}


def check_owner(budget: AgentBudget, grant_id: int) -> Grant:
    """The grant, if this account owns it; ValueError otherwise (before anything is sent)."""
    g = budget.grant_record(grant_id)
    if g.owner.lower() != budget.chain.address.lower():
        raise ValueError(f"grant {grant_id} belongs to {g.owner}, not {budget.chain.address}")
    return g
