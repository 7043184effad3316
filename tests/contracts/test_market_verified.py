"""Market: a verified order's pay waits for its Verification rounds (docs/verification.md,
"Market: pay waits for verified rounds"), on the real Market, Verification, Validators,
ProviderRegistry, Uptime and tokens (titanoboa). Roots, challenges and votes are the real
protocol: EIP-712 commitments signed by the providers' test keys, tenant challenges voted on
by staked validators and resolved."""

from __future__ import annotations

from types import SimpleNamespace

import boa
import pytest
from boa.contracts.base_evm_contract import BoaError
from contracts_support import (
    EPOCH,
    FEE_BPS,
    HOUR,
    MIN_STAKE,
    SETTLE_EPOCHS,
    TSTK,
    UNBONDING_PERIOD,
    USD,
    VALIDATORS,
    WINDOW,
    deploy_verification,
    deployer,
    events,
)
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.protocol import commitment as cm

GRACE = 2 * HOUR
DELAY = WINDOW + GRACE
PRICE = USD  # per GPU-hour, one GPU: 1 USD an hour


class Job:
    """One verified order, its leases, and the rounds its tenant posts."""

    def __init__(self, system, ver, order_id: int, leases: list[int], workers: list):
        self.system, self.ver, self.order_id = system, ver, order_id
        self.leases, self.workers = leases, workers
        self.trees: dict[int, cm.RoundTree] = {}
        self.signed: dict[int, list[cm.SignedCommitment]] = {}

    def post_round(self, gap: int = 0) -> int:
        """Post the next round, or `gap` rounds after it (the first root: round `gap`)."""
        rnd = self.ver.rounds_posted(self.order_id) + gap
        signed = []
        for lease_id, worker in zip(self.leases, self.workers, strict=True):
            c = cm.Commitment(job=self.order_id, round=rnd, lease_id=lease_id,
                              provider=worker.address,
                              result_hash=cm.hex32(keccak(b"result %d %d" % (rnd, lease_id))),
                              checkpoint_root=cm.hex32(keccak(b"ckpt %d %d" % (rnd, lease_id))),
                              checkpoints=11, expiry=boa.env.timestamp + HOUR)
            signed.append(cm.sign(worker, self.system.chain_id, self.ver.address, c))
        leaves = [cm.leaf(self.system.chain_id, self.ver.address, s.commitment) for s in signed]
        tree = cm.round_tree(leaves)
        self.trees[rnd], self.signed[rnd] = tree, signed
        with boa.env.prank(self.system.tenant.address):
            self.ver.post_root(self.order_id, rnd, tree.root, tree.n_leaves)
        return rnd

    def challenge(self, rnd: int, worker: int, guilty: bool | None) -> int:
        """The tenant challenges; four of the five validators vote `guilty` (None: nobody votes)."""
        signed, tree = self.signed[rnd][worker], self.trees[rnd]
        with boa.env.prank(self.system.tenant.address):
            cid = self.ver.open_challenge(signed.commitment.as_contract_tuple(),
                                          bytes.fromhex(signed.signature[2:]), tree.root,
                                          tree.n_leaves, worker, list(tree.proofs[worker]), 1,
                                          keccak(b"report"), 10 * TSTK)
        if guilty is not None:
            for v in VALIDATORS[:4]:
                with boa.env.prank(v.address):
                    self.ver.vote(cid, guilty)
        return cid

    def resolve(self, cid: int) -> None:
        with boa.env.prank(self.system.outsider.address):
            self.ver.resolve(cid)


@pytest.fixture
def bare(system, partials):  # noqa: F811
    """Validators and Verification deployed; the Market does not know Verification yet."""
    with boa.env.prank(deployer(6)):
        vals = partials["Validators"].deploy(system.stake.address, MIN_STAKE, UNBONDING_PERIOD)
    for who in [*VALIDATORS, system.tenant]:
        system.stake.mint(who.address, 1_000 * TSTK)
    for who in VALIDATORS:
        with boa.env.prank(who.address):
            system.stake.approve(vals.address, 2**256 - 1)
            vals.register(MIN_STAKE)
    ver = deploy_verification(system, partials, vals, by=5)
    system.registry.set_slasher(ver.address, True)
    with boa.env.prank(system.tenant.address):
        system.stake.approve(ver.address, 2**256 - 1)
    return ver


def deploy_settlement(system, partials, ver, by: int = 9, grace: int = GRACE):  # noqa: F811
    with boa.env.prank(deployer(by)):
        return partials["Settlement"].deploy(system.market.address, ver.address, grace)


@pytest.fixture
def ver(system, bare, partials):  # noqa: F811
    """Verification wired: the Market knows its Settlement (system.settlement)."""
    system.settlement = deploy_settlement(system, partials, bare)
    with boa.env.prank(system.owner):
        system.market.set_settlement(system.settlement.address)
    return bare


def new_job(system, ver, nodes: int = 2, first_provider: int = 0) -> Job:
    oid = system.create_order(nodes=nodes, max_price=2 * USD, verified=True)
    workers = system.providers[first_provider:first_provider + nodes]
    leases = [system.accept(oid, w, price=PRICE, nonce=500 + oid) for w in workers]
    return Job(system, ver, oid, leases, workers)


def accrued(system, lease_id: int, t: int) -> int:
    lease = system.market.leases(lease_id)
    if t <= lease.start:
        return 0
    return min(lease.price_per_gpu_hour * lease.gpus * (t - lease.start) // HOUR, lease.budget)


def wait(seconds: int) -> None:
    boa.env.time_travel(seconds=seconds)


def release(system, lease_id: int, up_to_round: int, refunds: list | None = None):
    """Anyone releases; returns the PayReleased event, and appends RoundRefunded ones."""
    with boa.env.prank(system.outsider.address):
        system.settlement.release(lease_id, up_to_round)
    logs = system.settlement.get_logs()
    if refunds is not None:
        refunds += [e for e in logs if type(e).__name__ == "RoundRefunded"]
    (ev,) = [e for e in logs if type(e).__name__ == "PayReleased"]
    return ev


def withdraw(system, lease_id: int) -> int:
    provider = system.market.leases(lease_id).provider
    before = system.usd.balanceOf(provider)
    with boa.env.prank(provider):
        system.market.withdraw(lease_id)
    return system.usd.balanceOf(provider) - before


def net(gross: int) -> int:
    return gross - gross * FEE_BPS // 10_000


def held_by(system, lease_id: int) -> int:
    lease, rel = system.market.leases(lease_id), system.settlement.releases(lease_id)
    return lease.budget - lease.paid - lease.downtime_refunded - rel.refunded


# ---------------------------------------------------------------- wiring and the order flag


def test_set_settlement_once_by_the_owner(system, bare, partials):  # noqa: F811
    m = system.market
    settlement = deploy_settlement(system, partials, bare)
    assert (settlement.verification(), settlement.root_grace(), settlement.release_delay()) == (
        bare.address, GRACE, DELAY)
    with boa.env.prank(system.tenant.address), boa.reverts("market: settlement not set"):
        m.create_order(b"\x01" * 32, "", 1, 0, USD, HOUR, 1, USD, True)
    with boa.env.prank(system.outsider.address), boa.reverts("market: caller is not the owner"):
        m.set_settlement(settlement.address)
    with boa.reverts("market: zero settlement"):
        m.set_settlement("0x" + "00" * 20)
    # a Verification (and so a Settlement) deployed for another market
    vals = SimpleNamespace(address=bare.validators())
    other = deploy_verification(system, partials, vals, by=7, market_=system.usd.address)
    with boa.reverts("settlement: verification is for another market"):
        deploy_settlement(system, partials, other, by=10)
    with boa.env.prank(deployer(11)):
        foreign = partials["Settlement"].deploy(system.usd.address, other.address, GRACE)
    with boa.reverts("market: settlement is for another market"):
        m.set_settlement(foreign.address)
    m.set_settlement(settlement.address)
    (ev,) = events(m, "SettlementSet")
    assert ev.settlement == settlement.address and m.settlement() == settlement.address
    with boa.reverts("market: settlement already set"):
        m.set_settlement(settlement.address)
    # only the Market may take a close refund, only the Settlement may refund a tenant
    with boa.env.prank(system.outsider.address), boa.reverts("settlement: caller is not the market"):
        settlement.close_refund(1)
    with boa.env.prank(system.outsider.address), boa.reverts("market: caller is not the settlement"):
        m.refund_tenant(1, 1)


def test_verified_flag_is_part_of_the_order(system, ver):
    plain = system.create_order()
    assert events(system.market, "OrderCreated")[0].verified is False
    verified = system.create_order(verified=True)
    assert events(system.market, "OrderCreated")[0].verified is True
    assert (system.market.verified(plain), system.market.verified(verified)) == (False, True)


# ---------------------------------------------------------------- release by round


def test_release_pays_final_rounds_only(system, ver):
    job = new_job(system, ver)
    lease = job.leases[0]
    start = system.market.leases(lease).start
    wait(HOUR)
    job.post_round()
    t0 = boa.env.timestamp
    assert system.market.withdrawable(lease) == 0
    with boa.env.prank(job.workers[0].address), boa.reverts("market: nothing to withdraw"):
        system.market.withdraw(lease)
    with boa.reverts("settlement: round not final"):
        release(system, lease, 1)
    with boa.reverts("settlement: round not posted"):
        release(system, lease, 2)
    wait(WINDOW)
    ev = release(system, lease, 1)
    pay = accrued(system, lease, t0)
    assert pay == PRICE and t0 - start == HOUR
    assert (ev.lease_id, ev.provider, ev.from_round, ev.to_round, ev.released_until, ev.amount,
            ev.withheld, ev.refund) == (lease, job.workers[0].address, 0, 1, t0, pay, 0, 0)
    with boa.reverts("settlement: nothing to release"):  # double release
        release(system, lease, 1)
    assert system.market.withdrawable(lease) == pay
    assert withdraw(system, lease) == net(pay)
    assert system.market.earned(lease) > pay  # accrued since the root, not released
    with boa.env.prank(job.workers[0].address), boa.reverts("market: nothing to withdraw"):
        system.market.withdraw(lease)
    assert system.usd.balanceOf(system.market.address) == system.held()


def test_a_skipped_round_counts_as_part_of_the_next_posted_one(system, ver):
    """A replacement worker's one-node order gets its first root at the round it joins: the
    rounds before it are skipped, never posted, and release walks past them."""
    job = new_job(system, ver)
    lease = job.leases[0]
    start = system.market.leases(lease).start
    wait(HOUR)
    rnd = job.post_round()
    assert rnd == 0
    with boa.env.prank(system.tenant.address):   # skip round 1: post round 2's root
        job.ver.post_root(job.order_id, 2, job.trees[0].root, job.trees[0].n_leaves)
    t2 = boa.env.timestamp
    assert job.ver.rounds_posted(job.order_id) == 3
    wait(WINDOW)
    ev = release(system, lease, 3)   # rounds 0, 1 (skipped, empty) and 2
    assert (ev.from_round, ev.to_round, ev.released_until) == (0, 3, t2)
    assert ev.amount == accrued(system, lease, t2) and t2 > start
    assert system.usd.balanceOf(system.market.address) == system.held()


def test_release_refusals(system, ver):
    job = new_job(system, ver, nodes=1)
    plain = system.create_order()
    plain_lease = system.accept(plain, system.providers[2], price=USD // 10, nonce=1)
    with boa.reverts("settlement: lease not verified"):
        release(system, plain_lease, 0)
    with boa.reverts("settlement: unknown lease"):
        release(system, 999, 0)
    with boa.reverts("settlement: nothing to release"):  # no root, nothing older than the delay
        release(system, job.leases[0], 0)
    wait(60)
    for _ in range(66):
        job.post_round()
    wait(WINDOW)
    with boa.reverts("settlement: too many rounds at once"):
        release(system, job.leases[0], 65)
    assert release(system, job.leases[0], 64).to_round == 64


def test_a_proven_cheat_sends_back_every_round_still_held(system, ver):
    """A cheat proven in round 1 costs the cheater all of its pay not yet released, not only
    round 1's: round 0 (final, but not released when the verdict came) goes back to the tenant
    too (RoundRefunded with `forfeited`), as does every later round and the time past the last
    root (issue 11: a worker faking a tenth of its segments is caught in a third of jobs; losing
    one round's pay then left it in profit, losing all it holds does not). The honest lease of
    the same job is paid in full."""
    job = new_job(system, ver)
    cheat, honest = job.leases
    wait(HOUR)
    job.post_round()
    t0 = boa.env.timestamp
    wait(HOUR)
    job.post_round()
    t1 = boa.env.timestamp
    cid = job.challenge(1, 0, guilty=True)
    wait(WINDOW)
    with boa.reverts("settlement: round not final"):  # the challenge is still open
        release(system, cheat, 2)
    assert not ver.cheated(cheat)
    job.resolve(cid)
    assert ver.proven(job.order_id, 1, cheat) and ver.cheated(cheat)
    assert not ver.proven(job.order_id, 0, cheat) and not ver.cheated(honest)
    tenant_before = system.usd.balanceOf(system.tenant.address)
    refunds: list = []
    ev = release(system, cheat, 2, refunds)
    round0, round1 = accrued(system, cheat, t0), accrued(system, cheat, t1) - accrued(system, cheat, t0)
    assert [(r.lease_id, r.tenant, r.round_index, r.amount, r.refund, r.forfeited) for r in refunds] == [
        (cheat, system.tenant.address, 0, round0, round0, True),
        (cheat, system.tenant.address, 1, round1, round1, False)]
    assert (ev.amount, ev.withheld, ev.refund) == (0, round0 + round1, round0 + round1)
    assert system.usd.balanceOf(system.tenant.address) == tenant_before + round0 + round1
    assert system.settlement.releases(cheat).proven == round0 + round1
    assert system.market.withdrawable(cheat) == 0
    # the honest lease of the same job is paid both rounds
    assert release(system, honest, 2).amount == accrued(system, honest, t1)
    assert withdraw(system, honest) == net(accrued(system, honest, t1))
    # the time after the last root, once the release delay has passed: back to the tenant too
    wait(DELAY)
    refunds = []
    ev = release(system, cheat, 2, refunds)
    (tail,) = refunds
    assert (tail.round_index, tail.forfeited, ev.amount) == (2, True, 0) and tail.amount > 0
    assert system.market.withdrawable(cheat) == 0
    assert system.usd.balanceOf(system.market.address) == system.held()


def test_pay_released_before_the_verdict_stays_the_providers(system, ver):
    """What a cheater was paid before its cheat was proven stays paid (the released rounds were
    final: their challenge windows closed clean); from the verdict on, nothing more. Here round
    0 is released and withdrawn, round 1 proven later: only round 1 goes back."""
    job = new_job(system, ver, nodes=1)
    lease = job.leases[0]
    wait(HOUR)
    job.post_round()
    t0 = boa.env.timestamp
    wait(WINDOW + 1)
    assert release(system, lease, 1).amount == accrued(system, lease, t0)
    assert withdraw(system, lease) == net(accrued(system, lease, t0))
    wait(HOUR)
    job.post_round()
    t1 = boa.env.timestamp
    cid = job.challenge(1, 0, guilty=True)
    wait(WINDOW)
    job.resolve(cid)
    refunds: list = []
    ev = release(system, lease, 2, refunds)
    assert [(r.round_index, r.forfeited) for r in refunds] == [(1, False)]
    assert ev.withheld == accrued(system, lease, t1) - accrued(system, lease, t0)
    assert system.market.withdrawable(lease) == 0
    assert system.usd.balanceOf(system.market.address) == system.held()


def test_rejected_challenge_releases_the_round(system, ver):
    job = new_job(system, ver, nodes=1)
    wait(HOUR)
    job.post_round()
    cid = job.challenge(0, 0, guilty=False)
    wait(WINDOW)
    job.resolve(cid)
    ev = release(system, job.leases[0], 1)
    assert (ev.amount, ev.withheld) == (PRICE, 0)


def test_close_keeps_unreleased_pay_then_release_and_withdraw(system, ver):
    job = new_job(system, ver, nodes=1)
    lease = job.leases[0]
    budget = system.market.leases(lease).budget
    wait(HOUR)
    job.post_round()  # round 0: the first hour
    wait(WINDOW)
    release(system, lease, 1)
    wait(HOUR // 2)
    tenant_before = system.usd.balanceOf(system.tenant.address)
    with boa.env.prank(system.tenant.address):
        system.market.close_lease(lease)
    tc = boa.env.timestamp
    (closed,) = events(system.market, "LeaseClosed")
    a_close = accrued(system, lease, tc)
    assert a_close == 2 * PRICE + PRICE // 2
    # the released hour is paid now; the rest of the budget beyond the accrued pay goes back
    assert (closed.provider_amount + closed.fee, closed.refund) == (PRICE, budget - a_close)
    assert system.usd.balanceOf(system.tenant.address) == tenant_before + budget - a_close
    assert held_by(system, lease) == a_close - PRICE
    assert system.usd.balanceOf(system.market.address) == system.held()
    # the round covering the close is posted after it: its interval is clamped to the close
    wait(HOUR)
    job.post_round()
    wait(WINDOW)
    ev = release(system, lease, 2)
    assert (ev.amount, ev.released_until) == (a_close - PRICE, tc)
    assert withdraw(system, lease) == net(a_close - PRICE)
    assert held_by(system, lease) == 0
    with boa.reverts("settlement: nothing to release"):
        release(system, lease, 2)


def test_close_then_proven_round_refunds_the_tenant(system, ver):
    job = new_job(system, ver, nodes=1)
    lease = job.leases[0]
    wait(HOUR)
    with boa.env.prank(job.workers[0].address):
        system.market.close_lease(lease)
    job.post_round()
    cid = job.challenge(0, 0, guilty=True)
    wait(WINDOW)
    job.resolve(cid)
    tenant_before = system.usd.balanceOf(system.tenant.address)
    ev = release(system, lease, 1)
    assert (ev.amount, ev.withheld, ev.refund) == (0, PRICE, PRICE)
    assert system.usd.balanceOf(system.tenant.address) == tenant_before + PRICE
    assert held_by(system, lease) == 0 and system.market.withdrawable(lease) == 0


def test_grace_releases_time_no_root_covers(system, ver):
    """A tenant who stops posting roots: time older than challenge_window + root_grace is
    released anyway, and a later root's round only covers what is not yet released."""
    job = new_job(system, ver, nodes=1)
    lease = job.leases[0]
    start = system.market.leases(lease).start
    wait(DELAY)
    with boa.reverts("settlement: nothing to release"):  # exactly the delay: nothing older yet
        release(system, lease, 0)
    wait(HOUR)
    ev = release(system, lease, 0)
    assert (ev.released_until, ev.amount) == (start + HOUR, PRICE)
    # a root now: its round starts where the grace release stopped; proven, only that is refunded
    job.post_round()
    t0 = boa.env.timestamp
    cid = job.challenge(0, 0, guilty=True)
    wait(WINDOW)
    job.resolve(cid)
    ev = release(system, lease, 1)
    assert ev.withheld == accrued(system, lease, t0) - PRICE and ev.refund == ev.withheld
    assert withdraw(system, lease) == net(PRICE)


def test_non_verified_lease_streams_as_before(system, ver):
    oid = system.create_order()
    lease = system.accept(oid, system.providers[0], price=PRICE, nonce=3)
    wait(HOUR)
    assert system.market.withdrawable(lease) == PRICE
    assert withdraw(system, lease) == net(PRICE)
    assert system.settlement.releases(lease) == (0, 0, 0, 0)


def test_downtime_claim_on_a_verified_lease(system, ver):
    """The providers send no heartbeats here and no validator reports them: each whole epoch
    of the lease can be claimed once final."""
    job = new_job(system, ver, nodes=1)
    lease = job.leases[0]
    start = system.market.leases(lease).start
    wait(HOUR)
    genesis = system.uptime.genesis()
    first = -(-(start - genesis) // EPOCH)

    def pay(epoch: int, count: int = 1) -> int:
        begin = genesis + epoch * EPOCH
        return accrued(system, lease, begin + count * EPOCH) - accrued(system, lease, begin)

    tenant_before = system.usd.balanceOf(system.tenant.address)
    with boa.env.prank(system.tenant.address):
        system.market.claim_downtime(lease, [first, first + 1])
    (claim,) = events(system.market, "DowntimeClaimed")
    assert (claim.amount, claim.refund) == (pay(first, 2), pay(first, 2))
    assert system.usd.balanceOf(system.tenant.address) == tenant_before + pay(first, 2)
    job.post_round()
    t0 = boa.env.timestamp
    wait(WINDOW)
    release(system, lease, 1)
    assert withdraw(system, lease) == net(accrued(system, lease, t0) - pay(first, 2))
    # after the close, a claim on the unreleased part is refunded from what the lease holds
    wait(10 * EPOCH)
    with boa.env.prank(system.tenant.address):
        system.market.close_lease(lease)
    ended = (boa.env.timestamp - genesis) // EPOCH
    with boa.env.prank(system.tenant.address), boa.reverts("market: provider up (or epoch not final)"):
        system.market.claim_downtime(lease, [ended - 1])
    wait(SETTLE_EPOCHS * EPOCH)  # its liveness is final (reports and challenges are over)
    with boa.env.prank(system.tenant.address):
        system.market.claim_downtime(lease, [ended - 1])
    (claim,) = events(system.market, "DowntimeClaimed")
    assert claim.refund == pay(ended - 1) and system.market.shortfall(lease) == 0
    assert system.usd.balanceOf(system.market.address) == system.held()
    wait(DELAY)
    release(system, lease, 1)
    withdraw(system, lease)
    assert held_by(system, lease) == 0


# ---------------------------------------------------------------- the round-gap freeze


def test_a_tenant_cannot_freeze_pay_by_skipping_rounds(system, ver):
    """The attack (issue 10): post round 0, then round 2**255, so that a release must walk
    2**255 empty rounds before the time after the last root is released: the rest of the
    budget would sit in the Market with no way out. Roots may skip at most MAX_ROUND_GAP
    rounds, so the walk grows with the roots posted and every wei comes out."""
    job = new_job(system, ver, nodes=1)
    lease = job.leases[0]
    gap = ver.MAX_ROUND_GAP()
    job.post_round()
    for bad in (2**255, gap + 1):
        with boa.env.prank(system.tenant.address), boa.reverts("verification: too many rounds skipped"):
            job.post_round(bad)
    wait(600)
    assert job.post_round(gap) == gap + 1  # a bounded gap is allowed (a round whose root failed)
    with boa.env.prank(system.tenant.address), boa.reverts("verification: round already posted or skipped"):
        job.ver.post_root(job.order_id, gap, b"\x01" * 32, 1)  # a skipped round stays skipped
    wait(600)
    with boa.env.prank(system.tenant.address):
        system.market.close_lease(lease)
    wait(DELAY + 1)
    release(system, lease, ver.rounds_posted(job.order_id))  # one transaction walks it all
    assert system.settlement.releases(lease).until == system.market.leases(lease).closed_at
    withdraw(system, lease)
    assert held_by(system, lease) == 0
    assert system.usd.balanceOf(system.market.address) == system.held()


def test_a_replacement_order_starts_at_its_first_round(system, ver):
    """A replacement worker's one-node order posts its first root at the round it joined
    (any round): releases start there, not at round 0."""
    job = new_job(system, ver, nodes=1)
    lease = job.leases[0]
    first = 10**15
    wait(600)
    assert job.post_round(first) == first
    assert (ver.first_round(job.order_id), ver.rounds_posted(job.order_id)) == (first, first + 1)
    wait(WINDOW + 1)
    ev = release(system, lease, first + 1)
    assert (ev.from_round, ev.to_round) == (first, first + 1) and ev.amount > 0


def test_a_first_root_near_the_end_of_uint256_is_refused(system, ver):
    """Found by attacking the fix above: a first root at round 2**256 - 2 made `first +
    MAX_RELEASE_ROUNDS` overflow, so every release reverted and the pay had no way out. A
    first root may name at most round MAX_FIRST_ROUND (2**64), and the largest one still
    releases."""
    job = new_job(system, ver, nodes=1)
    lease = job.leases[0]
    wait(HOUR)
    top = ver.MAX_FIRST_ROUND()
    for bad in (2**256 - 2, top + 1):
        with boa.env.prank(system.tenant.address), boa.reverts("verification: round index too large"):
            ver.post_root(job.order_id, bad, b"\x01" * 32, 1)
    assert job.post_round(top) == top
    with boa.env.prank(system.tenant.address):
        system.market.close_lease(lease)
    wait(DELAY + 1)
    release(system, lease, top + 1)
    withdraw(system, lease)
    assert held_by(system, lease) == 0


def test_a_lost_slasher_role_does_not_freeze_a_verdict(system, ver):
    """Found by attacking: once the timelock revoked Verification's slasher role (to retire
    it), an upheld challenge could never be resolved (the slash reverted): the bond stayed in
    Verification and the round, never final, froze every lease's pay in the Market. The
    verdict now goes through with nothing slashed, and the pay comes out."""
    job = new_job(system, ver, nodes=2)
    cheat, honest = job.leases
    wait(HOUR)
    job.post_round()
    cid = job.challenge(0, 0, guilty=True)
    system.registry.set_slasher(ver.address, False)
    wait(DELAY)
    job.resolve(cid)
    (ev,) = events(ver, "ChallengeResolved")
    assert ev.outcome == 2 and ev.slashed == 0 and ev.bond_returned == 10 * TSTK
    assert ver.round_finalized(job.order_id, 0) and ver.proven(job.order_id, 0, cheat)
    for lid in (cheat, honest):
        with boa.env.prank(system.tenant.address):
            system.market.close_lease(lid)
    wait(DELAY + 1)
    for lid in (cheat, honest):
        release(system, lid, 1)
        if system.market.withdrawable(lid):
            withdraw(system, lid)
        assert held_by(system, lid) == 0
    assert system.usd.balanceOf(system.market.address) == system.held()


def test_a_starved_slash_reverts_the_resolve(system, ver):
    """The attack on that fix: a resolver gives `resolve` just enough gas that the slash runs
    out of it (63/64 rule) while the verdict goes through, sparing the provider. Checked at
    every gas budget near the least one that succeeds: a resolve that succeeds has slashed and
    jailed. (Today the transfers after the slash need far more than 1/64 of the gas, so the
    starving cannot even be set up; the contract also excuses a failed slash only when its
    role is really gone, in case the code after the call ever shrinks.)"""
    job = new_job(system, ver, nodes=2)
    wait(HOUR)
    job.post_round()
    cid = job.challenge(0, 0, guilty=True)
    wait(DELAY)
    stake0 = system.registry.providers(job.workers[0].address).stake
    low, high = 21_000, 2_000_000   # the least gas with which resolve succeeds, to 1,000
    while high - low > 1_000:
        mid = (low + high) // 2
        try:
            with boa.env.anchor(), boa.env.prank(system.outsider.address):
                ver.resolve(cid, gas=mid)
            high = mid
        except BoaError:
            low = mid
    for gas in range(high - 1_000, high + 30_000, 250):   # every budget near the edge
        with boa.env.anchor():
            try:
                with boa.env.prank(system.outsider.address):
                    ver.resolve(cid, gas=gas)
            except BoaError:
                continue
            assert system.registry.providers(job.workers[0].address).stake < stake0, gas
            assert system.registry.providers(job.workers[0].address).jailed_until > 0, gas


# ---------------------------------------------------------------- property: conservation

op = st.one_of(
    st.tuples(st.just("job"), st.integers(1, 2)),
    st.tuples(st.just("time"), st.sampled_from([EPOCH, 600, WINDOW // 2, WINDOW, DELAY])),
    st.tuples(st.just("time"), st.sampled_from([EPOCH, 600, WINDOW // 2, WINDOW, DELAY])),
    st.tuples(st.just("root"), st.integers(0, 2)),
    st.tuples(st.just("root"), st.integers(0, 2)),
    # a tenant skipping rounds to freeze its leases' pay: small gaps are allowed, huge refused
    st.tuples(st.just("root"), st.integers(0, 2), st.sampled_from([1, 8, 9, 2**200])),
    st.tuples(st.just("challenge"), st.integers(0, 2), st.integers(0, 1),
              st.sampled_from([True, True, False, None])),
    st.tuples(st.just("resolve"),),
    st.tuples(st.just("release"), st.integers(0, 4), st.sampled_from(["one", "all", "far"])),
    st.tuples(st.just("release"), st.integers(0, 4), st.sampled_from(["one", "all", "far"])),
    st.tuples(st.just("withdraw"), st.integers(0, 4)),
    st.tuples(st.just("top_up"), st.integers(0, 4), st.integers(1, 3 * USD)),
    st.tuples(st.just("downtime"), st.integers(0, 4), st.integers(0, 30)),
    st.tuples(st.just("close"), st.integers(0, 4), st.booleans()),
)
ops = st.builds(lambda first, rest: [first, *rest], st.tuples(st.just("job"), st.integers(1, 2)),
                st.lists(op, min_size=10, max_size=28))

ALLOWED = ("settlement: nothing to release", "settlement: round not final", "market: nothing to withdraw",
           "market: lease exhausted", "market: lease closed", "market: epoch",
           "market: claim window over", "market: provider up", "settlement: round not posted",
           "verification: ")


def attempt(action, allowed: tuple[str, ...] = ALLOWED) -> None:
    """Run a step of a property test; a revert must be one of the `allowed` reasons."""
    try:
        action()
    except BoaError as exc:
        # The revert reason alone: titanoboa's full description of some reverts (its call
        # tree, decoding storage it traced) can fail to render.
        reason = str(getattr(exc.stack_trace.last_frame, "pretty_vm_reason",
                             exc.stack_trace.last_frame))
        assert any(a in reason for a in allowed), reason


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(steps=ops)
def test_payment_token_conserved_and_proven_rounds_never_paid(system, ver, steps):
    """For any sequence of verified jobs, roots, challenges upheld or rejected or left open,
    resolutions, releases, withdrawals, top-ups, downtime claims and closes: every payment token
    is somewhere we can name (escrow in = paid to providers + treasury + refunds + still held),
    each lease's escrow covers the most its provider could still be paid, a provider's pay plus
    its proven rounds' pay never exceeds the pay for released time, each proven round's pay
    (and, once a cheat is proven for the lease, every round's and the tail's: none of it is
    released any more) goes back to the tenant up to what the lease holds; and once every
    round is final and the leases are closed and released, nothing is left in escrow but the
    providers' withdrawals."""
    with boa.env.anchor():
        _run(system, ver, steps)


def _lease_checks(system, lease_id: int) -> None:
    m = system.market
    lease, rel = m.leases(lease_id), system.settlement.releases(lease_id)
    assert lease.paid + rel.proven <= accrued(system, lease_id, max(rel.until, lease.start))
    end = lease.closed_at or None
    horizon = accrued(system, lease_id, end) if end else lease.budget
    reserve = max(0, horizon - rel.proven - lease.downtime - lease.paid)
    assert held_by(system, lease_id) >= reserve
    if lease.closed_at:
        assert held_by(system, lease_id) == reserve  # the rest went back to the tenant


def _run(system, ver, steps):
    m, usd = system.market, system.usd
    tenant = system.tenant.address
    parties = [tenant, system.treasury, m.address, *(p.address for p in system.providers)]
    total = sum(usd.balanceOf(p) for p in parties)
    jobs: list[Job] = []
    leases: list[tuple[Job, int]] = []
    proven_refunds: dict[int, int] = {}
    challenges: list[int] = []

    for step in steps:
        kind = step[0]
        if kind == "job":
            if len(leases) + step[1] <= 4 and len(jobs) < 3:
                job = new_job(system, ver, nodes=step[1], first_provider=len(leases))
                jobs.append(job)
                leases += [(job, lid) for lid in job.leases]
        elif kind == "time":
            wait(step[1])
        elif kind == "root" and jobs:
            job, gap = jobs[step[1] % len(jobs)], step[2] if len(step) > 2 else 0
            attempt(lambda job=job, gap=gap: job.post_round(gap))
        elif kind == "challenge" and jobs:
            job = jobs[step[1] % len(jobs)]
            posted = ver.rounds_posted(job.order_id)
            worker = step[2] % len(job.leases)
            if posted:
                attempt(lambda job=job, posted=posted, worker=worker, guilty=step[3]:
                        challenges.append(job.challenge(posted - 1, worker, guilty)))
        elif kind == "resolve" and challenges:
            for cid in list(challenges):
                try:
                    job_ = next(j for j in jobs if j.order_id == ver.challenges(cid).job)
                    job_.resolve(cid)
                    challenges.remove(cid)
                except BoaError:
                    pass  # not decided yet
        elif kind == "release" and leases:
            job, lid = leases[step[1] % len(leases)]
            rel_next = max(system.settlement.releases(lid).next_round, ver.first_round(job.order_id))
            posted = ver.rounds_posted(job.order_id)
            up_to = {"one": rel_next + 1, "all": posted, "far": posted + 1}[step[2]]
            attempt(lambda lid=lid, up_to=up_to: _release_checked(system, ver, lid, up_to,
                                                                  proven_refunds))
        elif kind == "withdraw" and leases:
            lid = leases[step[1] % len(leases)][1]
            attempt(lambda lid=lid: withdraw(system, lid))
        elif kind == "top_up" and leases:
            lid = leases[step[1] % len(leases)][1]

            def top_up(lid=lid, amount=step[2]):
                with boa.env.prank(tenant):
                    m.top_up(lid, amount)
            attempt(top_up)
        elif kind == "downtime" and leases:
            lid = leases[step[1] % len(leases)][1]
            first = -(-(m.leases(lid).start - system.uptime.genesis()) // EPOCH)

            def claim(lid=lid, epoch=first + step[2]):
                with boa.env.prank(system.outsider.address):
                    m.claim_downtime(lid, [epoch])
            attempt(claim)
        elif kind == "close" and leases:
            lid = leases[step[1] % len(leases)][1]

            def close(lid=lid, by_tenant=step[2]):
                with boa.env.prank(tenant if by_tenant else m.leases(lid).provider):
                    m.close_lease(lid)
            attempt(close)
        assert sum(usd.balanceOf(p) for p in parties) == total
        assert usd.balanceOf(m.address) == system.held()
        for _, lid in leases:
            _lease_checks(system, lid)

    # Settle everything: challenges resolved (no quorum after the vote period), leases closed,
    # every round final and released, providers withdraw: the escrow holds nothing of theirs.
    for _, lid in leases:
        if m.leases(lid).closed_at == 0:
            with boa.env.prank(tenant):
                m.close_lease(lid)
    wait(2 * DELAY)
    for cid in challenges:
        next(j for j in jobs if j.order_id == ver.challenges(cid).job).resolve(cid)
    for job, lid in leases:
        # Bounded: the rounds walked are at most MAX_ROUND_GAP + 1 per root posted.
        posted = ver.rounds_posted(job.order_id)
        walk = posted - ver.first_round(job.order_id)
        calls = 0
        while max(system.settlement.releases(lid).next_round, ver.first_round(job.order_id)) < posted \
                or max(system.settlement.releases(lid).until, m.leases(lid).start) < m.leases(lid).closed_at:
            start = max(system.settlement.releases(lid).next_round, ver.first_round(job.order_id))
            _release_checked(system, ver, lid, min(posted, start + 64), proven_refunds)
            calls += 1
            assert calls <= walk // 64 + 2, "release does not end"
        if m.withdrawable(lid):
            withdraw(system, lid)
        assert held_by(system, lid) == 0
        _lease_checks(system, lid)
        assert system.settlement.releases(lid).proven == proven_refunds.get(lid, 0)
    assert sum(usd.balanceOf(p) for p in parties) == total
    assert usd.balanceOf(m.address) == system.held()


def _release_checked(system, ver, lease_id: int, up_to: int, proven_refunds: dict[int, int]) -> None:
    """Release, and check each proven round's refund event against the round's own pay."""
    m = system.market
    before = system.settlement.releases(lease_id)
    lease = m.leases(lease_id)
    start = max(before.next_round, ver.first_round(lease.order_id))
    refunded: list = []
    cheated = ver.cheated(lease_id)
    released = release(system, lease_id, up_to, refunded)
    if cheated:   # a cheat proven for the lease: none of its pay is released any more
        assert released.amount == 0
    for ev in refunded:
        proven_refunds[lease_id] = proven_refunds.get(lease_id, 0) + ev.amount
        assert ev.forfeited == (not ver.proven(lease.order_id, ev.round_index, lease_id))
    refunded = [ev for ev in refunded if ev.round_index < up_to]   # (not the tail's)
    if up_to == start + 1 and refunded:  # one round walked: its interval is known
        (ev,) = refunded
        posted_at = ver.rounds(lease.order_id, ev.round_index).posted_at
        end = lease.closed_at or boa.env.timestamp
        start = max(before.until, lease.start)
        assert ev.amount == accrued(system, lease_id, min(posted_at, end)) - accrued(
            system, lease_id, start)
