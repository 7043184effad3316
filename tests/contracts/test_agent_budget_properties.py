"""AgentBudget.vy under any order of calls and time jumps (hypothesis, stateful).

A Python model keeps every deposit, withdrawal, grant, pause, revoke and payment; after each
step the machine checks against it that

- the spend of every grant within each of its periods never exceeds its budget, and no payment
  passes after revoke, while paused, before the start or at/after the expiry, above the cap, to
  a payee not allowed, past its deadline, or with a nonce already used for the grant;
- the pure mirror (`protocol.agent_budget.payment_refusal`, fed what a client reads from the
  chain) names exactly the reason the contract reverts with, on every attempted payment, and
  a refused payment changes no balance;
- the contract's token balance equals the sum of the owners' `balance_of`, which equals the
  model's deposits less withdrawals less payments, and every owner can take all of theirs back
  in one `withdraw`;
- `spent_in_period` and `available` equal the mirror's `spent_now` and `available`.
"""

from __future__ import annotations

import collections

import boa
from agent_budget_support import as_grant, deploy_budget, sign_payment
from contracts_support import key_account
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tessera.protocol import agent_budget as mirror

OWNERS = [key_account(500), key_account(501)]
KEYS = [key_account(600), key_account(601)]
STRANGER_KEY = key_account(602)          # signs, but is nobody's session key
PAYEES = [f"0x{'a1' * 19}{i:02x}" for i in range(3)]
UNREGISTERED = "0x" + "b2" * 20
MINTED = 10_000
PERIODS = st.sampled_from([1, 7, 60, 3_600])
OUTCOMES: collections.Counter = collections.Counter()   # what the attempts met, for the report
JUMPS = st.sampled_from([0, 1, 2, 6, 7, 30, 59, 60, 61, 599, 3_599, 3_600, 3_601])


class GrantModel:
    def __init__(self, gid, owner, key, budget, period, cap, start, expiry, payees, any_provider):
        self.gid, self.owner, self.key = gid, owner, key
        self.budget, self.period, self.cap = budget, period, cap
        self.start, self.expiry = start, expiry
        self.payees, self.any_provider = set(payees), any_provider
        self.paused = self.revoked = False
        self.payments: list[tuple[int, int]] = []   # (timestamp, amount)
        self.nonces: set[bytes] = set()

    def spent_in(self, period_start: int) -> int:
        return sum(a for t, a in self.payments if period_start <= t < period_start + self.period)


class BudgetMachine(RuleBasedStateMachine):
    system = None   # set by the test before running
    budget = None

    grants = Bundle("grants")

    def __init__(self):
        super().__init__()
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        self.b, self.usd = self.budget, self.system.usd
        self.provider = self.system.providers[0].address   # registered in the registry
        self.models: dict[int, GrantModel] = {}
        self.deposited = {o.address: 0 for o in OWNERS}
        self.nonce_counter = 0
        self.last_paid: dict[int, tuple] = {}
        self.received = {a: 0 for a in [*PAYEES, self.provider, UNREGISTERED]}
        self.received_before = {a: self.usd.balanceOf(a) for a in self.received}

    def teardown(self):
        self._anchor.__exit__(None, None, None)

    @initialize(target=grants, period=PERIODS, budget=st.integers(1, 100), cap=st.integers(1, 60))
    def mint_deposit_and_grant(self, period, budget, cap):
        for owner in OWNERS:
            self.usd.mint(owner.address, MINTED)
            with boa.env.prank(owner.address):
                self.usd.approve(self.b.address, 2**256 - 1)
            self.deposit(owner, 300)
        return self.grant(OWNERS[0], KEYS[0], budget, period, cap, 0, 10**6, PAYEES[:1], True)

    # ------------------------------------------------------------------ the owner's side

    @rule(who=st.sampled_from(OWNERS), amount=st.integers(1, 400))
    def deposit(self, who, amount):
        with boa.env.prank(who.address):
            self.b.deposit(amount)
        self.deposited[who.address] += amount

    @rule(who=st.sampled_from(OWNERS), amount=st.sampled_from([1, 50, 400, "all", "all but 1"]))
    def withdraw(self, who, amount):
        have = self.b.balance_of(who.address)
        if isinstance(amount, str):   # leave the grants (almost) nothing to pay from
            amount = have if amount == "all" else have - 1
            if amount <= 0:
                return
        with boa.env.prank(who.address):
            if amount > have:
                with boa.reverts("owner balance"):
                    self.b.withdraw(amount)
                return
            self.b.withdraw(amount)
        self.deposited[who.address] -= amount

    @rule(target=grants, owner=st.sampled_from(OWNERS), key=st.sampled_from(KEYS),
          budget=st.integers(1, 100), period=PERIODS, cap=st.integers(1, 60),
          start_offset=st.sampled_from([-100, -7, 0, 0, 5, 60]),
          length=st.sampled_from([1, 30, 200, 5_000, 10**6, 10**6]),
          payees=st.lists(st.sampled_from(PAYEES), max_size=3), any_provider=st.booleans())
    def grant(self, owner, key, budget, period, cap, start_offset, length, payees, any_provider):
        if not payees and not any_provider:
            any_provider = True
        start = max(boa.env.timestamp + start_offset, 0)
        with boa.env.prank(owner.address):
            gid = self.b.grant(key.address, budget, period, cap, start, start + length, payees,
                               any_provider)
        self.models[gid] = GrantModel(gid, owner, key, budget, period, cap, start, start + length,
                                      payees, any_provider)
        return gid

    @rule(gid=grants, action=st.sampled_from(["pause", "pause", "resume", "resume", "resume", "revoke"]),
          by_owner=st.sampled_from([True, True, True, False]))
    def owner_acts(self, gid, action, by_owner):
        if action == "revoke":
            self.revoke(gid, by_owner)
        else:
            self.set_paused(gid, action == "pause", by_owner)

    def set_paused(self, gid, paused, by_owner):
        g = self.models[gid]
        sender = g.owner.address if by_owner else g.key.address
        with boa.env.prank(sender):
            if not by_owner:
                with boa.reverts("not grant owner"):
                    self.b.set_paused(gid, paused)
                return
            self.b.set_paused(gid, paused)
        g.paused = paused

    def revoke(self, gid, by_owner):
        g = self.models[gid]
        with boa.env.prank(g.owner.address if by_owner else OWNERS[0 if g.owner is OWNERS[1] else 1].address):
            if not by_owner:
                with boa.reverts("not grant owner"):
                    self.b.revoke(gid)
                return
            if g.revoked:
                with boa.reverts("revoked"):
                    self.b.revoke(gid)
                return
            self.b.revoke(gid)
        g.revoked = True

    @rule(seconds=JUMPS)
    def time_passes(self, seconds):
        if seconds:
            boa.env.time_travel(seconds=seconds)

    @rule(gid=grants, edge=st.sampled_from(["start", "next period", "next period", "expiry"]),
          offset=st.sampled_from([-1, 0, 0, 1]), amount=st.sampled_from([1, 2, 5]))
    def pay_at_an_edge(self, gid, edge, offset, amount):
        """Jump to a second next to one of the grant's boundaries (forward only) and try a
        well-formed payment there: off-by-one limits show only on these seconds."""
        g, now = self.models[gid], boa.env.timestamp
        if edge == "next period":
            at = g.start + (max(now - g.start, 0) // g.period + 1) * g.period
        else:
            at = g.start if edge == "start" else g.expiry
        if at + offset > now:
            boa.env.time_travel(seconds=at + offset - now)
        self._pay(gid, 0, amount, 9, 600, "key")

    # ------------------------------------------------------------------ payments

    PAY = dict(gid=grants, payee_choice=st.integers(0, 7),
               amount=st.sampled_from([0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 70]),
               nonce_choice=st.integers(0, 9),
               deadline_offset=st.sampled_from([-1, 0, 1, 600, 600, 600]),
               signer=st.sampled_from(["key"] * 8 + ["stranger", "other grant"]))

    @rule(**PAY)
    def pay(self, gid, payee_choice, amount, nonce_choice, deadline_offset, signer):
        self._pay(gid, payee_choice, amount, nonce_choice, deadline_offset, signer)

    @rule(**PAY)
    def pay_again(self, gid, payee_choice, amount, nonce_choice, deadline_offset, signer):
        self._pay(gid, payee_choice, amount, nonce_choice, deadline_offset, signer)

    def _pay(self, gid, payee_choice, amount, nonce_choice, deadline_offset, signer):
        g = self.models[gid]
        listed = sorted(g.payees) or [self.provider]
        # 0-4: a payee the grant allows; 5-7: a listed one, the registered provider, a stranger
        payee = listed[payee_choice % len(listed)] if payee_choice < 5 else (
            [PAYEES[2], self.provider, UNREGISTERED][payee_choice - 5])
        now = boa.env.timestamp
        used_elsewhere = [n for m in self.models.values() if m is not g for n in m.nonces]
        if nonce_choice == 0 and g.nonces:
            nonce = sorted(g.nonces)[0]                 # a replay
        elif nonce_choice == 1 and used_elsewhere:
            nonce = used_elsewhere[0]                   # used, but by another grant
        else:
            self.nonce_counter += 1
            nonce = self.nonce_counter.to_bytes(32, "big")
        deadline = max(now + deadline_offset, 0)
        if signer == "key":
            sig = sign_payment(g.key, self.b.address, gid, payee, amount, nonce, deadline)
        elif signer == "stranger":
            sig = sign_payment(STRANGER_KEY, self.b.address, gid, payee, amount, nonce, deadline)
        else:   # the right key, for another grant id
            sig = sign_payment(g.key, self.b.address, gid + 1, payee, amount, nonce, deadline)

        on_chain = as_grant(self.b.grants(gid))
        expected = mirror.payment_refusal(on_chain, self.b.payee_allowed(gid, payee),
                                          self.b.balance_of(g.owner.address),
                                          self.b.nonce_used(gid, nonce), now, payee, amount,
                                          deadline)
        if expected is None and signer != "key":
            expected = "bad signature"
        OUTCOMES[expected or "paid"] += 1
        if expected is not None:
            # A refusal moves nothing: the invariants compare every balance with the model.
            with boa.reverts(expected):
                self.b.pay(gid, payee, amount, nonce, deadline, sig)
            return

        self.b.pay(gid, payee, amount, nonce, deadline, sig)
        self.last_paid[gid] = (payee, amount, nonce, deadline, sig)
        self.received[payee] += amount
        # The model, independently of the contract and the mirror: nothing passes that breaks
        # a limit.
        assert not g.revoked and not g.paused
        assert g.start <= now < g.expiry and now <= deadline
        assert 0 < amount <= g.cap
        assert nonce not in g.nonces
        assert payee in g.payees or (g.any_provider and payee == self.provider)
        period_start = g.start + (now - g.start) // g.period * g.period
        assert g.spent_in(period_start) + amount <= g.budget
        g.payments.append((now, amount))
        g.nonces.add(nonce)

    @rule(gid=grants)
    def replay(self, gid):
        """The last payment that passed, submitted again as it was (same signature)."""
        if gid not in self.last_paid:
            return
        payee, amount, nonce, deadline, sig = self.last_paid[gid]
        on_chain = as_grant(self.b.grants(gid))
        expected = mirror.payment_refusal(on_chain, self.b.payee_allowed(gid, payee),
                                          self.b.balance_of(on_chain.owner), True,
                                          boa.env.timestamp, payee, amount, deadline)
        assert expected is not None
        OUTCOMES[expected] += 1
        with boa.reverts(expected):
            self.b.pay(gid, payee, amount, nonce, deadline, sig)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def every_wei_is_an_owners_balance(self):
        paid = {o.address: 0 for o in OWNERS}
        for g in self.models.values():
            paid[g.owner.address] += sum(a for _, a in g.payments)
        balances = {a: self.b.balance_of(a) for a in self.deposited}
        assert balances == {a: self.deposited[a] - paid[a] for a in self.deposited}
        assert self.usd.balanceOf(self.b.address) == sum(balances.values())

    @invariant()
    def no_period_ever_over_budget(self):
        for g in self.models.values():
            starts = {g.start + (t - g.start) // g.period * g.period for t, _ in g.payments}
            assert all(g.spent_in(s) <= g.budget for s in starts)

    @rule(gid=grants)
    def views_match_the_mirror(self, gid):
        """(A check, run as a step on one grant: reading every grant's views after every step
        would be most of the test's time.)"""
        now = boa.env.timestamp
        for payee, amount in self.received.items():
            assert self.usd.balanceOf(payee) == self.received_before[payee] + amount
        for g in [self.models[gid]]:
            on_chain = as_grant(self.b.grants(gid))
            assert (on_chain.paused, on_chain.revoked) == (g.paused, g.revoked)
            assert self.b.spent_in_period(gid) == mirror.spent_now(on_chain, now)
            if now >= g.start:
                assert mirror.spent_now(on_chain, now) == g.spent_in(mirror.period_start(on_chain, now))
            assert self.b.available(gid) == mirror.available(
                on_chain, self.b.balance_of(g.owner.address), now)

    @rule()
    def each_owner_withdraws_all_in_one_tx(self):
        """(A check, run as a step: every owner takes all of theirs back, then it is undone.)"""
        with boa.env.anchor():
            for owner in OWNERS:
                have = self.b.balance_of(owner.address)
                if have:
                    before = self.usd.balanceOf(owner.address)
                    with boa.env.prank(owner.address):
                        self.b.withdraw(have)
                    assert self.usd.balanceOf(owner.address) == before + have
            assert self.usd.balanceOf(self.b.address) == 0


def test_budget_limits_hold_whatever_the_order_of_calls(system):
    BudgetMachine.system = system
    BudgetMachine.budget = deploy_budget(system)
    run_state_machine_as_test(BudgetMachine, settings=settings(
        max_examples=70, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    print("AgentBudget payment attempts by outcome:", dict(OUTCOMES.most_common()))
    # Every limit was met at least once, and payments did pass.
    assert OUTCOMES["paid"] > 0
