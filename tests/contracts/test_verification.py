"""Verification: round roots, bonded challenges, validator votes, and every outcome's token
movements, on the real Market, ProviderRegistry, Validators and StakeToken (titanoboa).

A job is a Market order with two leases; each provider signs a real EIP-712 commitment per
round with its test key, the tenant posts the Merkle root built by `tessera.protocol.commitment`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import boa
import pytest
from boa.contracts.base_evm_contract import BoaError
from contracts_support import (
    BOND,
    CHALLENGER_BPS,
    CHECKPOINTS,
    CONTRACTS_DIR,
    EXPIRED,
    HOUR,
    JAIL,
    LATE_VALIDATOR,
    MIN_STAKE,
    OPEN,
    QUORUM_BPS,
    REJECTED,
    SLASH,
    TENANT_BPS,
    TSTK,
    UNBONDING_PERIOD,
    UPHELD,
    USD,
    VALIDATORS,
    VOTE_PERIOD,
    VOTER_REWARD,
    WINDOW,
    deploy_verification,
    deployer,
    events,
)
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.protocol import commitment as cm


@dataclass
class Env:
    system: object
    vals: object
    ver: object
    order_id: int
    leases: list[int]
    workers: list[LocalAccount]
    trees: dict = field(default_factory=dict)
    signed: dict = field(default_factory=dict)

    @property
    def tenant(self) -> LocalAccount:
        return self.system.tenant

    @property
    def stake(self):
        return self.system.stake

    def commitment(self, rnd: int, worker: int, **changes) -> cm.Commitment:
        fields = dict(job=self.order_id, round=rnd, lease_id=self.leases[worker],
                      provider=self.workers[worker].address,
                      result_hash=cm.hex32(keccak(b"result %d %d" % (rnd, worker))),
                      checkpoint_root=cm.hex32(keccak(b"checkpoints %d %d" % (rnd, worker))),
                      checkpoints=CHECKPOINTS, expiry=boa.env.timestamp + HOUR)
        fields.update(changes)
        return cm.Commitment(**fields)

    def sign(self, c: cm.Commitment, signer: LocalAccount | None = None) -> cm.SignedCommitment:
        account = signer or next(w for w in self.workers if w.address == c.provider)
        typed = cm.typed_data(self.system.chain_id, self.ver.address, c)
        sig = account.sign_typed_data(full_message=typed).signature
        return cm.SignedCommitment(commitment=c, signature="0x" + bytes(sig).hex())

    def post_round(self, rnd: int, signed: list[cm.SignedCommitment] | None = None):
        if signed is None:
            signed = [self.sign(self.commitment(rnd, w)) for w in range(len(self.workers))]
        leaves = [cm.leaf(self.system.chain_id, self.ver.address, s.commitment) for s in signed]
        tree = cm.round_tree(leaves)
        self.trees[rnd], self.signed[rnd] = tree, signed
        with boa.env.prank(self.tenant.address):
            self.ver.post_root(self.order_id, rnd, tree.root, tree.n_leaves)
        return tree

    def challenge(self, rnd: int, worker: int, challenger: str, *, bond: int = BOND,
                  segment: int = 3, signed: cm.SignedCommitment | None = None,
                  index: int | None = None, proof: list[bytes] | None = None,
                  root: bytes | None = None, n_leaves: int | None = None) -> int:
        signed = signed or self.signed[rnd][worker]
        tree = self.trees[rnd]
        index = worker if index is None else index
        proof = list(tree.proofs[index]) if proof is None else proof
        with boa.env.prank(challenger):
            return self.ver.open_challenge(signed.commitment.as_contract_tuple(),
                                           bytes.fromhex(signed.signature[2:]),
                                           tree.root if root is None else root,
                                           tree.n_leaves if n_leaves is None else n_leaves,
                                           index, proof, segment, keccak(b"replay report"), bond)

    def vote(self, challenge_id: int, who: LocalAccount, guilty: bool):
        with boa.env.prank(who.address):
            self.ver.vote(challenge_id, guilty)

    def resolve(self, challenge_id: int, caller: str | None = None):
        with boa.env.prank(caller or self.system.outsider.address):
            self.ver.resolve(challenge_id)
        (resolved,) = events(self.ver, "ChallengeResolved")
        return resolved

    def balances(self, *who: str) -> list[int]:
        return [self.stake.balanceOf(w) for w in who]


@pytest.fixture
def env(system, partials) -> Env:
    with boa.env.prank(deployer(0)):
        vals = partials["Validators"].deploy(system.stake.address, MIN_STAKE, UNBONDING_PERIOD)
    for who in [*VALIDATORS, LATE_VALIDATOR, system.tenant]:
        system.stake.mint(who.address, 1_000 * TSTK)
    for who in VALIDATORS:
        with boa.env.prank(who.address):
            system.stake.approve(vals.address, 2**256 - 1)
            vals.register(MIN_STAKE)
    ver = deploy_verification(system, partials, vals)
    system.registry.set_slasher(ver.address, True)
    for who in [*VALIDATORS, LATE_VALIDATOR, system.tenant]:
        with boa.env.prank(who.address):
            system.stake.approve(ver.address, 2**256 - 1)
    order_id = system.create_order(nodes=2, max_price=2 * USD)
    workers = system.providers[:2]
    leases = [system.accept(order_id, w, price=USD + i, nonce=7) for i, w in enumerate(workers)]
    return Env(system, vals, ver, order_id, leases, workers)


def ended(seconds: int) -> None:
    boa.env.time_travel(seconds=seconds)


def next_block() -> None:
    """Start a new block at the same time: stake changed so far is final (weights are read at
    the block before a challenge opens)."""
    boa.env.evm.patch.block_number += 1


def quorum_of(eligible: int) -> int:
    return (eligible * QUORUM_BPS + 9_999) // 10_000


# ---------------------------------------------------------------- encoding and deploy


def test_leaf_is_the_contract_digest_and_signature_recovers(env):
    c = env.commitment(0, 1)
    digest = env.ver.commitment_digest(c.as_contract_tuple())
    assert digest == cm.leaf(env.system.chain_id, env.ver.address, c)
    signed = cm.sign(env.workers[1], env.system.chain_id, env.ver.address, c)
    assert cm.signer(env.system.chain_id, env.ver.address, signed) == env.workers[1].address
    assert env.ver.COMMITMENT_TYPEHASH() == keccak(
        b"Commitment(uint256 job,uint256 round,uint256 leaseId,address provider,bytes32 resultHash,"
        b"bytes32 checkpointRoot,uint256 checkpoints,uint256 expiry)")
    with pytest.raises(ValueError, match="signer is"):
        cm.sign(env.workers[0], env.system.chain_id, env.ver.address, c)
    # the domain names this chain and this contract: another contract gives another leaf
    assert cm.leaf(env.system.chain_id, env.system.market.address, c) != digest
    assert cm.leaf(env.system.chain_id + 1, env.ver.address, c) != digest


def test_constructor_refusals(system, partials, env):
    zero = "0x" + "00" * 20
    cases = [
        ({"market_": zero}, "verification: zero address"),
        ({"challenge_window_": 0}, "verification: zero period"),
        ({"vote_period_": 0}, "verification: zero period"),
        ({"vote_period_": 15 * 86_400 + 1}, "verification: vote period above 15 days"),
        ({"min_bond_": 0}, "verification: zero bond"),
        ({"voter_reward_": BOND + 1}, "verification: voter reward above the bond"),
        ({"slash_amount_": 0}, "verification: zero slash"),
        ({"challenger_bps_": 6_000, "tenant_bps_": 4_001}, "verification: shares above 100%"),
        ({"quorum_bps_": 5_000}, "verification: quorum must be a majority"),
        ({"quorum_bps_": 10_001}, "verification: quorum must be a majority"),
    ]
    for overrides, reason in cases:
        with boa.reverts(reason):
            deploy_verification(system, partials, env.vals, by=1, **overrides)
    with boa.env.prank(deployer(2)):
        other_token = boa.load_partial(str(CONTRACTS_DIR / "StakeToken.vy")).deploy("X", "X", 18, "X", "1")
        other_vals = partials["Validators"].deploy(other_token.address, MIN_STAKE, UNBONDING_PERIOD)
    with boa.reverts("verification: stake tokens differ"):
        deploy_verification(system, partials, other_vals, by=2)


def test_merkle_mirror_agrees_for_many_workers(env):
    """Round trees of 1..6 leaves with the real commitment at every position: the contract's
    Merkle check accepts exactly the right index with its proof (filler leaves stand for other
    workers)."""
    rnd = 0
    for n in range(1, 7):
        for position in range(n):
            signed = env.sign(env.commitment(rnd, 0))
            real = cm.leaf(env.system.chain_id, env.ver.address, signed.commitment)
            leaves = [keccak(b"filler %d %d" % (rnd, i)) for i in range(n)]
            leaves[position] = real
            tree = cm.round_tree(leaves)
            with boa.env.prank(env.tenant.address):
                env.ver.post_root(env.order_id, rnd, tree.root, n)
            env.trees[rnd], env.signed[rnd] = tree, [signed]
            challenger = VALIDATORS[rnd % len(VALIDATORS)].address
            for wrong in {position - 1, position + 1} & set(range(n)):
                with boa.reverts("verification: commitment not in the round root"):
                    env.challenge(rnd, 0, challenger, index=wrong, proof=list(tree.proofs[position]))
            env.challenge(rnd, 0, challenger, index=position)
            assert tree.index_of(real) == position
            rnd += 1
    with pytest.raises(ValueError, match="twice"):
        cm.round_tree([real, real])


# ---------------------------------------------------------------- posting roots


def test_post_root_records_and_logs(env):
    tree = env.post_round(0)
    (ev,) = events(env.ver, "RootPosted")
    assert (ev.job, ev.round_index, ev.root, ev.n_leaves, ev.coordinator) == \
        (env.order_id, 0, tree.root, 2, env.tenant.address)
    r = env.ver.rounds(env.order_id, 0)
    assert (r.tree, r.posted_at, r.open_challenges) == (tree.tree_hash, boa.env.timestamp, 0)
    assert tree.tree_hash == keccak(tree.root + (2).to_bytes(32, "big"))
    assert env.ver.rounds_posted(env.order_id) == 1
    assert env.ver.job_tenant(env.order_id) == env.tenant.address
    env.post_round(1)
    assert env.ver.rounds_posted(env.order_id) == 2


def test_post_root_refusals(env):
    root = keccak(b"root")
    for stranger in (env.system.tenant2.address, env.workers[0].address):
        with boa.env.prank(stranger), boa.reverts("verification: caller is not the job's tenant"):
            env.ver.post_root(env.order_id, 0, root, 2)
    with boa.env.prank(env.tenant.address):
        with boa.reverts("verification: unknown job"):
            env.ver.post_root(999, 0, root, 2)
        with boa.reverts("verification: empty root"):
            env.ver.post_root(env.order_id, 0, b"\x00" * 32, 2)
        with boa.reverts("verification: bad leaf count"):
            env.ver.post_root(env.order_id, 0, root, 0)
        env.ver.post_root(env.order_id, 0, root, 2)
        with boa.reverts("verification: round already posted or skipped"):
            env.ver.post_root(env.order_id, 0, keccak(b"other root"), 2)
        # a round may be skipped (a replacement's order starts where it joins); never posted later
        env.ver.post_root(env.order_id, 2, root, 2)
        assert env.ver.rounds_posted(env.order_id) == 3
        assert env.ver.rounds(env.order_id, 1).posted_at == 0
        assert not env.ver.round_finalized(env.order_id, 1)
        with boa.reverts("verification: round already posted or skipped"):
            env.ver.post_root(env.order_id, 1, root, 2)
    assert env.ver.rounds(env.order_id, 0).tree == keccak(root + (2).to_bytes(32, "big"))  # first stands
    # a refused post changed nothing: the job's tenant is still unknown for order 999
    assert env.ver.job_tenant(999) == "0x" + "00" * 20


# ---------------------------------------------------------------- opening challenges


def test_open_challenge_records_pulls_bond_and_logs(env):
    env.post_round(0)
    v0 = VALIDATORS[0].address
    before = env.stake.balanceOf(v0)
    cid = env.challenge(0, 1, v0, bond=BOND + 3)
    (ev,) = events(env.ver, "ChallengeOpened")
    assert cid == 1 and env.ver.next_challenge_id() == 2
    # 5 validators of 100 TSTK, the challenger's stake cannot vote: a quorum of 2/3 of 400 TSTK
    assert (ev.challenge_id, ev.job, ev.round_index, ev.lease_id, ev.provider, ev.challenger,
            ev.segment, ev.bond, ev.quorum) == \
        (1, env.order_id, 0, env.leases[1], env.workers[1].address, v0, 3, BOND + 3,
         quorum_of(4 * MIN_STAKE))
    assert env.stake.balanceOf(v0) == before - BOND - 3
    assert env.stake.balanceOf(env.ver.address) == BOND + 3
    ch = env.ver.challenges(cid)
    assert (ch.status, ch.quorum, ch.snapshot, ch.deadline, ch.tenant) == \
        (OPEN, quorum_of(4 * MIN_STAKE), boa.env.evm.patch.block_number - 1,
         boa.env.timestamp + VOTE_PERIOD, env.tenant.address)
    # the provider's stake is locked until the verdict can be carried out
    assert env.system.registry.locked_until(env.workers[1].address) == \
        boa.env.timestamp + 2 * VOTE_PERIOD
    assert env.ver.rounds(env.order_id, 0).open_challenges == 1
    assert env.ver.open_challenge_of(env.order_id, 0, env.leases[1]) == cid
    assert env.ver.verdict(cid) == OPEN


def test_tenant_may_challenge_and_quorum_counts_all_validators(env):
    env.post_round(0)
    cid = env.challenge(0, 0, env.tenant.address)
    assert env.ver.challenges(cid).quorum == quorum_of(5 * MIN_STAKE)  # 3 votes would not do
    for v in VALIDATORS[:3]:
        env.vote(cid, v, True)
    assert env.ver.verdict(cid) == OPEN
    env.vote(cid, VALIDATORS[3], True)
    assert env.ver.verdict(cid) == UPHELD


def test_open_challenge_refusals(env):
    v0 = VALIDATORS[0].address
    with boa.reverts("verification: no root for this round"):
        env.ver.open_challenge(env.commitment(0, 0).as_contract_tuple(), b"\x00" * 65,
                               b"\x00" * 32, 1, 0, [], 0, b"\x00" * 32, BOND)
    env.post_round(0)
    with boa.reverts("verification: bond too small"):
        env.challenge(0, 0, v0, bond=BOND - 1)
    for outsider in (env.system.outsider.address, env.system.tenant2.address, LATE_VALIDATOR.address):
        with boa.reverts("verification: caller is not a validator or the tenant"):
            env.challenge(0, 0, outsider)
    # bad Merkle proofs: the other leaf's index, a tampered sibling, an extra sibling
    with boa.reverts("verification: commitment not in the round root"):
        env.challenge(0, 0, v0, index=1, proof=list(env.trees[0].proofs[0]))
    with boa.reverts("verification: commitment not in the round root"):
        env.challenge(0, 0, v0, proof=[keccak(b"not a sibling")])
    with boa.reverts("verification: commitment not in the round root"):
        env.challenge(0, 0, v0, proof=[*env.trees[0].proofs[0], keccak(b"extra")])
    with boa.reverts("verification: commitment not in the round root"):
        env.challenge(0, 0, v0, index=2, proof=list(env.trees[0].proofs[0]))  # past the leaf count
    # the posted root and size only: another size (or root) is refused before any proof is read
    with boa.reverts("verification: not the posted round root"):
        env.challenge(0, 0, v0, n_leaves=3)
    with boa.reverts("verification: not the posted round root"):
        env.challenge(0, 0, v0, root=keccak(b"another root"))
    # a signed commitment that was never in the root (valid signature, other result hash)
    forged = env.sign(env.commitment(0, 0, result_hash=cm.hex32(keccak(b"other"))))
    with boa.reverts("verification: commitment not in the round root"):
        env.challenge(0, 0, v0, signed=forged)
    # signatures: by someone else, malformed, high-s
    real = env.signed[0][0]
    by_other = env.sign(real.commitment, signer=env.workers[1])
    with boa.reverts("verification: bad commitment signature"):
        env.challenge(0, 0, v0, signed=by_other)
    sig = bytes.fromhex(real.signature[2:])
    bad_v = sig[:64] + bytes([sig[64] ^ 0x1F])
    high_s = sig[:32] + (2**256 - 1).to_bytes(32, "big") + sig[64:]
    for bad in (bad_v, high_s):
        mangled = cm.SignedCommitment(commitment=real.commitment, signature="0x" + bad.hex())
        with boa.reverts("verification: bad commitment signature"):
            env.challenge(0, 0, v0, signed=mangled)
    with boa.reverts("verification: no such segment"):
        env.challenge(0, 0, v0, segment=CHECKPOINTS - 1)
    provider = env.workers[0]
    with boa.reverts("verification: caller is not a validator or the tenant"):
        env.challenge(0, 0, provider.address)
    env.stake.mint(provider.address, MIN_STAKE)  # a provider that is also a validator
    with boa.env.prank(provider.address):
        env.stake.approve(env.vals.address, MIN_STAKE)
        env.vals.register(MIN_STAKE)
        env.stake.approve(env.ver.address, BOND)
    with boa.reverts("verification: a provider cannot challenge itself"):
        env.challenge(0, 0, provider.address)
    ended(WINDOW)
    with boa.reverts("verification: challenge window closed"):
        env.challenge(0, 0, v0)
    assert env.stake.balanceOf(env.ver.address) == 0 and env.ver.next_challenge_id() == 1


def test_commitment_must_match_its_lease_and_expiry(env, system):
    v0 = VALIDATORS[0].address
    other_order = system.create_order(nodes=1, max_price=2 * USD)
    other_lease = system.accept(other_order, env.workers[0], price=USD, nonce=8)
    wrong_lease = env.sign(env.commitment(0, 0, lease_id=other_lease))        # lease of another job
    wrong_provider = env.sign(env.commitment(0, 0, lease_id=env.leases[1]))   # lease of the other worker
    expired = env.sign(env.commitment(0, 1, expiry=boa.env.timestamp - 1))   # expired before posting
    env.post_round(0, [wrong_lease, wrong_provider, expired])
    with boa.reverts("verification: lease is not the provider's in this job"):
        env.challenge(0, 0, v0, signed=wrong_lease, index=0)
    with boa.reverts("verification: lease is not the provider's in this job"):
        env.challenge(0, 1, v0, signed=wrong_provider, index=1)
    with boa.reverts("verification: commitment expired before the root was posted"):
        env.challenge(0, 2, v0, signed=expired, index=2)


def test_one_open_challenge_per_lease_and_round(env):
    env.post_round(0)
    cid = env.challenge(0, 0, VALIDATORS[0].address)
    with boa.reverts("verification: a challenge is already open for this lease and round"):
        env.challenge(0, 0, VALIDATORS[1].address)
    env.challenge(0, 1, VALIDATORS[1].address)  # the other worker is fine
    ended(VOTE_PERIOD)
    env.resolve(cid)  # expired: the lease may be challenged again within the window
    env.post_round(1)
    assert env.ver.rounds(env.order_id, 0).open_challenges == 1


def test_unbonded_validators_leave_the_quorum(env):
    """Two validators unbond below the minimum: their stake no longer weighs, so the quorum is
    2/3 of the 300 TSTK left and the 3 active validators decide (no list to pass any more)."""
    for v in VALIDATORS[3:]:
        with boa.env.prank(v.address):
            env.vals.request_unbond(1)
    next_block()
    env.post_round(0)
    cid = env.challenge(0, 1, env.tenant.address)
    assert env.ver.challenges(cid).quorum == quorum_of(3 * MIN_STAKE)
    with boa.reverts("verification: caller is not a validator"):
        env.vote(cid, VALIDATORS[3], True)
    for v in VALIDATORS[:3]:
        env.vote(cid, v, True)
    assert env.ver.verdict(cid) == UPHELD


def test_too_few_validators_refused(system, partials, env):
    with boa.env.prank(deployer(3)):
        vals = partials["Validators"].deploy(system.stake.address, MIN_STAKE, UNBONDING_PERIOD)
    with boa.env.prank(VALIDATORS[0].address):
        system.stake.approve(vals.address, 2**256 - 1)
        vals.register(MIN_STAKE)
    ver = deploy_verification(system, partials, vals, by=3)
    lone = Env(system, vals, ver, env.order_id, env.leases, env.workers)
    lone.post_round(0)
    # the only validator challenges: no stake is left to vote
    with boa.env.prank(VALIDATORS[0].address):
        system.stake.approve(ver.address, 2**256 - 1)
    with boa.reverts("verification: too few validators to reach a quorum"):
        lone.challenge(0, 0, VALIDATORS[0].address)


# ---------------------------------------------------------------- answering and voting


def test_answer_rules(env):
    env.post_round(0)
    cid = env.challenge(0, 1, VALIDATORS[0].address)
    opening = keccak(b"opening")
    not_provider = "verification: caller is not the challenged provider"
    with boa.env.prank(env.workers[0].address), boa.reverts(not_provider):
        env.ver.answer(cid, opening)
    with boa.env.prank(env.workers[1].address):
        with boa.reverts("verification: empty answer"):
            env.ver.answer(cid, b"\x00" * 32)
        env.ver.answer(cid, opening)
        (ev,) = events(env.ver, "ChallengeAnswered")
        assert (ev.challenge_id, ev.provider, ev.opening_hash) == (cid, env.workers[1].address, opening)
        with boa.reverts("verification: already answered"):
            env.ver.answer(cid, keccak(b"second"))
    assert env.ver.challenges(cid).answer == opening
    cid2 = env.challenge(0, 0, VALIDATORS[0].address)
    ended(VOTE_PERIOD)
    with boa.env.prank(env.workers[0].address), boa.reverts("verification: voting closed"):
        env.ver.answer(cid2, opening)
    with boa.env.prank(env.workers[0].address), boa.reverts("verification: unknown challenge"):
        env.ver.answer(99, opening)


def test_vote_refusals(env, system):
    env.post_round(0)
    challenger, provider = VALIDATORS[0], env.workers[1]
    cid = env.challenge(0, 1, challenger.address)
    with boa.reverts("verification: unknown challenge"):
        env.vote(99, VALIDATORS[1], True)
    with boa.reverts("verification: caller is not a validator"):
        env.vote(cid, system.outsider, True)
    # a validator who registers after the challenge opened cannot vote on it
    with boa.env.prank(LATE_VALIDATOR.address):
        env.stake.approve(env.vals.address, 2**256 - 1)
        env.vals.register(MIN_STAKE)
    with boa.reverts("verification: validator joined after the challenge opened"):
        env.vote(cid, LATE_VALIDATOR, True)
    with boa.reverts("verification: a party cannot vote"):
        env.vote(cid, challenger, True)
    env.vote(cid, VALIDATORS[1], True)
    with boa.reverts("verification: already voted"):
        env.vote(cid, VALIDATORS[1], False)
    (ev,) = events(env.ver, "Voted") or [None]
    assert env.ver.votes(cid, VALIDATORS[1].address) == 1
    assert env.ver.challenges(cid).guilty_votes == 1
    # a validator that unbonds below the minimum is no longer one
    with boa.env.prank(VALIDATORS[2].address):
        env.vals.request_unbond(1)
    with boa.reverts("verification: caller is not a validator"):
        env.vote(cid, VALIDATORS[2], True)
    ended(VOTE_PERIOD)
    with boa.reverts("verification: voting closed"):
        env.vote(cid, VALIDATORS[3], True)
    assert provider.address not in [v.address for v in VALIDATORS]


def test_parties_that_are_validators_cannot_vote(env, system):
    """The tenant and the provider are validators too: they are excluded and the quorum shrinks."""
    for who in (env.tenant, env.workers[0]):
        system.stake.mint(who.address, 1_000 * TSTK)
        with boa.env.prank(who.address):
            env.stake.approve(env.vals.address, 2**256 - 1)
            env.vals.register(MIN_STAKE)
    next_block()
    env.post_round(0)
    cid = env.challenge(0, 0, VALIDATORS[0].address)
    ch = env.ver.challenges(cid)
    assert ch.quorum == quorum_of(4 * MIN_STAKE)  # 7 staked, the 3 parties' stake left out
    with boa.reverts("verification: a party cannot vote"):
        env.vote(cid, env.tenant, False)
    with boa.reverts("verification: a party cannot vote"):
        env.vote(cid, env.workers[0], False)


def test_no_votes_after_a_verdict_and_resolve_rules(env):
    env.post_round(0)
    cid = env.challenge(0, 1, VALIDATORS[0].address)
    with boa.reverts("verification: not decided yet"):
        env.resolve(cid)
    for v in VALIDATORS[1:4]:
        env.vote(cid, v, True)
    assert env.ver.verdict(cid) == UPHELD
    with boa.reverts("verification: already decided"):
        env.vote(cid, VALIDATORS[4], False)
    env.resolve(cid)
    with boa.reverts("verification: challenge already resolved"):
        env.resolve(cid)
    with boa.reverts("verification: challenge already resolved"):
        env.vote(cid, VALIDATORS[4], False)
    with boa.reverts("verification: unknown challenge"):
        env.resolve(99)
    assert env.ver.verdict(cid) == UPHELD and env.ver.verdict(99) == 0


# ---------------------------------------------------------------- outcomes


def test_upheld_slashes_jails_and_splits(env, system):
    env.post_round(0)
    v0, provider = VALIDATORS[0].address, env.workers[1].address
    cid = env.challenge(0, 1, v0)
    supply = env.stake.totalSupply()
    stake_before = system.registry.providers(provider).stake
    v0_before, tenant_before = env.balances(v0, env.tenant.address)
    env.vote(cid, VALIDATORS[1], True)
    env.vote(cid, VALIDATORS[2], False)  # a dissenting vote: no reward, no penalty
    env.vote(cid, VALIDATORS[3], True)
    env.vote(cid, VALIDATORS[4], True)
    ev = env.resolve(cid, caller=env.system.outsider.address)  # anyone may carry it out

    per_voter = VOTER_REWARD // 3  # three winners of equal stake share the pool
    rest = SLASH - VOTER_REWARD
    to_challenger, to_tenant = rest * CHALLENGER_BPS // 10_000, rest * TENANT_BPS // 10_000
    burned = rest - to_challenger - to_tenant
    assert (ev.outcome, ev.slashed, ev.to_voters, ev.to_challenger, ev.to_tenant, ev.burned,
            ev.bond_returned, ev.bond_to_provider) == \
        (UPHELD, SLASH, VOTER_REWARD, to_challenger, to_tenant, burned, BOND, 0)
    assert ev.slashed == ev.to_challenger + ev.to_tenant + ev.to_voters + ev.burned
    assert system.registry.providers(provider).stake == stake_before - SLASH
    assert system.registry.providers(provider).jailed_until == boa.env.timestamp + JAIL
    assert not system.registry.is_active(provider)
    assert env.balances(v0, env.tenant.address) == [v0_before + BOND + to_challenger,
                                                   tenant_before + to_tenant]
    assert env.stake.totalSupply() == supply - burned
    assert env.ver.proven(env.order_id, 0, env.leases[1])
    assert env.ver.challenges(cid).status == UPHELD
    assert env.ver.open_challenge_of(env.order_id, 0, env.leases[1]) == 0
    assert env.stake.balanceOf(env.ver.address) == VOTER_REWARD  # the voters' unclaimed rewards

    # voters pull their rewards once; the dissenter and outsiders get nothing
    for v in (VALIDATORS[1], VALIDATORS[3], VALIDATORS[4]):
        before = env.stake.balanceOf(v.address)
        with boa.env.prank(v.address):
            env.ver.claim_reward(cid)
            with boa.reverts("verification: reward already claimed"):
                env.ver.claim_reward(cid)
        assert env.stake.balanceOf(v.address) == before + per_voter
    for who in (VALIDATORS[2].address, v0, system.outsider.address):
        with boa.env.prank(who), boa.reverts("verification: no reward for this caller"):
            env.ver.claim_reward(cid)
    assert env.stake.balanceOf(env.ver.address) == 0

    # the same lease and round cannot be slashed twice
    with boa.reverts("verification: cheat already proven for this lease and round"):
        env.challenge(0, 1, VALIDATORS[1].address)


def test_rejected_pays_the_bond_to_provider_and_voters(env, system):
    env.post_round(0)
    v0, provider = VALIDATORS[0].address, env.workers[1].address
    cid = env.challenge(0, 1, v0, bond=BOND + 5)
    stake_before = system.registry.providers(provider).stake
    provider_before, v0_before = env.balances(provider, v0)
    supply = env.stake.totalSupply()
    with boa.env.prank(VALIDATORS[1].address), boa.reverts("verification: challenge not decided"):
        env.ver.claim_reward(cid)
    for v in VALIDATORS[1:4]:
        env.vote(cid, v, False)
    ev = env.resolve(cid)
    per_voter = VOTER_REWARD // 3
    assert (ev.outcome, ev.slashed, ev.to_voters, ev.bond_to_provider, ev.bond_returned, ev.burned) == \
        (REJECTED, 0, VOTER_REWARD, BOND + 5 - VOTER_REWARD, 0, 0)
    assert env.balances(provider, v0) == [provider_before + BOND + 5 - VOTER_REWARD, v0_before]
    assert system.registry.providers(provider).stake == stake_before
    assert system.registry.is_active(provider)
    assert env.stake.totalSupply() == supply
    assert not env.ver.proven(env.order_id, 0, env.leases[1])
    with boa.env.prank(VALIDATORS[2].address):
        env.ver.claim_reward(cid)
    (claimed,) = events(env.ver, "RewardClaimed")
    assert (claimed.voter, claimed.amount) == (VALIDATORS[2].address, per_voter)


def test_no_quorum_returns_the_bond(env, system):
    env.post_round(0)
    v0, provider = VALIDATORS[0].address, env.workers[0].address
    cid = env.challenge(0, 0, v0)
    v0_before = env.stake.balanceOf(v0)
    stake_before = system.registry.providers(provider).stake
    env.vote(cid, VALIDATORS[1], True)
    env.vote(cid, VALIDATORS[2], True)
    env.vote(cid, VALIDATORS[3], False)
    ended(VOTE_PERIOD - 1)
    with boa.reverts("verification: not decided yet"):
        env.resolve(cid)
    ended(1)
    assert env.ver.verdict(cid) == EXPIRED
    ev = env.resolve(cid)
    assert (ev.outcome, ev.slashed, ev.bond_returned, ev.to_voters) == (EXPIRED, 0, BOND, 0)
    assert env.stake.balanceOf(v0) == v0_before + BOND
    assert system.registry.providers(provider).stake == stake_before
    assert env.stake.balanceOf(env.ver.address) == 0
    for v in VALIDATORS[1:4]:
        with boa.env.prank(v.address), boa.reverts("verification: challenge not decided"):
            env.ver.claim_reward(cid)


def test_tenant_challenge_upheld_gets_both_shares(env, system):
    env.post_round(0)
    tenant = env.tenant.address
    cid = env.challenge(0, 0, tenant)
    before = env.stake.balanceOf(tenant)
    for v in VALIDATORS[:4]:
        env.vote(cid, v, True)
    ev = env.resolve(cid)
    assert ev.outcome == UPHELD
    assert env.stake.balanceOf(tenant) == before + BOND + ev.to_challenger + ev.to_tenant


def test_slash_is_capped_at_what_the_provider_has(env, system):
    """A provider already slashed down to 30 TSTK: the voters' reward comes first, the rest is split."""
    provider = env.workers[0].address
    with boa.env.prank(system.slasher):
        system.registry.slash(provider, MIN_STAKE - 30 * TSTK, system.slasher)
    env.post_round(0)
    cid = env.challenge(0, 0, VALIDATORS[0].address)
    for v in VALIDATORS[1:4]:
        env.vote(cid, v, True)
    ev = env.resolve(cid)
    assert ev.slashed == 30 * TSTK
    assert ev.slashed == ev.to_challenger + ev.to_tenant + ev.to_voters + ev.burned
    assert system.registry.providers(provider).stake == 0


def test_round_finalized(env):
    env.post_round(0)
    assert not env.ver.round_finalized(env.order_id, 0)
    assert not env.ver.round_finalized(env.order_id, 1)  # never posted
    ended(WINDOW - 10)
    cid = env.challenge(0, 0, VALIDATORS[0].address)  # opened late in the window
    ended(10)
    assert not env.ver.round_finalized(env.order_id, 0)  # window closed, challenge still open
    for v in VALIDATORS[1:4]:
        env.vote(cid, v, False)
    assert not env.ver.round_finalized(env.order_id, 0)  # decided but not yet resolved
    env.resolve(cid)
    assert env.ver.round_finalized(env.order_id, 0)
    env.post_round(1)
    assert not env.ver.round_finalized(env.order_id, 1)
    ended(WINDOW - 1)
    assert not env.ver.round_finalized(env.order_id, 1)
    ended(1)
    assert env.ver.round_finalized(env.order_id, 1)


# ---------------------------------------------------------------- property: conservation

challenge_op = st.tuples(st.just("challenge"), st.integers(0, 2), st.integers(0, 1),
                         st.integers(0, 5), st.integers(0, 3 * TSTK))
# `count` validators from `start` on vote the same way (the refused ones are skipped)
votes_op = st.tuples(st.just("votes"), st.integers(0, 3), st.booleans(), st.integers(0, 4),
                     st.integers(1, 5))
op = st.one_of(
    challenge_op,
    votes_op,
    votes_op,
    st.tuples(st.just("time"), st.sampled_from([60, WINDOW // 2, VOTE_PERIOD])),
    st.tuples(st.just("resolve"), st.integers(0, 3)),
    st.tuples(st.just("claim"), st.integers(0, 3), st.integers(0, 4)),
    st.tuples(st.just("claim"), st.integers(0, 3), st.integers(0, 4)),
)
ops = st.builds(lambda first, rest: [first, *rest], challenge_op, st.lists(op, min_size=10, max_size=30))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(steps=ops)
def test_stake_and_bonds_are_conserved(env, system, steps):
    """For any sequence of challenges (by validators or the tenant, either worker, rounds 0-2),
    votes, time, resolutions and claims: every stake-token unit is somewhere we can name,
    the supply shrinks by exactly what was burned, each slash splits exactly into its four
    parts, the contract holds exactly the open bonds plus unclaimed rewards, and a provider is
    slashed only on a guilty quorum."""
    with boa.env.anchor():
        _run_conservation(env, system, steps)


def _run_conservation(env, system, steps):
    stake, ver, registry = env.stake, env.ver, system.registry
    holders = ([v.address for v in VALIDATORS] + [w.address for w in env.workers]
               + [env.tenant.address, ver.address, registry.address, env.vals.address])
    challengers = [v.address for v in VALIDATORS] + [env.tenant.address]
    for rnd in range(3):
        env.post_round(rnd)
    supply0 = stake.totalSupply()
    others0 = supply0 - sum(stake.balanceOf(h) for h in holders)  # minted to other accounts
    stakes0 = {w.address: registry.providers(w.address).stake for w in env.workers}
    model_bonds: dict[int, int] = {}   # open challenge -> bond
    model_rewards: dict[int, list] = {}  # challenge -> [left to claim, unclaimed voters]
    guilty_voters: dict[int, set[str]] = {}
    innocent_voters: dict[int, set[str]] = {}
    burned = slashed = 0
    ids: list[int] = []

    for step in steps:
        kind = step[0]
        try:
            if kind == "challenge":
                _, rnd, worker, who, extra = step
                cid = env.challenge(rnd, worker, challengers[who], bond=BOND + extra)
                ids.append(cid)
                model_bonds[cid] = BOND + extra
                guilty_voters[cid], innocent_voters[cid] = set(), set()
            elif kind == "votes" and ids:
                _, pick, guilty, start, count = step
                cid = ids[-1 - pick % len(ids)]
                for validator in (VALIDATORS * 2)[start:start + count]:
                    try:
                        env.vote(cid, validator, guilty)
                    except BoaError:
                        continue  # a party, a second vote, decided or closed: refused
                    (guilty_voters if guilty else innocent_voters)[cid].add(validator.address)
            elif kind == "time":
                ended(step[1])
            elif kind == "resolve" and ids:
                cid = ids[-1 - step[1] % len(ids)]
                provider = ver.challenges(cid).provider
                before = registry.providers(provider).stake
                ev = env.resolve(cid)
                ch = ver.challenges(cid)
                assert before - registry.providers(provider).stake == ev.slashed
                if ev.slashed:
                    assert ev.outcome == UPHELD
                if ev.outcome == UPHELD:
                    assert ev.slashed == ev.to_challenger + ev.to_tenant + ev.to_voters + ev.burned
                    assert ev.bond_returned == model_bonds[cid]
                    assert ch.guilty_stake >= ch.quorum
                    model_rewards[cid] = [ev.to_voters, set(guilty_voters[cid])]
                elif ev.outcome == REJECTED:
                    assert ev.bond_to_provider + ev.to_voters == model_bonds[cid]
                    assert ch.innocent_stake >= ch.quorum
                    model_rewards[cid] = [ev.to_voters, set(innocent_voters[cid])]
                else:
                    assert ev.bond_returned == model_bonds[cid] and ev.to_voters == 0
                del model_bonds[cid]
                burned += ev.burned
                slashed += ev.slashed
            elif kind == "claim" and ids:
                _, pick, voter = step
                cid = ids[-1 - pick % len(ids)]
                with boa.env.prank(VALIDATORS[voter].address):
                    ver.claim_reward(cid)
                (claimed,) = events(ver, "RewardClaimed")
                ch = ver.challenges(cid)
                winning = ch.guilty_stake if ch.status == UPHELD else ch.innocent_stake
                assert claimed.amount == ch.voter_pool * ver.vote_weight(
                    cid, VALIDATORS[voter].address) // winning
                model_rewards[cid][1].remove(VALIDATORS[voter].address)
                model_rewards[cid][0] -= claimed.amount
        except BoaError:
            pass  # a refused step must change nothing: the checks below see to that
        assert stake.totalSupply() == supply0 - burned
        assert sum(stake.balanceOf(h) for h in holders) + others0 == supply0 - burned
        assert stake.balanceOf(ver.address) == sum(model_bonds.values()) + sum(
            left for left, _ in model_rewards.values())
        assert sum(stakes0[a] - registry.providers(a).stake for a in stakes0) == slashed
