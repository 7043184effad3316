"""`tessera agent run`: an agent that rents training and then buys inference from the result,
paying from its owner's AgentBudget grant, until its goal is met or its budget is spent.

The loop, every step logged (agent/log.py) with its transaction:

1. **Training money.** The Market takes an order's escrow with `transferFrom` from the account
   that posts the order, so the escrow must sit in an ordinary account: the agent's own
   **wallet**. The owner's grant lists that wallet as a payee; the session key signs an
   AgentPayment of the order's escrow to the wallet and the wallet submits it
   (`AgentBudget.pay`). The grant's cap per payment and budget per period bound it like any
   other payment, and the client refuses before signing when they would not allow it.
2. **Training.** The wallet posts the order as a tenant and the tenant flow does the rest
   (tenant/flow.run_rental: bids, lease, manifest, progress, results checked by hash against
   the chain and the held-out loss recomputed locally, the lease closed). The unspent escrow
   comes back to the wallet at the close; a later training of the same run uses it first.
3. **The goal's loss.** Met: go on. Not met: train again with twice the steps, up to
   `goal.max_trainings`; then stop.
4. **Inference.** Wait until the model server named in the file serves this very model
   (GET /v1/model's sha256 is the trained model.pt's), then buy `goal.completions` completions,
   each paid with "tessera-budget" from the same grant (agent/buyer.py).
5. **Stop** when the goal is met, or when the client refuses a payment before signing (the
   budget is spent, or another limit of the grant): a clean end, with its reason.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from tessera.agent.buyer import InferenceBuyer, Purchase, Refusal, file_sha256, limit_of
from tessera.agent.config import AgentConfig
from tessera.agent.log import AgentLog
from tessera.chain.accounts import resolve_account, tessera_home
from tessera.chain.agent_budget import AgentBudget
from tessera.chain.client import Chain, tx_hash
from tessera.chain.network import load_network
from tessera.chain.tokens import PaymentToken
from tessera.chain.x402_facilitator import caip2
from tessera.chain.x402_spend import BudgetGuard
from tessera.errors import PaymentError, PaymentRefused, TenantError
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.money import format_duration
from tessera.tenant.bidding import money
from tessera.tenant.client import Tenant
from tessera.tenant.flow import load_dataset, run_rental

PAYMENT_DEADLINE_S = 300   # how long the training payment's signature stays submittable
# The refusals that mean the money is used up (the others: a limit such as the cap, a revoked,
# paused or expired grant, a payee not allowed).
SPENT = ("over period budget", "owner balance")
WAIT_NOTICE_S = 15         # how often waiting for the model server is reported


@dataclass
class AgentRun:
    """How a run ended and what it paid: `reason` in words, `goal_met`, every payment (training
    and inference, each with its transaction), the refusal that ended it if one did."""
    reason: str = ""
    goal_met: bool = False
    trainings: list[dict] = field(default_factory=list)
    payments: list[dict] = field(default_factory=list)
    refusal: dict | None = None
    returned: dict | None = None   # the unspent training escrow sent back to the owner
    log: str = ""

    def to_dict(self) -> dict:
        return {"reason": self.reason, "goal_met": self.goal_met, "trainings": self.trainings,
                "payments": self.payments, "refusal": self.refusal, "returned": self.returned,
                "log": self.log}


class Agent:
    def __init__(self, config: AgentConfig, console: Console, base_dir: Path):
        self.config, self.console, self.base_dir = config, console, base_dir
        a = config.agent
        self.network = load_network(a.network)
        self.session = resolve_account(a.session_key)
        self.wallet = resolve_account(a.wallet) if a.wallet else None
        self.reader = AgentBudget(Chain(self.network))
        self.reader.chain.check_connected()
        self.grant_id = a.grant
        self.log = AgentLog(config.log_path(), console, a.name)
        self.run = AgentRun(log=str(self.log.path))
        self.carried = 0   # budget money already in the wallet (refunds of earlier trainings)

    # -- start -----------------------------------------------------------------------------
    def check_grant(self) -> None:
        grant = self.reader.grant_record(self.grant_id)
        if grant.key.lower() != self.session.address.lower():
            raise TenantError(f"agent.session_key: {self.session.address} is not grant "
                              f"{self.grant_id}'s session key {grant.key}")
        available = self.reader.available(self.grant_id)
        self.log.record("start", f"grant {self.grant_id} of {grant.owner}: budget "
                        f"{money(grant.budget)} per {format_duration(grant.period)}, cap {money(grant.cap)} "
                        f"a payment, {money(self.reader.spent_in_period(self.grant_id))} spent "
                        f"this period, {money(available)} payable now",
                        grant=self.grant_id, owner=grant.owner, key=grant.key,
                        budget=grant.budget, cap=grant.cap, period=grant.period,
                        expiry=grant.expiry, available=available,
                        wallet=self.wallet.address if self.wallet else None,
                        goal=self.config.goal.model_dump())

    # -- training --------------------------------------------------------------------------
    def fund_training(self, escrow: int) -> bool:
        """Pay the order's escrow (less budget money the wallet already holds) from the grant
        to the wallet; False when the grant refuses (logged, and the run's end)."""
        assert self.wallet is not None
        need = escrow - min(escrow, self.carried)
        if need == 0:
            self.log.decision(f"the wallet already holds {money(self.carried)} of budget money "
                              f"from earlier refunds: no payment for this escrow")
            self.carried -= escrow
            return True
        guard = BudgetGuard(self.reader, self.grant_id)
        nonce, now = secrets.token_bytes(32), guard.now()
        deadline = now + PAYMENT_DEADLINE_S
        self.log.decision(f"take {money(need)} of training escrow from grant {self.grant_id} "
                          f"into the agent wallet {self.wallet.address}", amount=need,
                          payee=self.wallet.address)
        try:
            guard.check(self.session.address, self.wallet.address, need, nonce, deadline, now)
        except PaymentRefused as exc:
            self.refused(Refusal("(training escrow)", 0, need, limit_of(str(exc)), str(exc), 0),
                         "the training escrow")
            return False
        payment = self.reader.sign_payment(self.session, self.grant_id, self.wallet.address, need,
                                           nonce, deadline, check=False)
        paid = AgentBudget(Chain(self.network, self.wallet)).pay(payment)
        record = {"purpose": "training", "amount": paid.amount, "payee": paid.payee, "tx": paid.tx}
        self.run.payments.append(record)
        self.log.record("payment", f"{money(paid.amount)} training escrow paid from grant "
                        f"{self.grant_id} to the agent wallet", **record)
        self.carried = 0
        return True

    def train(self, spec: JobSpec, attempt: int) -> dict | None:
        """One rental; its summary, or None when the grant refused its escrow."""
        if not self.fund_training(spec.order.escrow):
            return None
        self.log.decision(f"rent training {attempt}: job {spec.name!r}, "
                          f"{spec.workload.steps} steps, escrow {money(spec.order.escrow)}",
                          attempt=attempt, steps=spec.workload.steps, escrow=spec.order.escrow)
        dataset = load_dataset(spec.dataset, relative_to=self.base_dir)
        tenant = Tenant(Chain(self.network, self.wallet), on_event=self.log.tenant_event)
        summary = run_rental(tenant, spec, dataset, self.console, follow=True, close=True,
                             results_dir=tessera_home() / "agents" / f"{self.config.agent.name}"
                             "-results")
        model = Path(summary["results_dir"]) / "model.pt"
        refund = summary["settlement"]["refund"] + summary.get("unallocated_refund", 0)
        self.carried += refund
        trained = {"attempt": attempt, "lease_id": summary["lease_id"],
                   "order_id": summary["order_id"], "provider": summary["winner"]["provider"],
                   # the loss recomputed here from the downloaded model, not the provider's
                   "val_loss": summary["recomputed_val_loss"],
                   "result_hash": summary["result_hash"], "results_dir": summary["results_dir"],
                   "model_sha256": file_sha256(model), "checks": summary["checks"],
                   "tenant_spent": summary["tenant_spent"], "refund_to_wallet": refund,
                   "transactions": summary["transactions"]}
        self.run.trainings.append(trained)
        self.log.record("trained", f"lease {trained['lease_id']} with {trained['provider']}: "
                        f"held-out loss {trained['val_loss']:.4f} (recomputed), cost "
                        f"{money(trained['tenant_spent'])}, {money(refund)} of escrow back in "
                        "the wallet", tx=summary["transactions"].get("close"), **trained)
        return trained

    def training_phase(self) -> dict | None:
        """Train until the loss goal is met; the training to buy inference from, or None."""
        spec, goal = self.config.job, self.config.goal
        assert spec is not None
        for attempt in range(1, goal.max_trainings + 1):
            steps = spec.workload.steps * 2 ** (attempt - 1)
            job = spec.model_copy(update={"workload": spec.workload.model_copy(
                update={"steps": steps})})
            trained = self.train(job, attempt)
            if trained is None:
                return None
            if goal.max_val_loss is None or trained["val_loss"] < goal.max_val_loss:
                self.log.decision("the model meets the goal" + (
                    "" if goal.max_val_loss is None else
                    f": held-out loss {trained['val_loss']:.4f} < {goal.max_val_loss}"))
                return trained
            if attempt < goal.max_trainings:
                self.log.decision(f"held-out loss {trained['val_loss']:.4f} is not below "
                                  f"{goal.max_val_loss}: train again with {steps * 2} steps")
        self.stop(f"goal not met: held-out loss still at or above {goal.max_val_loss} after "
                  f"{goal.max_trainings} training(s)")
        return None

    def return_unspent(self) -> None:
        """Send the training money still in the wallet (escrow refunds) back to the grant's
        owner: it came from the owner's deposit and the run needs it no more."""
        if self.wallet is None or self.carried == 0:
            return
        owner = self.reader.grant_record(self.grant_id).owner
        receipt = PaymentToken(Chain(self.network, self.wallet)).transfer(
            owner, self.carried, "returning the unspent training escrow")
        self.run.returned = {"amount": self.carried, "to": owner, "tx": tx_hash(receipt)}
        self.log.record("return", f"{money(self.carried)} of unspent training escrow sent back "
                        f"to the owner {owner}", **self.run.returned)
        self.carried = 0

    # -- inference -------------------------------------------------------------------------
    def wait_for_server(self, buyer: InferenceBuyer, sha256: str | None) -> dict:
        """GET /v1/model until the server serves `sha256` (any model when None) on our chain."""
        inference = self.config.inference
        self.log.decision(f"buy inference from {inference.url}: wait for it to serve model "
                          f"{(sha256 or 'any')[:16]} (up to {inference.wait} s)",
                          url=inference.url, model_sha256=sha256)
        start = time.monotonic()
        deadline, notice, seen = start + inference.wait, start + WAIT_NOTICE_S, "nothing yet"
        while True:
            try:
                terms = buyer.describe()
            except PaymentError as exc:   # not up yet, or not a model server (yet)
                terms, seen = None, str(exc)
            if terms is not None:
                served = terms["model"]["model_sha256"]
                if terms.get("network") != caip2(self.network.chain_id):
                    raise PaymentError(f"{inference.url} takes payment on {terms.get('network')}, "
                                       f"not on this network ({caip2(self.network.chain_id)})")
                if sha256 is None or served == sha256:
                    price = terms["price"]
                    self.log.record("server", f"{inference.url} serves model {served[:16]} for "
                                    f"{price['per_request']} + {price['per_token']} x max_tokens "
                                    f"base units, paid to {terms['pay_to']}",
                                    url=inference.url, model_sha256=served, price=price,
                                    pay_to=terms["pay_to"], schemes=terms.get("schemes"))
                    return terms
                seen = f"model {served[:16]}"
            now = time.monotonic()
            if now > deadline:
                raise TenantError(f"{inference.url} did not serve model {sha256} within "
                                  f"{inference.wait} s (last seen: {seen})")
            if now > notice:
                self.console.print(f"waiting for {inference.url} ({now - start:.0f} s of "
                                   f"{inference.wait} s): {seen}", highlight=False)
                notice = now + WAIT_NOTICE_S
            time.sleep(1.0)

    def inference_phase(self, model_sha256: str | None) -> None:
        inference, goal = self.config.inference, self.config.goal
        buyer = InferenceBuyer(self.network, self.session, self.grant_id, inference.url,
                               max_price=inference.max_price)
        self.wait_for_server(buyer, model_sha256)
        for i in range(goal.completions):
            prompt = inference.prompts[i % len(inference.prompts)]
            price = buyer.price(inference.max_tokens)
            self.log.decision(f"buy completion {i + 1} of {goal.completions}: {inference.max_tokens}"
                              f" tokens for {money(price) if price is not None else '?'}",
                              prompt=prompt, max_tokens=inference.max_tokens, price=price)
            result = buyer.buy(prompt, inference.max_tokens, inference.temperature, seed=i)
            if isinstance(result, Refusal):
                self.refused(result, f"completion {i + 1}")
                return
            self.bought(result)
        self.run.goal_met = True
        self.stop(f"goal met: {goal.completions} completion(s) bought" + (
            "" if goal.max_val_loss is None else
            f" from a model with held-out loss below {goal.max_val_loss}"))

    def bought(self, purchase: Purchase) -> None:
        record = {"purpose": "inference", **purchase.to_dict()}
        self.run.payments.append(record)
        self.log.record("payment", f"{money(purchase.amount)} for {purchase.tokens} tokens "
                        f"after {purchase.prompt!r}: {purchase.text!r}", **record)

    def refused(self, refusal: Refusal, what: str) -> None:
        self.run.refusal = {"for": what, **refusal.to_dict()}
        self.log.record("refusal", f"{what} refused before signing: {refusal.limit} "
                        f"({refusal.signatures} signatures made)", **self.run.refusal)
        if refusal.limit in SPENT:
            self.stop(f"budget spent: the grant allows no more ({refusal.limit})")
        else:
            self.stop(f"the grant refuses {what}: {refusal.limit}")

    def stop(self, reason: str) -> None:
        self.run.reason = reason
        paid = sum(p["amount"] for p in self.run.payments)
        self.log.record("stop", reason, goal_met=self.run.goal_met, paid=paid,
                        payments=len(self.run.payments))

    # -- the loop --------------------------------------------------------------------------
    def go(self) -> AgentRun:
        self.check_grant()
        sha256 = self.config.inference.model_sha256
        if self.config.job is not None:
            if Chain(self.network).w3.eth.get_balance(self.wallet.address) == 0:
                raise TenantError(f"agent.wallet {self.wallet.address} holds no ETH to pay gas "
                                  "for the order")
            trained = self.training_phase()
            self.return_unspent()
            if trained is None:
                return self.run
            sha256 = trained["model_sha256"]
        self.inference_phase(sha256)
        return self.run


def run_agent(config: AgentConfig, console: Console, base_dir: Path) -> AgentRun:
    """Run the agent of `config` (`base_dir`: where a relative dataset path is found); errors
    other than refusals are logged, then raised."""
    agent = Agent(config, console, base_dir)
    try:
        return agent.go()
    except Exception as exc:
        agent.log.record("error", f"{type(exc).__name__}: {exc}")
        raise

