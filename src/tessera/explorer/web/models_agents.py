"""API models of the agents' page (`/api/agents`): AgentBudget owners and grants, and agent
payments (units named as in `models.py`: `*_base_units` with `token` and `decimals`, times in Unix
seconds)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tessera.explorer.web.models import AgentPaymentOut, AgentTotals, Paging
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL


class OwnerOut(BaseModel):
    """An AgentBudget owner: what it deposited, withdrew and paid through its grants' keys."""

    address: str
    token: str = PAYMENT_SYMBOL
    decimals: int = PAYMENT_DECIMALS
    deposited_base_units: str
    withdrawn_base_units: str
    paid_base_units: str = Field(description="AgentBudget payments of its grants, any payee")
    balance_base_units: str = Field(description="deposited - withdrawn - paid: what `withdraw` "
                                                "can take back now (AgentBudget.balance_of)")
    payments: int
    first_at: int
    first_tx: str


class GrantOut(BaseModel):
    """A session key's grant: its limits, its state as of the indexed block, what it spent."""

    grant_id: int
    owner: str
    key: str
    token: str = PAYMENT_SYMBOL
    decimals: int = PAYMENT_DECIMALS
    budget_base_units: str = Field(description="most the key may spend per period")
    cap_base_units: str = Field(description="most one payment may move")
    period_s: str = Field(description="period length in seconds (decimal text: the owner chose it)")
    start: str = Field(description="first second payments are valid (Unix seconds, decimal text)")
    expiry: str = Field(description="payments are valid strictly before (Unix seconds, decimal text)")
    any_provider: bool
    payees: int = Field(description="payees listed at grant time")
    status: str = Field(description="'active', 'paused', 'revoked', 'expired' or 'not started' "
                                    "as of the indexed block")
    spent_base_units: str = Field(description="every payment the key made")
    spent_in_period_base_units: str = Field(description="payments in the period running at the "
                                                        "indexed block (the contract's spent_in_period)")
    payments: int
    granted_at: int
    granted_tx: str
    revoked_tx: str | None


class AgentsOut(BaseModel):
    block: int
    as_of: int
    totals: AgentTotals
    owners: list[OwnerOut] = Field(description="one page, newest first (`?owners=N`)")
    owners_paging: Paging
    grants: list[GrantOut] = Field(description="one page, newest first (`?grants=N`)")
    grants_paging: Paging
    payments: list[AgentPaymentOut] = Field(description="every agent payment (to providers and to "
                                            "anyone else), one page, newest first (`?payments=N`)")
    payments_paging: Paging
