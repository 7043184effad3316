"""AgentBudget.vy: deposits, grants, and every limit of a signed payment, each refusal leaving
every balance as it was (issue 13, part 1)."""

from __future__ import annotations

import boa
import pytest
from agent_budget_support import DAY, OWNER_FUNDS, as_grant, deploy_budget, make_setup, sign_payment
from contracts_support import USD, events, key_account
from eth_utils import keccak

from tessera.protocol.agent_budget import (
    PAYMENT_TYPE_STRING,
    payment_refusal,
    payment_typed_data,
    period_start,
)
from tessera.protocol.messages import digest

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@pytest.fixture
def s(system):
    setup = make_setup(system)
    setup.fund(setup.owners[0], 500 * USD)
    return setup


# ------------------------------------------------------------------ deposits


def test_deposit_and_withdraw_any_time(s):
    b, owner = s.budget, s.owners[0]
    assert b.balance_of(owner.address) == 500 * USD
    assert s.usd.balanceOf(b.address) == 500 * USD
    gid = s.grant(owner, s.keys[0])
    with boa.env.prank(owner.address):
        b.set_paused(gid, True)
        b.withdraw(200 * USD)        # paused grant: still withdraws
        assert events(b, "Withdrawn")[0].amount == 200 * USD
        b.set_paused(gid, False)
    s.pay(s.keys[0], gid, s.payees[0], 5 * USD)
    with boa.env.prank(owner.address):
        b.withdraw(295 * USD)        # all of it, while the grant is live
        with boa.reverts("owner balance"):
            b.withdraw(1)
        with boa.reverts("zero amount"):
            b.withdraw(0)
    assert b.balance_of(owner.address) == 0
    assert s.usd.balanceOf(owner.address) == OWNER_FUNDS - 5 * USD
    assert s.usd.balanceOf(b.address) == 0
    with boa.reverts("owner balance"):   # the grant has nothing left to pay from
        s.pay(s.keys[0], gid, s.payees[0], 1)


def test_deposit_needs_an_allowance_and_logs(s):
    b, owner = s.budget, s.owners[1]
    with boa.env.prank(owner.address), boa.reverts():
        b.deposit(USD)
    s.fund(owner, 7 * USD)
    assert events(b, "Deposited")[0].amount == 7 * USD
    assert b.balance_of(owner.address) == 7 * USD


def test_no_owner_powers(s):
    abi_names = {item.get("name") for item in s.budget.abi}
    assert not abi_names & {"owner", "transfer_ownership", "set_minter", "pause", "upgrade",
                            "rescue", "sweep"}


# ------------------------------------------------------------------ grants


def test_grant_records_every_field_and_payee(s):
    b, owner, key = s.budget, s.owners[0], s.keys[0]
    start = boa.env.timestamp + 100
    gid = s.grant(owner, key, budget=50 * USD, period=3600, cap=5 * USD, start=start,
                  expiry=start + DAY, payees=s.payees[:2])
    granted = events(b, "Granted")[0]
    assert [e.payee for e in events(b, "PayeeAllowed")] == s.payees[:2]
    assert (granted.grant_id, granted.owner, granted.key, granted.budget) == (
        1, owner.address, key.address, 50 * USD)
    assert gid == 1 and b.grant_count() == 1
    g = as_grant(b.grants(gid))
    assert (g.owner, g.key, g.budget, g.period, g.cap, g.start, g.expiry) == (
        owner.address, key.address, 50 * USD, 3600, 5 * USD, start, start + DAY)
    assert (g.any_provider, g.paused, g.revoked, g.period_start, g.spent) == (
        False, False, False, start, 0)
    assert b.payee_allowed(gid, s.payees[1]) and not b.payee_allowed(gid, s.payees[2])
    assert s.grant(owner, key) == 2


@pytest.mark.parametrize("change, reason", [
    ({"key": "0x" + "00" * 20}, "zero key"),
    ({"budget": 0}, "zero budget"),
    ({"period": 0}, "zero period"),
    ({"cap": 0}, "zero cap"),
    ({"expiry": 1000}, "expiry not after start"),
    ({"payees": []}, "no payees"),
    ({"payees": ["0x" + "00" * 20]}, "zero payee"),
    ({"payees": ["self"]}, "payee is this contract"),
])
def test_grant_refuses_bad_limits(s, change, reason):
    if change.get("payees") == ["self"]:   # a payment to the contract would strand its tokens
        change = {"payees": [s.budget.address]}
    args = {"key": s.keys[0].address, "budget": USD, "period": DAY, "cap": USD, "start": 1000,
            "expiry": 2000, "payees": s.payees[:1], "any_provider": False} | change
    with boa.env.prank(s.owners[0].address), boa.reverts(reason):
        s.budget.grant(*args.values())


def test_only_the_owner_pauses_and_revokes(s):
    b, owner = s.budget, s.owners[0]
    gid = s.grant(owner, s.keys[0])
    for who in (s.keys[0].address, s.owners[1].address, s.system.outsider.address):
        with boa.env.prank(who):
            with boa.reverts("not grant owner"):
                b.set_paused(gid, True)
            with boa.reverts("not grant owner"):
                b.revoke(gid)
    with boa.env.prank(owner.address):
        with boa.reverts("not grant owner"):
            b.revoke(99)                 # unknown grant: nobody owns it
        b.set_paused(gid, True)
        assert events(b, "GrantPaused")[0].paused
        b.revoke(gid)
        assert events(b, "GrantRevoked")[0].grant_id == gid
        with boa.reverts("revoked"):
            b.revoke(gid)
        b.set_paused(gid, False)         # un-pausing does not undo a revoke
    assert b.grants(gid).revoked and b.available(gid) == 0
    with boa.reverts("revoked"):
        s.pay(s.keys[0], gid, s.payees[0], USD)


# ------------------------------------------------------------------ payments


def test_a_payment_moves_the_amount_and_logs(s):
    b, owner, key, payee = s.budget, s.owners[0], s.keys[0], s.payees[0]
    gid = s.grant(owner, key)
    assert b.available(gid) == 10 * USD
    nonce = s.pay(key, gid, payee, 3 * USD)
    paid = events(b, "AgentPaid")[0]
    assert (paid.grant_id, paid.owner, paid.payee, paid.key, paid.amount, paid.nonce) == (
        gid, owner.address, payee, key.address, 3 * USD, nonce)
    assert s.usd.balanceOf(payee) == 3 * USD
    assert b.balance_of(owner.address) == 497 * USD
    assert s.usd.balanceOf(b.address) == 497 * USD
    assert b.nonce_used(gid, nonce) and b.spent_in_period(gid) == 3 * USD
    assert b.available(gid) == 10 * USD      # the cap binds, not the budget
    s.pay(key, gid, payee, 10 * USD, sender=payee)   # anyone may submit, the payee too
    assert b.spent_in_period(gid) == 13 * USD


def test_the_digest_is_eip712(s):
    b = s.budget
    nonce, deadline = b"\x07" * 32, 12345
    typed = payment_typed_data(boa.env.evm.patch.chain_id, b.address, 3, s.payees[0], 9, nonce,
                               deadline)
    assert b.payment_digest(3, s.payees[0], 9, nonce, deadline) == digest(typed)
    assert b.PAYMENT_TYPEHASH() == keccak(text=PAYMENT_TYPE_STRING)
    assert b.eip712Domain()[1:5] == ("Tessera AgentBudget", "1", boa.env.evm.patch.chain_id,
                                     b.address)


def _refused(s, reason, action):
    before = s.snapshot()
    with boa.reverts(reason):
        action()
    assert s.snapshot() == before


def test_every_limit_refuses_and_moves_nothing(s):
    b, owner, key, payee = s.budget, s.owners[0], s.keys[0], s.payees[0]
    now = boa.env.timestamp
    gid = s.grant(owner, key, budget=12 * USD, period=DAY, cap=10 * USD, start=now,
                  expiry=now + 10 * DAY)
    nonce = s.pay(key, gid, payee, 10 * USD)
    _refused(s, "nonce used", lambda: s.pay(key, gid, payee, 1, nonce=nonce))
    _refused(s, "over cap", lambda: s.pay(key, gid, payee, 10 * USD + 1))
    _refused(s, "over period budget", lambda: s.pay(key, gid, payee, 2 * USD + 1))
    _refused(s, "zero amount", lambda: s.pay(key, gid, payee, 0))
    _refused(s, "payee not allowed", lambda: s.pay(key, gid, s.payees[1], 1))
    _refused(s, "deadline passed", lambda: s.pay(key, gid, payee, 1, deadline=now - 1))
    _refused(s, "unknown grant", lambda: s.pay(key, 99, payee, 1))
    late = s.grant(owner, key, start=now + 100)
    _refused(s, "not started", lambda: s.pay(key, late, payee, 1))
    with boa.env.prank(owner.address):
        b.set_paused(gid, True)
    _refused(s, "paused", lambda: s.pay(key, gid, payee, 1))
    with boa.env.prank(owner.address):
        b.set_paused(gid, False)
    s.pay(key, gid, payee, 1)   # resumes
    with boa.env.prank(owner.address):
        b.revoke(gid)
    _refused(s, "revoked", lambda: s.pay(key, gid, payee, 1))
    short = s.grant(owner, key, start=now, expiry=now + 50)
    boa.env.time_travel(seconds=60)
    _refused(s, "expired", lambda: s.pay(key, short, payee, 1))
    poor = s.grant(s.owners[1], key)   # owner 1 deposited nothing
    _refused(s, "owner balance", lambda: s.pay(key, poor, payee, 1))


def test_signatures_bind_key_grant_contract_and_chain(s, system):
    b, owner, key, payee = s.budget, s.owners[0], s.keys[0], s.payees[0]
    gid = s.grant(owner, key)
    other = s.grant(owner, s.keys[1])
    twin = deploy_budget(system)
    n, dl = s.fresh_nonce(), boa.env.timestamp + 600
    wrong = {
        "another key": sign_payment(s.keys[1], b.address, gid, payee, USD, n, dl),
        "another grant": sign_payment(key, b.address, other, payee, USD, n, dl),
        "another contract": sign_payment(key, twin.address, gid, payee, USD, n, dl),
        "another chain": sign_payment(key, b.address, gid, payee, USD, n, dl,
                                      chain_id=boa.env.evm.patch.chain_id + 1),
        "another domain name": sign_payment(key, b.address, gid, payee, USD, n, dl, name="x"),
        "another amount": sign_payment(key, b.address, gid, payee, USD - 1, n, dl),
        "another payee": sign_payment(key, b.address, gid, s.payees[1], USD, n, dl),
        "another deadline": sign_payment(key, b.address, gid, payee, USD, n, dl + 1),
    }
    good = sign_payment(key, b.address, gid, payee, USD, n, dl)
    r, s_, v = good[:32], int.from_bytes(good[32:64], "big"), good[64]
    high_s = r + (SECP256K1_N - s_).to_bytes(32, "big") + bytes([55 - v])  # same point, malleated
    wrong |= {"64 bytes (EIP-2098 compact)": good[:64], "v = 29": good[:64] + b"\x1d",
              "high s (malleated)": high_s, "empty": b""}
    for what, signature in wrong.items():
        before = s.snapshot()
        with boa.reverts("bad signature"):
            s.pay(key, gid, payee, USD, nonce=n, deadline=dl, signature=signature)
        assert s.snapshot() == before, what
    s.pay(key, gid, payee, USD, nonce=n, deadline=dl, signature=good)
    assert s.usd.balanceOf(payee) == USD


def test_any_provider_pays_registered_providers_only(s, system):
    b, owner, key = s.budget, s.owners[0], s.keys[0]
    gid = s.grant(owner, key, payees=[], any_provider=True)
    provider = system.providers[2].address
    assert b.payee_allowed(gid, provider) and not b.payee_allowed(gid, s.payees[0])
    s.pay(key, gid, provider, 2 * USD)
    assert s.usd.balanceOf(provider) == 2 * USD
    _refused(s, "payee not allowed", lambda: s.pay(key, gid, s.payees[0], 1))
    newcomer = key_account(400)
    assert not b.payee_allowed(gid, newcomer.address)
    system.stake.mint(newcomer.address, 1_000 * 10**18)
    with boa.env.prank(newcomer.address):
        system.stake.approve(system.registry.address, 2**256 - 1)
        system.registry.register(system.registry.min_stake(), "H100", 1, 81920, 1,
                                 "https://n.example", 1)
    s.pay(key, gid, newcomer.address, 1)   # registered after the grant: allowed too
    listed = s.grant(owner, key, payees=[s.payees[0]], any_provider=False)
    _refused(s, "payee not allowed", lambda: s.pay(key, listed, provider, 1))


def test_periods_are_aligned_at_the_start(s):
    b, owner, key, payee = s.budget, s.owners[0], s.keys[0], s.payees[0]
    start = boa.env.timestamp - 250   # started 250 s ago, 100 s periods: now is 50 s into one
    gid = s.grant(owner, key, budget=10 * USD, period=100, cap=10 * USD, start=start)
    s.pay(key, gid, payee, 10 * USD)
    g = as_grant(b.grants(gid))
    assert g.period_start == start + 200 == period_start(g, boa.env.timestamp)
    _refused(s, "over period budget", lambda: s.pay(key, gid, payee, 1))
    boa.env.time_travel(seconds=49)   # still the same period
    _refused(s, "over period budget", lambda: s.pay(key, gid, payee, 1))
    assert b.available(gid) == 0
    boa.env.time_travel(seconds=1)    # the next period starts
    assert b.spent_in_period(gid) == 0 and b.available(gid) == 10 * USD
    s.pay(key, gid, payee, 10 * USD)
    assert b.grants(gid).period_start == start + 300


def test_the_mirror_names_the_same_reason(s):
    b, owner, key, payee = s.budget, s.owners[0], s.keys[0], s.payees[0]
    gid = s.grant(owner, key, budget=12 * USD, cap=10 * USD)
    cases = [(payee, 11 * USD, "over cap"), (payee, 0, "zero amount"),
             (s.payees[2], USD, "payee not allowed"), (payee, 5 * USD, None)]
    for to, amount, reason in cases:
        g = as_grant(b.grants(gid))
        n, dl = s.fresh_nonce(), boa.env.timestamp + 600
        mirror = payment_refusal(g, b.payee_allowed(gid, to), b.balance_of(owner.address),
                                 b.nonce_used(gid, n), boa.env.timestamp, to, amount, dl)
        assert mirror == reason
        if reason is None:
            s.pay(key, gid, to, amount, nonce=n, deadline=dl)
        else:
            _refused(s, reason, lambda to=to, amount=amount, n=n, dl=dl:
                     s.pay(key, gid, to, amount, nonce=n, deadline=dl))


def test_pay_gas(s):
    """Gas of `pay` (titanoboa's py-evm, cold storage): the first payment of a grant and a
    later one in the same period (printed with -s; bounds keep regressions visible)."""
    b, owner, key, payee = s.budget, s.owners[0], s.keys[0], s.payees[0]
    gid = s.grant(owner, key)
    s.pay(key, gid, payee, USD)
    first = b._computation.get_gas_used()
    s.pay(key, gid, payee, USD)
    second = b._computation.get_gas_used()
    print(f"AgentBudget.pay gas (boa computation): first {first}, subsequent {second}")
    assert second <= first < 150_000
