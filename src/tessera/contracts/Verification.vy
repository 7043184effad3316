# pragma version ~=0.4.3
"""
@title Tessera verification: round commitments, bonded challenges, validator votes, slashing
@license GNU Affero General Public License v3.0 or later
@notice A job is a Market order. For each training round the order's tenant (the job's
        coordinator) posts ONE Merkle root over the workers' signed commitments. Within
        `challenge_window` seconds after that, a staked validator or the tenant may challenge
        one commitment: it opens the leaf (the provider's EIP-712 signature plus the Merkle
        proof that the leaf is under the round root) and posts a bond in the stake token.
        The provider may answer (the hash of its opening); its stake in the registry is
        locked until the verdict can be carried out (`registry.lock`). Validators vote, one
        transaction each, until `vote_period` has passed; a vote weighs the voter's stake at
        the block before the challenge opened (Validators.stake_at; stake added later does not
        count, so validators registered later cannot vote), and a verdict needs `quorum`: a
        `quorum_bps` share (a majority, so two verdicts can never both reach it) of the total
        validator stake at that block, less the parties' own. A voter's stake is locked
        (Validators.lock) until the verdict can be carried out. Anyone then resolves:
          guilty   -> the provider is slashed `slash_amount` through the ProviderRegistry and
                      jailed; the slash pays the winning voters' reward (shared by stake), then `challenger_bps`
                      to the challenger, `tenant_bps` to the tenant, and the rest is burned
                      (StakeToken.burn: the supply shrinks); the challenger gets its bond back.
          innocent -> the winning voters' reward comes out of the bond, the rest of the bond
                      goes to the provider; nobody is slashed.
          no quorum by the deadline -> the bond goes back to the challenger; nobody is slashed.
        Voters pull their reward with `claim_reward`. `round_finalized` tells a payer when a
        round's window has closed with no challenge open. See docs/verification.md.
@dev Token invariant (stake token): balanceOf(self) == sum(bond of open challenges)
        + sum over decided challenges of (voter_pool - claimed). Shares are rounded on the
        running total of claimed weight (each claim pays pool * (claimed + w) // W - pool *
        claimed // W), so the winning voters' shares add up to the pool exactly: no base unit
        of rounding is left without an owner.
"""

from ethereum.ercs import IERC20

from snekmate.utils import ecdsa

from snekmate.utils import eip712_domain_separator
initializes: eip712_domain_separator

exports: eip712_domain_separator.eip712Domain

from .interfaces import IProviderRegistry
from .interfaces import IStakeToken
from .interfaces import IValidators

from .interfaces import IVerification
implements: IVerification


# Same layout as Market.Order (the `orders` getter), and the first ten fields of Market.Lease
# (the `leases` getter returns a static tuple, so its prefix decodes).
struct MarketOrder:
    tenant: address
    spec_hash: bytes32
    gpu_model: String[64]
    min_gpus: uint32
    min_gpu_memory_mb: uint32
    max_price_per_gpu_hour: uint256
    duration: uint256
    nodes: uint32
    deposit: uint256
    allocated: uint256
    leases_made: uint32
    open: bool
    created_at: uint256


struct MarketLease:
    order_id: uint256
    tenant: address
    provider: address
    price_per_gpu_hour: uint256
    gpus: uint32
    start: uint256
    budget: uint256
    paid: uint256
    closed_at: uint256
    result_hash: bytes32


interface IMarket:
    def orders(order_id: uint256) -> MarketOrder: view
    def leases(lease_id: uint256) -> MarketLease: view


# What a worker signs for one round (EIP-712, domain "TesseraVerification" / "1"); its digest
# is the worker's leaf in the round's Merkle tree. (job, round, lease_id) is the nonce: a
# lease commits once per round. `expiry`: the commitment only counts in a root posted by then.
struct Commitment:
    job: uint256
    round_index: uint256
    lease_id: uint256
    provider: address
    result_hash: bytes32
    checkpoint_root: bytes32
    checkpoints: uint256
    expiry: uint256


struct Challenge:
    job: uint256
    round_index: uint256
    lease_id: uint256
    provider: address
    tenant: address
    challenger: address
    bond: uint256
    deadline: uint256
    snapshot: uint256           # the block whose stake weighs the votes (the one before opening)
    quorum: uint256             # stake weight a verdict needs
    guilty_votes: uint256       # voters (for display; verdicts count stake)
    innocent_votes: uint256
    guilty_stake: uint256
    innocent_stake: uint256
    status: uint8
    voter_pool: uint256         # the winning voters' reward, shared by stake
    answer: bytes32


event RootPosted:
    job: indexed(uint256)
    round_index: indexed(uint256)
    root: bytes32
    n_leaves: uint256
    coordinator: indexed(address)


event ChallengeOpened:
    challenge_id: indexed(uint256)
    job: indexed(uint256)
    round_index: uint256
    lease_id: indexed(uint256)
    provider: address
    challenger: address
    result_hash: bytes32
    checkpoint_root: bytes32
    checkpoints: uint256
    segment: uint256
    evidence: bytes32
    bond: uint256
    quorum: uint256
    deadline: uint256


event ChallengeAnswered:
    challenge_id: indexed(uint256)
    provider: indexed(address)
    opening_hash: bytes32


event Voted:
    challenge_id: indexed(uint256)
    validator: indexed(address)
    guilty: bool
    weight: uint256


event ChallengeResolved:
    challenge_id: indexed(uint256)
    outcome: uint8
    slashed: uint256
    to_challenger: uint256
    to_tenant: uint256
    to_voters: uint256
    burned: uint256
    bond_to_provider: uint256
    bond_returned: uint256


event RewardClaimed:
    challenge_id: indexed(uint256)
    voter: indexed(address)
    amount: uint256


COMMITMENT_TYPEHASH: public(constant(bytes32)) = keccak256(
    "Commitment(uint256 job,uint256 round,uint256 leaseId,address provider,bytes32 resultHash,bytes32 checkpointRoot,uint256 checkpoints,uint256 expiry)"
)
BPS: constant(uint256) = 10_000
MAX_PROOF: constant(uint256) = 32
# The most rounds a root may skip after the job's first root (post_root).
MAX_ROUND_GAP: public(constant(uint256)) = 8
# The highest round a job's first root may name.
MAX_FIRST_ROUND: public(constant(uint256)) = 2**64

# Challenge.status values (0 = no such challenge).
OPEN: public(constant(uint8)) = 1
UPHELD: public(constant(uint8)) = 2
REJECTED: public(constant(uint8)) = 3
EXPIRED: public(constant(uint8)) = 4

# votes[challenge][validator] values.
_GUILTY: constant(uint8) = 1
_INNOCENT: constant(uint8) = 2
_CLAIMED: constant(uint8) = 3

market: public(immutable(address))
registry: public(immutable(address))
validators: public(immutable(address))
stake_token: public(immutable(address))
challenge_window: public(immutable(uint256))
vote_period: public(immutable(uint256))
min_bond: public(immutable(uint256))
slash_amount: public(immutable(uint256))
challenger_bps: public(immutable(uint256))
tenant_bps: public(immutable(uint256))
voter_reward: public(immutable(uint256))
quorum_bps: public(immutable(uint256))
jail_period: public(immutable(uint256))

job_tenant: public(HashMap[uint256, address])
rounds_posted: public(HashMap[uint256, uint256])
# job -> the round of its first root (rounds below it belong to no root of this job)
first_round: public(HashMap[uint256, uint256])
rounds: public(HashMap[uint256, HashMap[uint256, IVerification.Round]])
challenges: public(HashMap[uint256, Challenge])
next_challenge_id: public(uint256)
# job -> round -> lease -> the open challenge's id (0 = none)
open_challenge_of: public(HashMap[uint256, HashMap[uint256, HashMap[uint256, uint256]]])
# job -> round -> lease -> a cheat was proven
proven: public(HashMap[uint256, HashMap[uint256, HashMap[uint256, bool]]])
# lease -> a cheat was proven for it in some round: Settlement sends every round of its pay not
# yet released back to the tenant, not only the proven one (docs/verification.md, "Economics")
cheated: public(HashMap[uint256, bool])
# challenge -> the winning weight whose reward was claimed so far (for exact rounding)
claimed_weight: public(HashMap[uint256, uint256])
votes: public(HashMap[uint256, HashMap[address, uint8]])
# challenge -> voter -> the stake its vote weighed
vote_weight: public(HashMap[uint256, HashMap[address, uint256]])


@deploy
def __init__(
    market_: address,
    registry_: address,
    validators_: address,
    challenge_window_: uint256,
    vote_period_: uint256,
    min_bond_: uint256,
    slash_amount_: uint256,
    challenger_bps_: uint256,
    tenant_bps_: uint256,
    voter_reward_: uint256,
    quorum_bps_: uint256,
    jail_period_: uint256,
):
    """
    @notice Bond, stake and rewards are in the registry's stake token, which must be the
            validators' too. Grant this contract the registry's and the Validators' slasher
            roles (it slashes and locks providers, and locks voters); the Market's
            Settlement is then deployed for this contract and the Market (`Market.set_settlement`). The EIP-712 domain
            of commitments is ("TesseraVerification", "1", chain id, this contract).
    @param market_ The Market whose orders are the jobs.
    @param registry_ The ProviderRegistry that slashes and jails.
    @param validators_ The Validators registry (who may challenge and vote).
    @param challenge_window_ Seconds after a root is posted during which it can be challenged.
    @param vote_period_ Seconds a challenge stays open for votes (at most 15 days: a voter's
           stake is locked for two vote periods).
    @param min_bond_ The least bond a challenger stakes (at least `voter_reward_`).
    @param slash_amount_ Stake slashed from a provider whose cheat is proven (more than zero).
    @param challenger_bps_ The challenger's share of the slash after voter rewards, in basis points.
    @param tenant_bps_ The tenant's share of the slash after voter rewards, in basis points.
    @param voter_reward_ The reward shared, by stake, by the voters who made the verdict.
    @param quorum_bps_ The quorum as a share of the eligible validator stake, in basis points (a majority).
    @param jail_period_ Seconds a provider whose cheat is proven is jailed for.
    """
    assert market_ != empty(address) and registry_ != empty(address) and validators_ != empty(address), "verification: zero address"
    assert challenge_window_ > 0 and vote_period_ > 0, "verification: zero period"
    # a voter is locked until deadline + vote_period: within Validators.MAX_LOCK (30 days)
    assert 2 * vote_period_ <= 30 * 86_400, "verification: vote period above 15 days"
    assert min_bond_ > 0, "verification: zero bond"
    assert voter_reward_ <= min_bond_, "verification: voter reward above the bond"
    assert slash_amount_ > 0, "verification: zero slash"
    assert challenger_bps_ + tenant_bps_ <= BPS, "verification: shares above 100%"
    assert quorum_bps_ > BPS // 2 and quorum_bps_ <= BPS, "verification: quorum must be a majority"
    token: address = staticcall IProviderRegistry(registry_).stake_token()
    assert token == staticcall IValidators(validators_).stake_token(), "verification: stake tokens differ"
    eip712_domain_separator.__init__("TesseraVerification", "1")
    market = market_
    registry = registry_
    validators = validators_
    stake_token = token
    challenge_window = challenge_window_
    vote_period = vote_period_
    min_bond = min_bond_
    slash_amount = slash_amount_
    challenger_bps = challenger_bps_
    tenant_bps = tenant_bps_
    voter_reward = voter_reward_
    quorum_bps = quorum_bps_
    jail_period = jail_period_
    self.next_challenge_id = 1


# ---------------------------------------------------------------- commitments and roots


@internal
@view
def _commitment_digest(c: Commitment) -> bytes32:
    struct_hash: bytes32 = keccak256(abi_encode(
        COMMITMENT_TYPEHASH, c.job, c.round_index, c.lease_id, c.provider, c.result_hash,
        c.checkpoint_root, c.checkpoints, c.expiry
    ))
    return eip712_domain_separator._hash_typed_data_v4(struct_hash)


@external
@view
def commitment_digest(c: Commitment) -> bytes32:
    """
    @notice The EIP-712 digest a worker signs for its round commitment; it is also the
            worker's leaf in the round's Merkle tree.
    @param c The commitment.
    @return bytes32 Its EIP-712 digest.
    """
    return self._commitment_digest(c)


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    """
    @notice The EIP-712 domain separator of commitments, for the current chain.
    @return bytes32 The domain separator.
    """
    return eip712_domain_separator._domain_separator_v4()


@internal
@pure
def _merkle_verify(root: bytes32, leaf: bytes32, index: uint256, proof: DynArray[bytes32, MAX_PROOF], n_leaves: uint256) -> bool:
    # The rule of tessera.protocol.merkle: H0(leaf) = keccak(0x00 ++ leaf),
    # H1(l, r) = keccak(0x01 ++ l ++ r), an odd level's last node is carried up unpaired.
    if index >= n_leaves:
        return False
    node: bytes32 = keccak256(concat(x"00", leaf))
    i: uint256 = index
    width: uint256 = n_leaves
    used: uint256 = 0
    for _level: uint256 in range(64):
        if width <= 1:
            break
        if i % 2 == 1:
            if used >= len(proof):
                return False
            node = keccak256(concat(x"01", proof[used], node))
            used += 1
        elif i + 1 < width:
            if used >= len(proof):
                return False
            node = keccak256(concat(x"01", node, proof[used]))
            used += 1
        i = i // 2
        width = (width + 1) // 2
    return used == len(proof) and node == root


@internal
@pure
def _tree_hash(root: bytes32, n_leaves: uint256) -> bytes32:
    return keccak256(abi_encode(root, n_leaves))


@external
def post_root(job: uint256, round_index: uint256, root: bytes32, n_leaves: uint256):
    """
    @notice The job's tenant posts the Merkle root over round `round_index`'s worker
            commitments (`n_leaves` of them). Rounds are posted in increasing order, once
            each. The first root may name any round (a replacement worker's one-node order
            starts at the round it joins): it becomes `first_round(job)`. After it, at most
            MAX_ROUND_GAP rounds may be skipped at once (a round whose root could not be
            posted), and a skipped round can never be posted. The bound keeps the rounds a
            payer walks (Settlement.release) proportional to the roots posted: a tenant
            cannot post round 0 and then round 2**255 to freeze its leases' pay.
    @param job The job (a Market order id); the first root binds its tenant here.
    @param round_index The round: any for the first root, then from `rounds_posted(job)` to
           `rounds_posted(job) + MAX_ROUND_GAP`.
    @param root The Merkle root of the round's commitments (not zero).
    @param n_leaves How many commitments are under `root` (1 .. 2**MAX_PROOF).
    """
    tenant: address = self.job_tenant[job]
    if tenant == empty(address):
        tenant = (staticcall IMarket(market).orders(job)).tenant
        assert tenant != empty(address), "verification: unknown job"
        self.job_tenant[job] = tenant
    assert msg.sender == tenant, "verification: caller is not the job's tenant"
    posted: uint256 = self.rounds_posted[job]
    if posted == 0:
        # Far from uint256's end, so that no round arithmetic (here, in Settlement) can overflow:
        # a first root at 2**256 - 2 would make every later release revert.
        assert round_index <= MAX_FIRST_ROUND, "verification: round index too large"
        self.first_round[job] = round_index
    else:
        assert round_index >= posted, "verification: round already posted or skipped"
        assert round_index <= posted + MAX_ROUND_GAP, "verification: too many rounds skipped"
    assert root != empty(bytes32), "verification: empty root"
    assert n_leaves > 0 and n_leaves <= 2**MAX_PROOF, "verification: bad leaf count"
    self.rounds[job][round_index] = IVerification.Round(
        tree=self._tree_hash(root, n_leaves), posted_at=block.timestamp, open_challenges=0
    )
    self.rounds_posted[job] = round_index + 1
    log RootPosted(job=job, round_index=round_index, root=root, n_leaves=n_leaves, coordinator=msg.sender)


@external
@view
def round_finalized(job: uint256, round_index: uint256) -> bool:
    """
    @notice True once the round's root is posted, its challenge window has closed and no
            challenge against it is still open: the point where its pay may be released
            (a lease with `proven(job, round, lease)` must not be paid for it).
    @param job The job (a Market order id).
    @param round_index The round.
    @return bool True once the round is final.
    """
    r: IVerification.Round = self.rounds[job][round_index]
    return r.posted_at != 0 and block.timestamp >= r.posted_at + challenge_window and r.open_challenges == 0


# ---------------------------------------------------------------- challenges


@internal
@view
def _check_signature(digest: bytes32, signer: address, signature: Bytes[65]):
    # Shape first, so that malformed signatures read as our error, not snekmate's: its own
    # malleability bound (EIP-2: s <= secp256k1n / 2), which `_recover_sig` asserts again.
    assert len(signature) == 65, "verification: bad commitment signature"
    sig_v: uint256 = convert(slice(signature, 64, 1), uint256)
    sig_s: uint256 = extract32(signature, 32, output_type=uint256)
    assert (sig_v == 27 or sig_v == 28) and sig_s <= ecdsa._MALLEABILITY_THRESHOLD, "verification: bad commitment signature"
    recovered: address = ecdsa._recover_sig(digest, signature)
    assert recovered != empty(address) and recovered == signer, "verification: bad commitment signature"


@internal
@view
def _weight_at(who: address, snapshot: uint256) -> uint256:
    return staticcall IValidators(validators).stake_at(who, snapshot)


@external
@nonreentrant
def open_challenge(
    commitment: Commitment,
    signature: Bytes[65],
    round_root: bytes32,
    n_leaves: uint256,
    leaf_index: uint256,
    proof: DynArray[bytes32, MAX_PROOF],
    segment: uint256,
    evidence: bytes32,
    bond: uint256,
) -> uint256:
    """
    @notice Challenge one worker's commitment, leaf `leaf_index` of the round's tree
            (`round_root` and `n_leaves` as posted): segment `segment` (checkpoint `segment` to
            `segment + 1`) did not replay. `evidence` is the hash of the challenger's replay
            report, served off chain. Pulls `bond` of the stake token (approve first).
            The caller is a validator or the job's tenant, not the provider. The quorum is
            `quorum_bps` of the validators' total stake at the block before this one, less the
            parties' stake then; the provider's registry stake is locked until the verdict can
            be carried out (deadline + vote_period), so it cannot unbond out of reach.
    @param commitment The worker's commitment (its digest is the leaf).
    @param signature The provider's 65-byte signature of the commitment.
    @param round_root The round's Merkle root, as posted.
    @param n_leaves The round's leaf count, as posted.
    @param leaf_index The commitment's leaf index in the round's tree.
    @param proof The Merkle proof of the leaf.
    @param segment The segment that did not replay (below `checkpoints - 1`).
    @param evidence The hash of the challenger's replay report.
    @param bond The bond, at least `min_bond`, in stake-token base units.
    @return uint256 The challenge id (ids start at 1).
    """
    c: Commitment = commitment
    r: IVerification.Round = self.rounds[c.job][c.round_index]
    assert r.posted_at != 0, "verification: no root for this round"
    assert block.timestamp < r.posted_at + challenge_window, "verification: challenge window closed"
    assert bond >= min_bond, "verification: bond too small"
    tenant: address = self.job_tenant[c.job]
    assert msg.sender == tenant or staticcall IValidators(validators).is_validator(msg.sender), "verification: caller is not a validator or the tenant"
    assert msg.sender != c.provider, "verification: a provider cannot challenge itself"
    leaf: bytes32 = self._commitment_digest(c)
    self._check_signature(leaf, c.provider, signature)
    assert r.posted_at <= c.expiry, "verification: commitment expired before the root was posted"
    assert self._tree_hash(round_root, n_leaves) == r.tree, "verification: not the posted round root"
    assert self._merkle_verify(round_root, leaf, leaf_index, proof, n_leaves), "verification: commitment not in the round root"
    lease: MarketLease = staticcall IMarket(market).leases(c.lease_id)
    assert lease.order_id == c.job and lease.provider == c.provider, "verification: lease is not the provider's in this job"
    assert c.checkpoints >= 2 and segment < c.checkpoints - 1, "verification: no such segment"
    assert not self.proven[c.job][c.round_index][c.lease_id], "verification: cheat already proven for this lease and round"
    assert self.open_challenge_of[c.job][c.round_index][c.lease_id] == 0, "verification: a challenge is already open for this lease and round"

    # Who may vote, and with what weight: stake at the block before this one (final, so it
    # cannot be raised in this transaction's block), the three parties' excluded.
    snapshot: uint256 = block.number - 1
    excluded: uint256 = self._weight_at(msg.sender, snapshot) + self._weight_at(c.provider, snapshot)
    if tenant != msg.sender and tenant != c.provider:
        excluded += self._weight_at(tenant, snapshot)
    eligible: uint256 = staticcall IValidators(validators).total_stake_at(snapshot) - excluded
    quorum: uint256 = (eligible * quorum_bps + BPS - 1) // BPS
    assert quorum > 0, "verification: too few validators to reach a quorum"

    challenge_id: uint256 = self.next_challenge_id
    self.next_challenge_id = challenge_id + 1
    deadline: uint256 = block.timestamp + vote_period
    self.challenges[challenge_id] = Challenge(
        job=c.job,
        round_index=c.round_index,
        lease_id=c.lease_id,
        provider=c.provider,
        tenant=tenant,
        challenger=msg.sender,
        bond=bond,
        deadline=deadline,
        snapshot=snapshot,
        quorum=quorum,
        guilty_votes=0,
        innocent_votes=0,
        guilty_stake=0,
        innocent_stake=0,
        status=OPEN,
        voter_pool=0,
        answer=empty(bytes32),
    )
    self.rounds[c.job][c.round_index].open_challenges = r.open_challenges + 1
    self.open_challenge_of[c.job][c.round_index][c.lease_id] = challenge_id
    log ChallengeOpened(
        challenge_id=challenge_id,
        job=c.job,
        round_index=c.round_index,
        lease_id=c.lease_id,
        provider=c.provider,
        challenger=msg.sender,
        result_hash=c.result_hash,
        checkpoint_root=c.checkpoint_root,
        checkpoints=c.checkpoints,
        segment=segment,
        evidence=evidence,
        bond=bond,
        quorum=quorum,
        deadline=deadline,
    )
    # the verdict is fixed by the deadline; one more vote period to carry it out
    extcall IProviderRegistry(registry).lock(c.provider, deadline + vote_period)
    assert extcall IERC20(stake_token).transferFrom(msg.sender, self, bond, default_return_value=True), "verification: bond transfer failed"
    return challenge_id


@internal
@view
def _open_challenge(challenge_id: uint256) -> Challenge:
    ch: Challenge = self.challenges[challenge_id]
    assert ch.status != 0, "verification: unknown challenge"
    assert ch.status == OPEN, "verification: challenge already resolved"
    return ch


@external
def answer(challenge_id: uint256, opening_hash: bytes32):
    """
    @notice The challenged provider records the hash of its opening (the segment's start
            state, end hashes and proofs, served off chain) before the vote deadline. Once.
    @param challenge_id The open challenge against the caller.
    @param opening_hash The hash of the opening (not zero).
    """
    ch: Challenge = self._open_challenge(challenge_id)
    assert msg.sender == ch.provider, "verification: caller is not the challenged provider"
    assert block.timestamp < ch.deadline, "verification: voting closed"
    assert ch.answer == empty(bytes32), "verification: already answered"
    assert opening_hash != empty(bytes32), "verification: empty answer"
    self.challenges[challenge_id].answer = opening_hash
    log ChallengeAnswered(challenge_id=challenge_id, provider=msg.sender, opening_hash=opening_hash)


@internal
@view
def _verdict(ch: Challenge) -> uint8:
    if ch.guilty_stake >= ch.quorum:
        return UPHELD
    if ch.innocent_stake >= ch.quorum:
        return REJECTED
    if block.timestamp >= ch.deadline:
        return EXPIRED
    return OPEN


@external
@view
def verdict(challenge_id: uint256) -> uint8:
    """
    @notice What `resolve` would do now: OPEN (undecided), UPHELD, REJECTED or EXPIRED;
            0 for an unknown challenge. A resolved challenge reports its outcome.
    @param challenge_id The challenge.
    @return uint8 The verdict.
    """
    ch: Challenge = self.challenges[challenge_id]
    if ch.status != OPEN:
        return ch.status
    return self._verdict(ch)


@external
def vote(challenge_id: uint256, guilty: bool):
    """
    @notice A validator votes once, weighing its stake at the challenge's snapshot block
            (the one before it opened) or its stake now, whichever is less: stake added after
            the challenge opened does not count, stake unbonded since does not either, and a
            validator registered later weighs nothing. Its stake is then locked until the
            verdict can be carried out (Validators.lock), so it cannot vote and unbond out of
            reach. The challenger, the provider and the tenant cannot vote.
    @param challenge_id The open, undecided challenge.
    @param guilty True: the segment did not replay (the provider cheated).
    """
    # Field by field rather than the whole struct: a vote reads few of its slots.
    status: uint8 = self.challenges[challenge_id].status
    assert status != 0, "verification: unknown challenge"
    assert status == OPEN, "verification: challenge already resolved"
    deadline: uint256 = self.challenges[challenge_id].deadline
    assert block.timestamp < deadline, "verification: voting closed"
    quorum: uint256 = self.challenges[challenge_id].quorum
    guilty_stake: uint256 = self.challenges[challenge_id].guilty_stake
    innocent_stake: uint256 = self.challenges[challenge_id].innocent_stake
    assert guilty_stake < quorum and innocent_stake < quorum, "verification: already decided"
    now_weight: uint256 = staticcall IValidators(validators).weight_of(msg.sender)
    assert now_weight > 0, "verification: caller is not a validator"
    weight: uint256 = min(now_weight, self._weight_at(msg.sender, self.challenges[challenge_id].snapshot))
    assert weight > 0, "verification: validator joined after the challenge opened"
    assert msg.sender != self.challenges[challenge_id].challenger and msg.sender != self.challenges[challenge_id].provider and msg.sender != self.challenges[challenge_id].tenant, "verification: a party cannot vote"
    assert self.votes[challenge_id][msg.sender] == 0, "verification: already voted"
    self.vote_weight[challenge_id][msg.sender] = weight
    if guilty:
        self.votes[challenge_id][msg.sender] = _GUILTY
        self.challenges[challenge_id].guilty_stake = guilty_stake + weight
        self.challenges[challenge_id].guilty_votes += 1
    else:
        self.votes[challenge_id][msg.sender] = _INNOCENT
        self.challenges[challenge_id].innocent_stake = innocent_stake + weight
        self.challenges[challenge_id].innocent_votes += 1
    log Voted(challenge_id=challenge_id, validator=msg.sender, guilty=guilty, weight=weight)
    extcall IValidators(validators).lock(msg.sender, deadline + vote_period)


@internal
def _push(to: address, amount: uint256):
    if amount > 0:
        assert extcall IERC20(stake_token).transfer(to, amount, default_return_value=True), "verification: transfer failed"


@external
@nonreentrant
def resolve(challenge_id: uint256):
    """
    @notice Carry out a decided challenge (a verdict has its quorum, or the vote period is
            over). Anyone may call it: the outcome is fixed by the votes and the clock.
            UPHELD: the provider is slashed and jailed, the round proven for its lease (and the
            lease marked `cheated`: none of its pay not yet released will be), the bond
            returned; REJECTED: the bond, less the voters' reward, goes to the
            provider; EXPIRED: the bond is returned.
    @param challenge_id The open challenge.
    """
    ch: Challenge = self._open_challenge(challenge_id)
    outcome: uint8 = self._verdict(ch)
    assert outcome != OPEN, "verification: not decided yet"
    self.challenges[challenge_id].status = outcome
    self.rounds[ch.job][ch.round_index].open_challenges -= 1
    self.open_challenge_of[ch.job][ch.round_index][ch.lease_id] = 0

    slashed: uint256 = 0
    to_challenger: uint256 = 0
    to_tenant: uint256 = 0
    to_voters: uint256 = 0
    burned: uint256 = 0
    bond_to_provider: uint256 = 0
    bond_returned: uint256 = 0
    if outcome == UPHELD:
        self.proven[ch.job][ch.round_index][ch.lease_id] = True
        self.cheated[ch.lease_id] = True
        # Neither call may block the verdict: if this contract lost the registry's slasher role
        # (a timelocked owner action), the round must still become final and the bond go back,
        # or the job's pay would wait on this challenge for good. Then nothing is slashed.
        ok: bool = False
        out: Bytes[32] = b""
        ok, out = raw_call(
            registry,
            abi_encode(ch.provider, slash_amount, self, method_id=method_id("slash(address,uint256,address)")),
            max_outsize=32,
            revert_on_failure=False,
        )
        if ok and len(out) == 32:
            slashed = convert(out, uint256)
        else:
            # Only a lost role excuses a failed slash: a resolver who starves the call of gas
            # (63/64 rule) to spare the provider gets a revert instead.
            assert not staticcall IProviderRegistry(registry).is_slasher(self), "verification: slash failed"
        ok = raw_call(
            registry,
            abi_encode(ch.provider, block.timestamp + jail_period, method_id=method_id("jail(address,uint256)")),
            revert_on_failure=False,
        )
        assert ok or not staticcall IProviderRegistry(registry).is_slasher(self), "verification: jail failed"
        to_voters = min(voter_reward, slashed)
        rest: uint256 = slashed - to_voters
        to_challenger = rest * challenger_bps // BPS
        to_tenant = rest * tenant_bps // BPS
        burned = rest - to_challenger - to_tenant
        bond_returned = ch.bond
    elif outcome == REJECTED:
        to_voters = voter_reward
        bond_to_provider = ch.bond - to_voters
    else:
        bond_returned = ch.bond
    self.challenges[challenge_id].voter_pool = to_voters
    log ChallengeResolved(
        challenge_id=challenge_id,
        outcome=outcome,
        slashed=slashed,
        to_challenger=to_challenger,
        to_tenant=to_tenant,
        to_voters=to_voters,
        burned=burned,
        bond_to_provider=bond_to_provider,
        bond_returned=bond_returned,
    )
    self._push(ch.challenger, bond_returned + to_challenger)
    self._push(ch.tenant, to_tenant)
    self._push(ch.provider, bond_to_provider)
    if burned > 0:
        extcall IStakeToken(stake_token).burn(burned)


@external
@nonreentrant
def claim_reward(challenge_id: uint256):
    """
    @notice A validator whose vote made the verdict takes its share of the voter reward,
            once: its vote's weight's share of voter_pool (by stake, so splitting stake over
            addresses earns no more), rounded on the running total of claimed weight so that
            the shares add up to the pool exactly.
    @param challenge_id The upheld or rejected challenge.
    """
    ch: Challenge = self.challenges[challenge_id]
    assert ch.status == UPHELD or ch.status == REJECTED, "verification: challenge not decided"
    cast: uint8 = self.votes[challenge_id][msg.sender]
    assert cast != _CLAIMED, "verification: reward already claimed"
    winning: uint8 = _GUILTY
    winning_stake: uint256 = ch.guilty_stake
    if ch.status == REJECTED:
        winning = _INNOCENT
        winning_stake = ch.innocent_stake
    assert cast == winning, "verification: no reward for this caller"
    self.votes[challenge_id][msg.sender] = _CLAIMED
    before: uint256 = self.claimed_weight[challenge_id]
    after: uint256 = before + self.vote_weight[challenge_id][msg.sender]
    self.claimed_weight[challenge_id] = after
    amount: uint256 = ch.voter_pool * after // winning_stake - ch.voter_pool * before // winning_stake
    log RewardClaimed(challenge_id=challenge_id, voter=msg.sender, amount=amount)
    self._push(msg.sender, amount)
