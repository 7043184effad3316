"""Market: orders, EIP-712 bids, leases, streaming payment, fees, refunds, roles."""

from __future__ import annotations

import boa
import pytest
from contracts_support import (
    CLAIM_WINDOW,
    DOWNTIME_SLASH,
    EPOCH,
    FEE_BPS,
    HOUR,
    USD,
    bid_typed_data,
    events,
    key_account,
    typed_digest,
)

# -- admin --------------------------------------------------------------------------------


def test_constructor_and_views(system, factories):
    m = system.market
    assert m.payment_token() == system.usd.address and m.registry() == system.registry.address
    assert m.treasury() == system.treasury and m.fee_bps() == FEE_BPS
    assert m.order_count() == 0 and m.lease_count() == 0 and m.next_order_id() == 1
    assert m.MAX_FEE_BPS() == 1000
    assert m.uptime() == system.uptime.address
    assert (m.epoch_genesis(), m.epoch_length()) == (system.uptime.genesis(), EPOCH)
    assert (m.downtime_slash(), m.claim_window()) == (DOWNTIME_SLASH, CLAIM_WINDOW)
    zero = "0x" + "00" * 20
    args = [system.usd.address, system.registry.address, system.uptime.address, system.treasury,
            FEE_BPS, DOWNTIME_SLASH, CLAIM_WINDOW]
    for index, value, message in [(4, 1001, "market: fee too high"),
                                  (0, zero, "market: zero payment token"),
                                  (1, zero, "market: zero registry"),
                                  (2, zero, "market: zero uptime"),
                                  (3, zero, "market: zero treasury")]:
        with boa.reverts(message):
            factories["Market"].deploy(*args[:index], value, *args[index + 1:])
    fields, name, version, chain_id, contract, _, _ = m.eip712Domain()
    assert (name, version, chain_id, contract) == ("TesseraMarket", "1", system.chain_id,
                                                   m.address)


def test_fee_and_treasury_owner_only(system):
    m, out = system.market, system.outsider.address
    with boa.env.prank(out), boa.reverts("market: caller is not the owner"):
        m.set_fee_bps(10)
    with boa.env.prank(out), boa.reverts("market: caller is not the owner"):
        m.set_treasury(out)
    with boa.reverts("market: fee too high"):
        m.set_fee_bps(1001)
    with boa.reverts("market: zero treasury"):
        m.set_treasury("0x" + "00" * 20)
    with boa.reverts("market: the Market cannot be its own treasury"):   # review 29: its fees
        m.set_treasury(m.address)                                         # would be nobody's
    m.set_fee_bps(1000)
    (ev,) = events(m, "FeeChanged")
    assert (ev.old_fee_bps, ev.new_fee_bps) == (FEE_BPS, 1000)
    m.set_treasury(out)
    (ev,) = events(m, "TreasuryChanged")
    assert (ev.old_treasury, ev.new_treasury) == (system.treasury, out)
    assert m.fee_bps() == 1000 and m.treasury() == out


# -- orders -------------------------------------------------------------------------------


def test_create_order(system):
    m, usd, t = system.market, system.usd, system.tenant
    bal = usd.balanceOf(t.address)
    oid = system.create_order(gpu_model="H100", min_gpus=4, min_mem=80000, max_price=3 * USD,
                              duration=2 * HOUR, nodes=2, deposit=50 * USD)
    (ev,) = events(m, "OrderCreated")
    assert oid == 1 and ev.order_id == 1 and ev.tenant == t.address and ev.deposit == 50 * USD
    assert (ev.gpu_model, ev.min_gpus, ev.min_gpu_memory_mb, ev.nodes) == ("H100", 4, 80000, 2)
    o = m.orders(oid)
    assert (o.tenant, o.spec_hash, o.gpu_model, o.min_gpus, o.min_gpu_memory_mb) == (
        t.address, b"\x11" * 32, "H100", 4, 80000)
    assert (o.max_price_per_gpu_hour, o.duration, o.nodes, o.deposit) == (
        3 * USD, 2 * HOUR, 2, 50 * USD)
    assert (o.allocated, o.leases_made, o.open, o.created_at) == (0, 0, True, boa.env.timestamp)
    assert usd.balanceOf(t.address) == bal - 50 * USD
    assert usd.balanceOf(m.address) == 50 * USD == system.held()
    assert system.create_order() == 2 and m.order_count() == 2


@pytest.mark.parametrize("kwargs, msg", [
    ({"nodes": 0, "deposit": 1}, "market: nodes must be positive"),
    ({"duration": 0, "deposit": 1}, "market: duration must be positive"),
    ({"max_price": 0, "deposit": 1}, "market: max price must be positive"),
    ({"min_gpus": 0, "deposit": 1}, "market: min_gpus must be positive"),
    # worst case: 2 USD * 2 gpus * 3 nodes * 1.5 h = 18 USD
    ({"max_price": 2 * USD, "min_gpus": 2, "nodes": 3, "duration": 5400, "deposit": 18 * USD - 1},
     "market: deposit too small"),
    ({"max_price": 1, "duration": 1, "deposit": 0}, "market: deposit too small"),
])
def test_create_order_refusals(system, kwargs, msg):
    with boa.reverts(msg):
        system.create_order(**kwargs)


def test_create_order_needs_allowance(system):
    with boa.env.prank(system.tenant.address):
        system.usd.approve(system.market.address, 0)
    with boa.reverts("erc20: insufficient allowance"):
        system.create_order()


def _newbie_permit(system, value=20 * USD):
    """A tenant with tokens and no allowance, and its signed permit for the Market."""
    from contracts_support import PERMIT_TYPE, _typed, _vrs

    m, usd, newbie = system.market, system.usd, key_account(60)
    usd.mint(newbie.address, 100 * USD)  # no approve: permit does it in the same transaction
    deadline = boa.env.timestamp + 600
    typed = _typed(usd, "Permit", PERMIT_TYPE, {"owner": newbie.address, "spender": m.address,
                                                 "value": value, "nonce": 0,
                                                 "deadline": deadline})
    v, r, s = _vrs(newbie, typed)
    args = (b"\x22" * 32, "", 1, 0, 2 * USD, 10 * HOUR, 1, value, False, deadline, v, r, s)
    return newbie, deadline, (v, r, s), args


def test_create_order_with_permit(system):
    m, usd = system.market, system.usd
    newbie, _, _, args = _newbie_permit(system)
    stranger = key_account(61)  # no allowance of its own: the newbie's permit does not help it
    with boa.env.prank(stranger.address), boa.reverts(
            "market: permit failed and the allowance is too small"):
        m.create_order_with_permit(*args)
    with boa.env.prank(newbie.address):
        oid = m.create_order_with_permit(*args)
    assert m.orders(oid).tenant == newbie.address
    assert usd.balanceOf(newbie.address) == 80 * USD and usd.balanceOf(m.address) == 20 * USD
    with boa.env.prank(newbie.address), boa.reverts(
            "market: permit failed and the allowance is too small"):
        m.create_order_with_permit(*args)  # replayed permit: spent, and no allowance left


def test_front_run_permit_does_not_block_the_order(system):
    """The attack: a watcher copies the tenant's permit out of the mempool and submits it to
    the token first, which spends its nonce, so the tenant's own create_order_with_permit
    would revert. The Market accepts the allowance that permit already set."""
    m, usd = system.market, system.usd
    newbie, deadline, (v, r, s), args = _newbie_permit(system)
    with boa.env.prank(system.outsider.address):
        usd.permit(newbie.address, m.address, 20 * USD, deadline, v, r, s)
    assert usd.allowance(newbie.address, m.address) == 20 * USD
    with boa.env.prank(newbie.address):
        oid = m.create_order_with_permit(*args)
    assert m.orders(oid).tenant == newbie.address and m.orders(oid).deposit == 20 * USD
    assert usd.balanceOf(m.address) == 20 * USD == system.held()
    # the front-runner gained nothing: the allowance is the Market's, and it is used up
    assert usd.allowance(newbie.address, m.address) == 0


def test_cancel_order(system):
    m, usd, t = system.market, system.usd, system.tenant
    oid = system.create_order(max_price=2 * USD, duration=10 * HOUR, nodes=2, deposit=50 * USD)
    system.accept(oid, system.providers[0], price=USD)  # allocates 1 * 1 * 10 = 10 USD
    with boa.env.prank(system.outsider.address), boa.reverts("market: caller is not the tenant"):
        m.cancel_order(oid)
    with boa.env.prank(system.providers[0].address), boa.reverts(
            "market: caller is not the tenant"):
        m.cancel_order(oid)
    with boa.reverts("market: unknown order"):
        m.cancel_order(99)
    bal = usd.balanceOf(t.address)
    with boa.env.prank(t.address):
        m.cancel_order(oid)
    (ev,) = events(m, "OrderCancelled")
    assert (ev.order_id, ev.refund) == (oid, 40 * USD)
    assert usd.balanceOf(t.address) == bal + 40 * USD
    assert not m.orders(oid).open
    assert usd.balanceOf(m.address) == 10 * USD == system.held()
    with boa.env.prank(t.address), boa.reverts("market: order not open"):
        m.cancel_order(oid)
    with boa.reverts("market: order not open"):
        system.accept(oid, system.providers[1], price=USD)


# -- bids ---------------------------------------------------------------------------------


def test_bid_digest_matches_eth_account(system):
    m, p = system.market, system.providers[0]
    args = (7, p.address, 1_234_567, 42, 1_900_000_000)
    typed = bid_typed_data(system.chain_id, m.address, *args)
    assert m.bid_digest(*args) == typed_digest(typed)
    assert m.BID_TYPEHASH().hex() == (
        __import__("eth_utils").keccak(
            text="Bid(uint256 orderId,address provider,uint256 pricePerGpuHour,uint256 nonce,"
                 "uint256 expiry)").hex())


def test_bid_digest_matches_protocol_messages(system):
    """The off-chain module the provider daemon uses hashes and signs exactly like the contract."""
    messages = pytest.importorskip("tessera.protocol.messages")
    m, p = system.market, system.providers[0]
    typed = messages.bid_typed_data(system.chain_id, m.address, 1, p.address, USD, 3,
                                    boa.env.timestamp + 100)
    assert m.bid_digest(1, p.address, USD, 3, boa.env.timestamp + 100) == messages.digest(typed)
    oid = system.create_order()
    typed = messages.bid_typed_data(system.chain_id, m.address, oid, p.address, USD, 3,
                                    boa.env.timestamp + 100)
    sig = bytes.fromhex(messages.sign(p, typed)[2:])
    with boa.env.prank(system.tenant.address):
        lid = m.accept_bid(oid, p.address, USD, 3, boa.env.timestamp + 100, sig)
    assert lid == 1


def test_accept_bid_creates_lease(system):
    m, t, p = system.market, system.tenant, system.providers[0]
    oid = system.create_order(gpu_model="H100", min_gpus=4, min_mem=80000, max_price=3 * USD,
                              duration=2 * HOUR, nodes=2, deposit=48 * USD)
    lid = system.accept(oid, p, price=2 * USD, nonce=5)
    (ev,) = events(m, "LeaseCreated")
    assert lid == 1 and ev.lease_id == 1 and ev.order_id == oid
    assert (ev.tenant, ev.provider, ev.price_per_gpu_hour, ev.gpus) == (
        t.address, p.address, 2 * USD, 4)
    assert ev.budget == 16 * USD and ev.start == boa.env.timestamp
    lease = m.leases(lid)
    assert (lease.order_id, lease.tenant, lease.provider, lease.price_per_gpu_hour) == (
        oid, t.address, p.address, 2 * USD)
    assert (lease.gpus, lease.start, lease.budget, lease.paid, lease.closed_at) == (
        4, boa.env.timestamp, 16 * USD, 0, 0)
    assert lease.result_hash == b"\x00" * 32
    o = m.orders(oid)
    assert (o.allocated, o.leases_made, o.open) == (16 * USD, 1, True)
    assert m.bid_nonce_used(p.address, 5) and m.lease_of(oid, p.address) == lid
    assert m.lease_count() == 1 and system.held() == system.usd.balanceOf(m.address)


def test_accept_bid_only_tenant(system):
    oid = system.create_order()
    p = system.providers[0]
    for who in (system.tenant2, system.outsider, p):
        with boa.reverts("market: caller is not the tenant"):
            system.accept(oid, p, price=USD, tenant=who)
    with boa.reverts("market: unknown order"):
        system.accept(99, p, price=USD)


def test_replayed_bid_refused(system):
    m, p = system.market, system.providers[0]
    oid = system.create_order(nodes=2, deposit=40 * USD)
    expiry = boa.env.timestamp + HOUR
    sig = system.sign_bid(p, oid, USD, nonce=1, expiry=expiry)
    with boa.env.prank(system.tenant.address):
        m.accept_bid(oid, p.address, USD, 1, expiry, sig)
        with boa.reverts("market: bid already used"):
            m.accept_bid(oid, p.address, USD, 1, expiry, sig)
    # the same nonce used for a different order is refused too
    oid2 = system.create_order()
    with boa.reverts("market: bid already used"):
        system.accept(oid2, p, price=USD, nonce=1)


def test_expired_bid_refused(system):
    oid = system.create_order()
    expiry = boa.env.timestamp + 10
    sig = system.sign_bid(system.providers[0], oid, USD, expiry=expiry)
    boa.env.time_travel(seconds=11)
    with boa.env.prank(system.tenant.address), boa.reverts("market: bid expired"):
        system.market.accept_bid(oid, system.providers[0].address, USD, 0, expiry, sig)


def _accept_raw(system, oid, provider_addr, price, sig, nonce=0, expiry=None):
    expiry = boa.env.timestamp + HOUR if expiry is None else expiry
    with boa.env.prank(system.tenant.address):
        return system.market.accept_bid(oid, provider_addr, price, nonce, expiry, sig)


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _malleate(sig: bytes) -> bytes:
    """The other valid (r, n - s, v') signature for the same message (EIP-2 forbids it)."""
    s = int.from_bytes(sig[32:64], "big")
    v = 55 - sig[64]
    return sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([v])


def test_bad_signatures_refused(system):
    m, p0, p1 = system.market, system.providers[0], system.providers[1]
    oid = system.create_order()
    other_oid = system.create_order()
    expiry = boa.env.timestamp + HOUR
    cases = {
        # signed by another key, claiming to be p0
        "other key": system.sign_bid(p1, oid, USD, expiry=expiry, provider=p0.address),
        # a bid for another order
        "other order": system.sign_bid(p0, other_oid, USD, expiry=expiry),
        # another chain (different EIP-712 domain)
        "other chain": system.sign_bid(p0, oid, USD, expiry=expiry, chain_id=system.chain_id + 1),
        # another market contract
        "other market": system.sign_bid(p0, oid, USD, expiry=expiry,
                                        market=system.registry.address),
        # a different price than the one signed
        "tampered price": system.sign_bid(p0, oid, USD // 2, expiry=expiry),
        "garbage": b"\x01" * 65,
        "empty": b"",
        "short": system.sign_bid(p0, oid, USD, expiry=expiry)[:64],
        "high s": _malleate(system.sign_bid(p0, oid, USD, expiry=expiry)),
    }
    for name, sig in cases.items():
        with boa.reverts("market: bad bid signature"):
            _accept_raw(system, oid, p0.address, USD, sig, expiry=expiry)
        assert name  # for the failure message context
    assert not m.bid_nonce_used(p0.address, 0)
    _accept_raw(system, oid, p0.address, USD, system.sign_bid(p0, oid, USD, expiry=expiry),
                expiry=expiry)


def test_chain_fork_changes_domain(system):
    """After a chain-id change, a bid signed for the old chain no longer verifies."""
    m, p = system.market, system.providers[0]
    oid = system.create_order()
    expiry = boa.env.timestamp + HOUR
    sig = system.sign_bid(p, oid, USD, expiry=expiry)
    old = system.chain_id
    boa.env.evm.patch.chain_id = old + 7
    try:
        assert m.bid_digest(oid, p.address, USD, 0, expiry) == typed_digest(
            bid_typed_data(old + 7, m.address, oid, p.address, USD, 0, expiry))
        with boa.reverts("market: bad bid signature"):
            _accept_raw(system, oid, p.address, USD, sig, expiry=expiry)
    finally:
        boa.env.evm.patch.chain_id = old


def test_price_limits(system):
    p0 = system.providers[0]  # floor 1 USD
    oid = system.create_order(max_price=2 * USD)
    with boa.reverts("market: price above order max"):
        system.accept(oid, p0, price=2 * USD + 1)
    with boa.reverts("market: price below provider floor"):
        system.accept(oid, p0, price=USD - 1)
    system.accept(oid, p0, price=USD)


def test_inactive_provider_refused(system):
    reg, p0 = system.registry, system.providers[0]
    oid = system.create_order(nodes=3, deposit=100 * USD)
    with boa.env.prank(system.slasher):
        reg.jail(p0.address, boa.env.timestamp + 100)
    with boa.reverts("market: provider not active"):
        system.accept(oid, p0, price=USD, nonce=1)
    boa.env.time_travel(seconds=100)
    system.accept(oid, p0, price=USD, nonce=2)
    # under-staked
    p1 = system.providers[1]
    with boa.env.prank(p1.address):
        reg.request_unbond(1)
    with boa.reverts("market: provider not active"):
        system.accept(oid, p1, price=USD)
    # slashed to zero
    p3 = system.providers[3]
    with boa.env.prank(system.slasher):
        reg.slash(p3.address, 10**30, system.treasury)
    with boa.reverts("market: provider not active"):
        system.accept(oid, p3, price=USD)
    # never registered (signature valid, but not a provider)
    with boa.reverts("market: provider not active"):
        system.accept(oid, system.outsider, price=USD)


@pytest.mark.parametrize("order, provider_idx, msg", [
    ({"min_gpus": 9}, 0, "market: provider has too few gpus"),
    ({"min_mem": 81921}, 0, "market: provider gpu memory too small"),
    ({"gpu_model": "A100"}, 0, "market: gpu model mismatch"),
    ({"gpu_model": "H10"}, 0, "market: gpu model mismatch"),
    ({"min_gpus": 2}, 2, "market: provider has too few gpus"),
])
def test_hardware_must_meet_order(system, order, provider_idx, msg):
    oid = system.create_order(max_price=2 * USD, **order)
    with boa.reverts(msg):
        system.accept(oid, system.providers[provider_idx], price=USD)


def test_hardware_exact_match_and_any_model(system):
    oid = system.create_order(gpu_model="H100", min_gpus=8, min_mem=81920)
    system.accept(oid, system.providers[0], price=USD)
    oid = system.create_order(gpu_model="", min_gpus=1, nodes=3, deposit=100 * USD)
    for i in range(3):
        system.accept(oid, system.providers[i], price=USD, nonce=1)


def test_one_lease_per_provider_and_node_limit(system):
    p = system.providers
    oid = system.create_order(nodes=2, deposit=40 * USD)
    system.accept(oid, p[0], price=USD, nonce=1)
    with boa.reverts("market: provider already leased this order"):
        system.accept(oid, p[0], price=USD, nonce=2)
    system.accept(oid, p[1], price=USD, nonce=1)
    with boa.reverts("market: order fully leased"):
        system.accept(oid, p[3], price=USD, nonce=1)
    o = system.market.orders(oid)
    assert o.leases_made == 2 and o.open
    # leftover still refundable after the order filled
    bal = system.usd.balanceOf(system.tenant.address)
    with boa.env.prank(system.tenant.address):
        system.market.cancel_order(oid)
    assert system.usd.balanceOf(system.tenant.address) == bal + 40 * USD - 20 * USD


def test_zero_budget_refused(system):
    # price 1 base unit * 1 gpu * 1 s / 3600 rounds to 0
    reg = system.registry
    with boa.env.prank(system.providers[2].address):
        reg.update_offer("RTX4090", 1, 24576, 1, "https://x", 0)
    oid = system.create_order(max_price=1, duration=1, deposit=1)
    with boa.reverts("market: lease budget is zero"):
        system.accept(oid, system.providers[2], price=1)


def test_cancel_bid_nonce(system):
    m, p = system.market, system.providers[0]
    oid = system.create_order()
    with boa.env.prank(p.address):
        m.cancel_bid_nonce(9)
        (ev,) = events(m, "BidNonceCancelled")
        assert (ev.provider, ev.nonce) == (p.address, 9)
        with boa.reverts("market: bid already used"):
            m.cancel_bid_nonce(9)
    with boa.reverts("market: bid already used"):
        system.accept(oid, p, price=USD, nonce=9)
    # a cancellation by someone else only touches their own nonce space
    with boa.env.prank(system.outsider.address):
        m.cancel_bid_nonce(10)
    system.accept(oid, p, price=USD, nonce=10)


# -- leases: streaming, withdraw, top-up, close -------------------------------------------


@pytest.fixture
def lease(system):
    """Order for 1 node x 4 GPUs x 10 h at up to 3 USD; leased by provider 0 at 2 USD/GPU-h."""
    oid = system.create_order(min_gpus=4, max_price=3 * USD, duration=10 * HOUR,
                              deposit=200 * USD)
    return system.accept(oid, system.providers[0], price=2 * USD)  # budget 80 USD, 8 USD/h


def test_earned_streams_by_time(system, lease):
    m = system.market
    assert m.earned(lease) == 0
    boa.env.time_travel(seconds=HOUR // 2)
    assert m.earned(lease) == 4 * USD
    boa.env.time_travel(seconds=1)
    assert m.earned(lease) == 4 * USD + 8 * USD // HOUR
    boa.env.time_travel(seconds=100 * HOUR)
    assert m.earned(lease) == 80 * USD  # capped at budget
    assert m.earned(999) == 0


def test_withdraw(system, lease):
    m, usd, p = system.market, system.usd, system.providers[0]
    boa.env.time_travel(seconds=HOUR)
    with boa.env.prank(system.tenant.address), boa.reverts("market: caller is not the provider"):
        m.withdraw(lease)
    with boa.env.prank(system.outsider.address), boa.reverts("market: caller is not the provider"):
        m.withdraw(lease)
    with boa.env.prank(p.address), boa.reverts("market: unknown lease"):
        m.withdraw(999)
    bal, tre = usd.balanceOf(p.address), usd.balanceOf(system.treasury)
    with boa.env.prank(p.address):
        m.withdraw(lease)
    (ev,) = events(m, "Withdrawn")
    fee = 8 * USD * FEE_BPS // 10_000
    assert (ev.lease_id, ev.provider, ev.amount_to_provider, ev.fee) == (
        lease, p.address, 8 * USD - fee, fee)
    assert usd.balanceOf(p.address) == bal + 8 * USD - fee
    assert usd.balanceOf(system.treasury) == tre + fee
    assert m.leases(lease).paid == 8 * USD
    with boa.env.prank(p.address), boa.reverts("market: nothing to withdraw"):
        m.withdraw(lease)  # double withdrawal in the same block
    boa.env.time_travel(seconds=HOUR)
    with boa.env.prank(p.address):
        m.withdraw(lease)
    assert m.leases(lease).paid == 16 * USD
    assert usd.balanceOf(m.address) == system.held()


def test_withdraw_never_exceeds_budget(system, lease):
    m, usd, p = system.market, system.usd, system.providers[0]
    boa.env.time_travel(seconds=50 * HOUR)
    bal = usd.balanceOf(p.address)
    with boa.env.prank(p.address):
        m.withdraw(lease)
        boa.env.time_travel(seconds=HOUR)
        with boa.reverts("market: nothing to withdraw"):
            m.withdraw(lease)
    assert usd.balanceOf(p.address) - bal == 80 * USD - 80 * USD * FEE_BPS // 10_000


def test_top_up(system, lease):
    m, usd, t = system.market, system.usd, system.tenant
    with boa.env.prank(system.providers[0].address), boa.reverts(
            "market: caller is not the tenant"):
        m.top_up(lease, USD)
    with boa.env.prank(system.tenant2.address), boa.reverts("market: caller is not the tenant"):
        m.top_up(lease, USD)
    with boa.env.prank(t.address), boa.reverts("market: amount must be positive"):
        m.top_up(lease, 0)
    boa.env.time_travel(seconds=9 * HOUR)
    bal = usd.balanceOf(t.address)
    with boa.env.prank(t.address):
        m.top_up(lease, 16 * USD)
    (ev,) = events(m, "LeaseToppedUp")
    assert (ev.lease_id, ev.amount, ev.budget) == (lease, 16 * USD, 96 * USD)
    assert usd.balanceOf(t.address) == bal - 16 * USD and m.leases(lease).budget == 96 * USD
    boa.env.time_travel(seconds=2 * HOUR)
    assert m.earned(lease) == 88 * USD
    boa.env.time_travel(seconds=HOUR)
    assert m.earned(lease) == 96 * USD
    with boa.env.prank(t.address), boa.reverts("market: lease exhausted"):
        m.top_up(lease, USD)
    assert usd.balanceOf(m.address) == system.held()


def test_close_lease_by_tenant(system, lease):
    m, usd, t, p = system.market, system.usd, system.tenant, system.providers[0]
    boa.env.time_travel(seconds=HOUR)
    with boa.env.prank(p.address):
        m.withdraw(lease)  # 8 USD paid
    boa.env.time_travel(seconds=HOUR // 2)  # +4 USD owed
    for who in (system.tenant2, system.outsider):
        with boa.env.prank(who.address), boa.reverts("market: caller is not a lease party"):
            m.close_lease(lease)
    bt, bp, btr = usd.balanceOf(t.address), usd.balanceOf(p.address), usd.balanceOf(
        system.treasury)
    with boa.env.prank(t.address):
        m.close_lease(lease)
    (ev,) = events(m, "LeaseClosed")
    fee = 4 * USD * FEE_BPS // 10_000
    assert (ev.lease_id, ev.closed_by, ev.provider_amount, ev.fee, ev.refund) == (
        lease, t.address, 4 * USD - fee, fee, 68 * USD)
    assert usd.balanceOf(t.address) == bt + 68 * USD
    assert usd.balanceOf(p.address) == bp + 4 * USD - fee
    assert usd.balanceOf(system.treasury) == btr + fee
    closed = m.leases(lease)
    assert closed.closed_at == boa.env.timestamp and closed.paid == 12 * USD
    boa.env.time_travel(seconds=HOUR)
    assert m.earned(lease) == 12 * USD  # frozen
    with boa.env.prank(t.address), boa.reverts("market: lease closed"):
        m.close_lease(lease)
    with boa.env.prank(p.address), boa.reverts("market: nothing to withdraw"):
        m.withdraw(lease)
    with boa.env.prank(t.address), boa.reverts("market: lease closed"):
        m.top_up(lease, USD)
    # the order's unallocated part is still with the order
    assert usd.balanceOf(m.address) == system.held() == 120 * USD


def test_close_lease_by_provider(system, lease):
    m, p = system.market, system.providers[0]
    boa.env.time_travel(seconds=HOUR)
    with boa.env.prank(p.address):
        m.close_lease(lease)
    (ev,) = events(m, "LeaseClosed")
    assert ev.closed_by == p.address and ev.refund == 72 * USD
    with boa.env.prank(p.address), boa.reverts("market: lease closed"):
        m.close_lease(lease)


def test_close_unknown_lease(system):
    with boa.reverts("market: unknown lease"):
        system.market.close_lease(5)


def _lease_at_fee(system, fee_bps: int, nonce: int) -> int:
    system.market.set_fee_bps(fee_bps)
    oid = system.create_order(min_gpus=4, max_price=3 * USD, duration=10 * HOUR,
                              deposit=200 * USD)
    return system.accept(oid, system.providers[3 * nonce], price=2 * USD, nonce=nonce)


def test_fee_zero_and_max(system):
    m, usd = system.market, system.usd
    free, dear = _lease_at_fee(system, 0, 0), _lease_at_fee(system, 1000, 1)
    assert (m.leases(free).fee_bps, m.leases(dear).fee_bps) == (0, 1000)
    boa.env.time_travel(seconds=HOUR)
    tre = usd.balanceOf(system.treasury)
    with boa.env.prank(m.leases(free).provider):
        m.withdraw(free)
    assert usd.balanceOf(system.treasury) == tre
    with boa.env.prank(m.leases(dear).provider):
        m.withdraw(dear)
    assert usd.balanceOf(system.treasury) == tre + 8 * USD // 10


def test_fee_change_does_not_touch_existing_leases(system, lease):
    """The attack: the owner raises the fee to the maximum on pay already earned. A lease keeps
    the fee it was created with; only leases created after the change pay the new one."""
    m, usd, p = system.market, system.usd, system.providers[0]
    assert m.leases(lease).fee_bps == FEE_BPS
    boa.env.time_travel(seconds=HOUR)
    m.set_fee_bps(1000)
    (ev,) = events(m, "FeeChanged")
    assert (ev.old_fee_bps, ev.new_fee_bps) == (FEE_BPS, 1000)
    tre, before = usd.balanceOf(system.treasury), usd.balanceOf(p.address)
    with boa.env.prank(p.address):
        m.withdraw(lease)
    assert usd.balanceOf(system.treasury) - tre == 8 * USD * FEE_BPS // 10_000
    assert usd.balanceOf(p.address) - before == 8 * USD - 8 * USD * FEE_BPS // 10_000
    assert m.leases(lease).fee_bps == FEE_BPS
    with boa.env.prank(system.outsider.address), boa.reverts("market: caller is not the owner"):
        m.set_fee_bps(0)


def test_commit_result(system, lease):
    m, p = system.market, system.providers[0]
    h = bytes.fromhex("ab" * 32)
    for who in (system.tenant, system.outsider, system.providers[1]):
        with boa.env.prank(who.address), boa.reverts("market: caller is not the provider"):
            m.commit_result(lease, h)
    with boa.env.prank(p.address):
        m.commit_result(lease, h)
    (ev,) = events(m, "ResultCommitted")
    assert (ev.lease_id, ev.provider, ev.result_hash) == (lease, p.address, h)
    assert m.leases(lease).result_hash == h
    with boa.env.prank(p.address), boa.reverts("market: unknown lease"):
        m.commit_result(77, h)
