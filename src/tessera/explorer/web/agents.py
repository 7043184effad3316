"""Agents in the web explorer: the reads, API answers and HTML of agent payments (a provider's,
a transaction's, everyone's) and of the AgentBudget's owners and grants (`/agents`).

Figures come from the snapshot (protocol/agent_payments.py defines them); lists are paged in SQL
like every other list. What an owner paid and a grant spent are sums of its payment rows (exact
Python integers: amounts are decimal text in the database)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tessera.explorer import db
from tessera.explorer.web.markup import (
    address_text,
    e,
    fig_link,
    kv,
    list_pager,
    provider_link,
    span,
    table,
    tusd,
    tx_link,
    when,
)
from tessera.explorer.web.models import AgentPaymentsOut, AgentTotals
from tessera.explorer.web.models_agents import AgentsOut, GrantOut, OwnerOut
from tessera.explorer.web.outputs import agent_payment_out, agent_totals, paging_out
from tessera.explorer.web.queries import Explorer, Paged, Snapshot

SELF_NOTE = ("Agent payments are AgentBudget payments and x402 \"exact\" (EIP-3009) transfers to a "
             "registered provider, counted beside lease revenue, not in it. Self-payments are not "
             "excluded: a provider can pay itself through its own budget or wallet (counted as "
             "\"from its own address\") or through another address it controls, which the chain "
             "cannot tell apart; few distinct payers behind much revenue is the sign to look for.")


# -- reads -----------------------------------------------------------------------------------
def _newest(query):
    return query.order_by(db.AgentPayment.block_number.desc(), db.AgentPayment.log_index.desc())


def provider_agent_payments(explorer: Explorer, address: str, page_no: int = 1) -> Paged:
    """One page of the agent payments to a provider (as agent revenue), newest first."""
    with Session(explorer.engine) as session:
        rows = explorer.paged(session, _newest(select(db.AgentPayment).where(
            db.AgentPayment.payee == address, db.AgentPayment.to_provider.is_(True))),
            page_no, "its agent payments")
        session.expunge_all()
    return rows


def tx_agent_payments(explorer: Explorer, tx_hash: str) -> list[db.AgentPayment]:
    """The agent payments one transaction made (a page size of them at most), log order."""
    with Session(explorer.engine) as session:
        rows = list(session.scalars(select(db.AgentPayment).where(db.AgentPayment.tx_hash == tx_hash)
                                    .order_by(db.AgentPayment.log_index).limit(explorer.page_size)))
        session.expunge_all()
    return rows


@dataclass
class AgentsView:
    owners: Paged
    grants: Paged
    payments: Paged
    paid: dict[str, tuple[int, int]]                  # owner -> (paid, payments)
    spent: dict[int, list[tuple[int, int]]]           # grant -> [(timestamp, amount)]


def agents_view(explorer: Explorer, owners_page: int = 1, grants_page: int = 1,
                payments_page: int = 1) -> AgentsView:
    with Session(explorer.engine) as session:
        owners = explorer.paged(session, select(db.AgentOwner).order_by(
            db.AgentOwner.first_at.desc(), db.AgentOwner.address), owners_page, "owners")
        grants = explorer.paged(session, select(db.AgentGrant).order_by(db.AgentGrant.grant_id.desc()),
                                grants_page, "grants")
        payments = explorer.paged(session, _newest(select(db.AgentPayment)), payments_page,
                                  "agent payments")
        paid: dict[str, tuple[int, int]] = {o.address: (0, 0) for o in owners.rows}
        if paid:
            for payer, amount in session.execute(select(db.AgentPayment.payer, db.AgentPayment.amount)
                                                 .where(db.AgentPayment.scheme == "budget",
                                                        db.AgentPayment.payer.in_(list(paid)))):
                total, count = paid[payer]
                paid[payer] = (total + amount, count + 1)
        spent: dict[int, list[tuple[int, int]]] = {g.grant_id: [] for g in grants.rows}
        if spent:
            for grant, ts, amount in session.execute(
                    select(db.AgentPayment.grant_id, db.AgentPayment.timestamp, db.AgentPayment.amount)
                    .where(db.AgentPayment.grant_id.in_(list(spent)))):
                spent[grant].append((ts, amount))
        session.expunge_all()
    return AgentsView(owners, grants, payments, paid, spent)


# -- API answers -----------------------------------------------------------------------------
def owner_out(o: db.AgentOwner, paid: tuple[int, int]) -> OwnerOut:
    return OwnerOut(address=o.address, deposited_base_units=str(o.deposited),
                    withdrawn_base_units=str(o.withdrawn), paid_base_units=str(paid[0]),
                    balance_base_units=str(o.deposited - o.withdrawn - paid[0]), payments=paid[1],
                    first_at=o.first_at, first_tx=o.first_tx)


def grant_status(g: db.AgentGrant, as_of: int) -> str:
    if g.revoked:
        return "revoked"
    if g.paused:
        return "paused"
    if as_of >= g.expiry:
        return "expired"
    return "not started" if as_of < g.start else "active"


def grant_out(g: db.AgentGrant, payments: list[tuple[int, int]], as_of: int) -> GrantOut:
    """`spent_in_period`: payments since the start of the period running at `as_of` (periods are
    aligned at the grant's start, as the contract's)."""
    in_period = 0
    if as_of >= g.start:
        current = g.start + (as_of - g.start) // g.period * g.period
        in_period = sum(amount for ts, amount in payments if ts >= current)
    return GrantOut(grant_id=g.grant_id, owner=g.owner, key=g.key, budget_base_units=str(g.budget),
                    cap_base_units=str(g.cap), period_s=str(g.period), start=str(g.start),
                    expiry=str(g.expiry), any_provider=bool(g.any_provider), payees=g.payees,
                    status=grant_status(g, as_of), spent_base_units=str(sum(a for _, a in payments)),
                    spent_in_period_base_units=str(in_period), payments=len(payments),
                    granted_at=g.granted_at, granted_tx=g.granted_tx, revoked_tx=g.revoked_tx)


def agents_out(snap: Snapshot, view: AgentsView) -> AgentsOut:
    return AgentsOut(
        block=snap.block, as_of=snap.as_of, totals=agent_totals(snap.figures),
        owners=[owner_out(o, view.paid[o.address]) for o in view.owners.rows],
        owners_paging=paging_out(view.owners),
        grants=[grant_out(g, view.spent[g.grant_id], snap.as_of) for g in view.grants.rows],
        grants_paging=paging_out(view.grants),
        payments=[agent_payment_out(p) for p in view.payments.rows],
        payments_paging=paging_out(view.payments))


# -- HTML ------------------------------------------------------------------------------------
def _payee(p: db.AgentPayment) -> str:
    return provider_link(p.payee) if p.to_provider else address_text(p.payee)


def agent_payments_table(rows: list[db.AgentPayment], with_payee: bool = True) -> str:
    body = [[tx_link(p.tx_hash), e(when(p.timestamp)),
             e("budget (AgentBudget.pay)" if p.scheme == "budget" else "exact (EIP-3009)"),
             address_text(p.payer) + (' <b class="self">self</b>' if p.self_paid else ""),
             e(f"grant #{p.grant_id}") + " " + address_text(p.key) if p.grant_id is not None else "-",
             *([_payee(p) + ("" if p.to_provider else ' <span class="muted">(not a provider)</span>')]
               if with_payee else []),
             tusd(p.amount)] for p in rows]
    heads = ["tx", "time", "scheme", "payer", "grant / session key", *(["payee"] if with_payee else []),
             "amount"]
    return table(heads, body, {len(heads) - 1}, "agent-payments")


def agent_figures_html(a: AgentPaymentsOut) -> str:
    return kv([("agent payments", fig_link(a.count, _n(a.count.value, "payment")) + ", "
                + fig_link(a.amount)),
               ("distinct payers", fig_link(a.payers, a.payers.value)),
               ("from its own address", fig_link(a.self_count, _n(a.self_count.value, "payment"))
                + ", " + fig_link(a.self_amount))])


def provider_agents_html(path: str, a: AgentPaymentsOut, payments: Paged) -> str:
    """The provider page's section: its agent-payment figures and one page of the payments."""
    return ("<h2 id='agent_payments'>Agent payments (beside lease revenue)</h2>" + agent_figures_html(a)
            + f"<p class='muted'>{e(SELF_NOTE)}</p>"
            + list_pager(path, payments, "agent payments", "agent_payments", True)
            + agent_payments_table(payments.rows, with_payee=False))


def tx_agents_html(rows: list[db.AgentPayment]) -> str:
    if not rows:
        return ""
    return ("<h2 id='agent_payments'>Agent payments in this transaction</h2>"
            + agent_payments_table(rows)
            + "<p class='muted'>A budget payment's money moves in the AgentBudget's Transfer of the "
              "same transaction; an exact payment is the Transfer right after its "
              "AuthorizationUsed.</p>")


def _n(count: int | str, what: str) -> str:
    return f"{count} {what}{'' if int(count) == 1 else 's'}"


def totals_html(t: AgentTotals) -> str:
    return kv([
        ("agent payments to providers", fig_link(t.count, _n(t.count.value, "payment")) + ", "
         + fig_link(t.amount) + " (self-payments not excluded: "
         + fig_link(t.self_count, str(t.self_count.value)) + " from the provider's own address)"),
        ("by AgentBudget", fig_link(t.budget_count, _n(t.budget_count.value, "payment")) + ", "
         + fig_link(t.budget_amount)),
        ("by x402 exact (EIP-3009)", fig_link(t.exact_count, _n(t.exact_count.value, "payment")) + ", "
         + fig_link(t.exact_amount)),
        ("distinct payers", fig_link(t.payers, t.payers.value)),
        ("AgentBudget deposits", fig_link(t.deposits)),
        ("AgentBudget withdrawals", fig_link(t.withdrawals)),
        ("AgentBudget paid (any payee)", fig_link(t.paid)),
        ("AgentBudget balance (owners can withdraw)", fig_link(t.balance)),
        ("grants", fig_link(t.grants, t.grants.value)),
    ])


def agents_html(snap: Snapshot, view: AgentsView) -> str:
    out = agents_out(snap, view)
    owners = [[address_text(o.address), tusd(int(o.deposited_base_units)),
               tusd(int(o.withdrawn_base_units)), tusd(int(o.paid_base_units)), e(o.payments),
               tusd(int(o.balance_base_units)), tx_link(o.first_tx)] for o in out.owners]
    grants = [[e(f"#{g.grant_id}"), address_text(g.owner), address_text(g.key), e(g.status),
               tusd(int(g.budget_base_units)) + " per " + e(span(int(g.period_s))),
               tusd(int(g.cap_base_units)), e(when(int(g.start))), e(when(int(g.expiry))),
               e("any provider" if g.any_provider else "") + (" + " if g.any_provider and g.payees else "")
               + (e(f"{g.payees} listed") if g.payees else ""),
               tusd(int(g.spent_in_period_base_units)), tusd(int(g.spent_base_units)), e(g.payments),
               tx_link(g.granted_tx)] for g in out.grants]
    return (f"<p class='muted'>{e(SELF_NOTE)}</p>" + totals_html(out.totals)
            + "<h2 id='owners'>Owners</h2>" + list_pager("/agents", view.owners, "owners", "owners", True)
            + table(["owner", "deposited", "withdrawn", "paid", "payments", "balance", "first tx"], owners,
                    {1, 2, 3, 4, 5}, "owners")
            + "<h2 id='grants'>Grants</h2>" + list_pager("/agents", view.grants, "grants", "grants", True)
            + table(["grant", "owner", "session key", "status", "budget", "cap / payment", "start", "expiry",
                     "payees", "spent this period", "spent", "payments", "granted in"], grants,
                    {4, 5, 9, 10, 11}, "grants")
            + "<h2 id='payments'>Agent payments</h2>"
            + list_pager("/agents", view.payments, "agent payments", "payments", True)
            + agent_payments_table(view.payments.rows))
