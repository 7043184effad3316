"""A seeded verified-market scenario on a local anvil devnet: every verification money path.

`VerifiedWorkload.verified()` builds on `Workload` (anvil's unlocked accounts, batched sends,
one block per `mine()` at a chosen time, time travel past every deadline) and drives, with real
transactions against the deployed contracts, what the demo's verification act does with real
training (no training here: commitments carry random hashes), in about a second of wall time:

- four validators stake (400, 300, 200, 100 TSTK: every quorum below is arithmetic on these);
- two verified orders (jobs) of two leases each; the tenant posts a round root per job for
  rounds 0..3 over the workers' EIP-712 commitments (signed with the providers' devnet keys);
- an upheld challenge: validator V4 challenges the cheater's round 1, the cheater answers, V3
  votes innocent, V1 and V2 guilty (quorum), resolve slashes and jails the cheater and marks
  its lease `cheated`, V1 and V2 claim. From the verdict on, Settlement releases none of that
  lease's pay (issue 11): every round of it goes back to the tenant, round 1 as proven and
  rounds 0, 2, 3 and the time after the last root (round_index 4) as `forfeited` (RoundRefunded
  each; PayReleased with amount 0), and the cheater has nothing to withdraw;
- a rejected (false) challenge: the tenant challenges an honest provider with a 20 TSTK bond, V3
  votes guilty, V1 and V2 innocent: the voters' reward comes out of the bond, the rest goes to
  the provider, nobody is slashed;
- an expired challenge: V3 guilty, V4 innocent, no quorum by the deadline: the bond goes back;
- hardware reports: V1 and V3 report one provider (quorum, no dispute, executed: slashed, jailed,
  reporters claim); V2 and V4 report another, which disputes; the jury (V1 pass, V3 fail)
  clears it;
- both orders cancelled (their unallocated deposit back to the tenant); every lease closed
  (one by its provider) before its rounds are final, its pay released in two steps (rounds,
  then the tail after the release delay) and withdrawn (the honest ones: the cheater's lease
  has nothing to withdraw);
- V1 adds stake, V4 unbonds and withdraws, and the deployer, made a Validators slasher through
  the Timelock (devnet only, as `Workload.setup` does for the registry), slashes V3.

Validators are keys derived from fixed seeds and used through `anvil_impersonateAccount`, so
the devnet's ten funded accounts stay the providers' and tenants'. Deterministic for a seed:
the seed picks the roles, prices and hashes; every timestamp is set by `mine`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_account import Account
from eth_utils import keccak

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import TREASURY
from tessera.explorer.simulate import MAX_UINT, TSTK, TUSD, Workload
from tessera.protocol import commitment as cm
from tessera.protocol import messages
from tessera.protocol.lease import order_deposit

VALIDATOR_STAKES = (400 * TSTK, 300 * TSTK, 200 * TSTK, 100 * TSTK)
ROUNDS = 4           # rounds 0..3 per job
BAD_ROUND = 1        # the cheater's round the validators find guilty
ROUND_EVERY = 600    # seconds between round roots
DURATION = 4 * 3600  # each order's duration (no lease runs out before it is closed)
CHECKPOINTS = 11

# Every event name the scenario makes each contract emit (the test checks each appears).
EVENTS = {
    "Verification": {"RootPosted", "ChallengeOpened", "ChallengeAnswered", "Voted",
                     "ChallengeResolved", "RewardClaimed"},
    "Settlement": {"PayReleased", "RoundRefunded"},
    "Validators": {"ValidatorRegistered", "ValidatorStakeAdded", "ValidatorUnbondRequested",
                   "ValidatorStakeWithdrawn", "ValidatorSlashed", "ValidatorEndpointSet",
                   "ValidatorSlasherSet", "ValidatorLocked"},
    "HardwareReports": {"HardwareReported", "HardwareQuorumReached", "HardwareDisputed",
                        "HardwareDisputeVoted", "HardwareCleared", "HardwareSlashed",
                        "HardwareRewardClaimed"},
    "Market": {"OrderCreated", "LeaseCreated", "OrderCancelled", "LeaseClosed", "Withdrawn"},
    "ProviderRegistry": {"Slashed", "Jailed", "StakeHeld"},
}


def validator_account(i: int):
    """The scenario's i-th validator key (public: derived from a fixed string, devnet only)."""
    return Account.from_key(keccak(b"tessera simulate validator %d" % i))


@dataclass
class VerifiedScenario:
    """Who is who in the scenario, for tests and pages to find its leases and challenges."""

    tenant: str
    validators: tuple[str, ...]        # V1..V4, stakes VALIDATOR_STAKES
    cheater: str                       # slashed and jailed by the upheld challenge
    partner: str                       # honest, the cheater's co-worker in the cheat job
    accused: str                       # honest, falsely challenged (rejected)
    unresolved: str                    # honest, challenged without a quorum (expired)
    hw_slashed: str                    # hardware reports reach a quorum; slashed
    hw_cleared: str                    # hardware reports reach a quorum; disputed, cleared
    cheat_job: int                     # order id: leases of cheater and partner
    honest_job: int                    # order id: leases of accused and unresolved
    cheater_lease: int
    partner_lease: int
    accused_lease: int
    unresolved_lease: int
    upheld: int                        # challenge ids
    rejected: int
    expired: int
    hw_epoch: int                      # the Uptime epoch of both hardware rounds
    rounds: int = ROUNDS
    bad_round: int = BAD_ROUND
    first_block: int = 0               # the scenario's blocks (after the providers' setup)
    last_block: int = 0
    events: dict[str, set[str]] = field(default_factory=lambda: {k: set(v) for k, v in EVENTS.items()})

    @property
    def leases(self) -> tuple[int, ...]:
        return (self.cheater_lease, self.partner_lease, self.accused_lease, self.unresolved_lease)

    @property
    def challenges(self) -> tuple[int, ...]:
        return (self.upheld, self.rejected, self.expired)


class VerifiedWorkload(Workload):
    """`Workload` plus the verified scenario (module docstring)."""

    def __init__(self, network, seed: int = 0, **kwargs):
        super().__init__(network, seed=seed, **kwargs)
        c = Chain(network)
        self.verification, self.settlement = c.contract("Verification"), c.contract("Settlement")
        self.validators, self.hardware = c.contract("Validators"), c.contract("HardwareReports")
        self.uptime = c.uptime
        self.validator_addresses = tuple(validator_account(i).address
                                         for i in range(len(VALIDATOR_STAKES)))
        self.signed: dict[tuple[int, int], list[cm.SignedCommitment]] = {}
        self.trees: dict[tuple[int, int], cm.RoundTree] = {}

    # -- steps -----------------------------------------------------------------------------
    def _impersonate(self, address: str) -> None:
        self._rpc("anvil_impersonateAccount", [address])
        self._rpc("anvil_setBalance", [address, hex(10**20)])

    def _register_validators(self) -> None:
        for address, stake in zip(self.validator_addresses, VALIDATOR_STAKES, strict=True):
            self._impersonate(address)
            self.send(self.deployer, self.stake, "transfer", address, stake + 200 * TSTK)
        self.mine()
        for i, (address, stake) in enumerate(zip(self.validator_addresses, VALIDATOR_STAKES,
                                                 strict=True)):
            self.send(address, self.stake, "approve", self.validators.address, MAX_UINT)
            self.send(address, self.stake, "approve", self.verification.address, MAX_UINT)
            self.send(address, self.validators, "register", stake)
            self.send(address, self.validators, "set_endpoint", f"http://127.0.0.1:{7500 + i}")
        self.send(self.tenants[0], self.stake, "approve", self.verification.address, MAX_UINT)
        self.mine(60)

    def _job(self, providers) -> tuple[int, list[int]]:
        """A verified two-node order and its two leases; returns (order id, lease ids)."""
        tenant, max_price = self.tenants[0], 5 * TUSD
        self.send(tenant, self.market, "create_order", self.rng.randbytes(32), "", 1, 0, max_price,
                  DURATION, len(providers), order_deposit(max_price, 1, len(providers), DURATION),
                  True)
        order = self._logs(self.mine(), self.market, "OrderCreated")[0]["order_id"]
        for p in providers:
            price = self.rng.randint(p.floor, max_price)
            nonce = next(self.nonce_counter)
            typed = messages.bid_typed_data(self.chain_id, self.market.address, order, p.address,
                                            price, nonce, 2**40)
            signature = messages.sign(devnet_account(p.index), typed)
            self.send(tenant, self.market, "accept_bid", order, p.address, price, nonce, 2**40,
                      bytes.fromhex(signature[2:]))
        created = self._logs(self.mine(), self.market, "LeaseCreated")
        by_provider = {lease["provider"]: lease["lease_id"] for lease in created}
        return order, [by_provider[p.address] for p in providers]

    def _post_roots(self, jobs: dict[int, list[tuple[int, object]]], rnd: int) -> None:
        """Each job's workers sign their round commitments; the tenant posts each job's root."""
        for job, workers in jobs.items():
            signed = []
            for lease_id, p in workers:
                c = cm.Commitment(job=job, round=rnd, lease_id=lease_id, provider=p.address,
                                  result_hash=cm.hex32(self.rng.randbytes(32)),
                                  checkpoint_root=cm.hex32(self.rng.randbytes(32)),
                                  checkpoints=CHECKPOINTS, expiry=self.now + cm.VALIDITY_S)
                signed.append(cm.sign(devnet_account(p.index), self.chain_id,
                                      self.verification.address, c))
            tree = cm.round_tree([cm.leaf(self.chain_id, self.verification.address, s.commitment)
                                  for s in signed])
            self.signed[job, rnd], self.trees[job, rnd] = signed, tree
            self.send(self.tenants[0], self.verification, "post_root", job, rnd, tree.root,
                      tree.n_leaves)

    def _challenge(self, challenger: str, job: int, rnd: int, worker: int, bond: int) -> None:
        signed, tree = self.signed[job, rnd][worker], self.trees[job, rnd]
        self.send(challenger, self.verification, "open_challenge",
                  signed.commitment.as_contract_tuple(), bytes.fromhex(signed.signature[2:]),
                  tree.root, tree.n_leaves, worker, list(tree.proofs[worker]),
                  self.rng.randrange(CHECKPOINTS - 1), self.rng.randbytes(32), bond)

    def _call(self, contract, fn: str, *args):
        return getattr(contract.functions, fn)(*args).call()

    # -- the scenario ----------------------------------------------------------------------
    def verified(self) -> VerifiedScenario:
        """Run the scenario (module docstring) and return who is who."""
        if not self.providers:
            self.setup()
        first_block = self.w3.eth.block_number + 1
        cheater, partner, accused, unresolved, hw_slashed, hw_cleared = self.rng.sample(
            sorted(self.providers.values(), key=lambda p: p.index), 6)
        self._register_validators()
        cheat_job, (cheater_lease, partner_lease) = self._job([cheater, partner])
        honest_job, (accused_lease, unresolved_lease) = self._job([accused, unresolved])
        start = self.now
        jobs = {cheat_job: [(cheater_lease, cheater), (partner_lease, partner)],
                honest_job: [(accused_lease, accused), (unresolved_lease, unresolved)]}
        for rnd in (0, 1):
            self._post_roots(jobs, rnd)
            self.mine(ROUND_EVERY)
        upheld, rejected, expired = self._challenges(jobs)
        for rnd in (2, 3):   # on the clock: one root every ROUND_EVERY seconds from the start
            self.now = max(self.now, start + (rnd + 1) * ROUND_EVERY - 1)
            self._post_roots(jobs, rnd)
            self.mine(1)
        epoch = self._hardware_reports(hw_slashed.address, hw_cleared.address)
        closed_at = self._close(jobs, by_provider=accused_lease)

        # The no-quorum challenge's deadline passes (the vote period after it opened).
        self.now = max(self.now, self._call(self.verification, "challenges", expired)[7])
        self.send(self.deployer, self.verification, "resolve", expired)
        self.mine(60)
        # Every round final (the challenge window after round 3's root): release and withdraw.
        # The hardware rounds' dispute and vote periods are over too: execute, then claim.
        self.now = max(self.now, start + ROUNDS * ROUND_EVERY
                       + self._call(self.verification, "challenge_window"),
                       self._call(self.hardware, "rounds", hw_slashed.address, epoch)[6],
                       self._call(self.hardware, "rounds", hw_cleared.address, epoch)[7])
        self._release_and_withdraw(jobs)
        self.send(self.deployer, self.hardware, "execute", hw_slashed.address, epoch)
        self.send(self.deployer, self.hardware, "execute", hw_cleared.address, epoch)
        self.mine(60)
        for v in self.validator_addresses[0::2]:   # V1, V3: the slashed round's reporters
            self.send(v, self.hardware, "claim", hw_slashed.address, epoch)
        self.mine(60)
        # After the release delay: the tail from round 3's root to the close.
        self.now = max(self.now, closed_at + self._call(self.settlement, "release_delay"))
        self._release_and_withdraw(jobs)
        self.mine(60)
        self._validator_money()

        self._refresh_providers()
        return VerifiedScenario(
            tenant=self.tenants[0], validators=self.validator_addresses, cheater=cheater.address,
            partner=partner.address, accused=accused.address, unresolved=unresolved.address,
            hw_slashed=hw_slashed.address, hw_cleared=hw_cleared.address, cheat_job=cheat_job,
            honest_job=honest_job, cheater_lease=cheater_lease, partner_lease=partner_lease,
            accused_lease=accused_lease, unresolved_lease=unresolved_lease, upheld=upheld,
            rejected=rejected, expired=expired, hw_epoch=epoch,
            first_block=first_block, last_block=self.w3.eth.block_number)

    def _challenges(self, jobs: dict) -> tuple[int, int, int]:
        """Open, answer, vote, resolve and claim: (upheld, rejected, expired) challenge ids;
        the expired one is resolved later, once its deadline has passed."""
        v1, v2, v3, v4 = self.validator_addresses
        tenant = self.tenants[0]
        (cheat_job, cheat_workers), (honest_job, honest_workers) = jobs.items()
        (cheater_lease, cheater), _partner = cheat_workers
        (accused_lease, accused), (unresolved_lease, _unresolved) = honest_workers
        self._challenge(v4, cheat_job, BAD_ROUND, 0, 10 * TSTK)
        self._challenge(tenant, honest_job, 0, 0, 20 * TSTK)
        self._challenge(tenant, honest_job, 1, 1, 10 * TSTK)
        opened = {c["lease_id"]: c["challenge_id"]
                  for c in self._logs(self.mine(60), self.verification, "ChallengeOpened")}
        upheld, rejected = opened[cheater_lease], opened[accused_lease]
        expired = opened[unresolved_lease]
        # Answers and the dissenting votes a block before the deciding ones: in one block their
        # order is not ours to pick, and a vote after the quorum would revert.
        self.send(cheater.address, self.verification, "answer", upheld, self.rng.randbytes(32))
        self.send(accused.address, self.verification, "answer", rejected, self.rng.randbytes(32))
        self.send(v3, self.verification, "vote", upheld, False)
        self.send(v3, self.verification, "vote", rejected, True)
        self.send(v3, self.verification, "vote", expired, True)
        self.send(v4, self.verification, "vote", expired, False)
        self.mine(60)
        for v in (v1, v2):
            self.send(v, self.verification, "vote", upheld, True)
            self.send(v, self.verification, "vote", rejected, False)
        self.mine(60)
        self.send(self.deployer, self.verification, "resolve", upheld)
        self.send(self.deployer, self.verification, "resolve", rejected)
        self.mine(60)
        for v in (v1, v2):
            self.send(v, self.verification, "claim_reward", upheld)
            self.send(v, self.verification, "claim_reward", rejected)
        self.mine(60)
        return upheld, rejected, expired

    def _hardware_reports(self, slashed: str, cleared: str) -> int:
        """V1 and V3 report `slashed`, V2 and V4 report `cleared`, the smaller stake first (the
        second report completes the quorum: a report after it is refused); `cleared` disputes,
        V1 votes pass and V3 fail. Returns the epoch."""
        v1, v2, v3, v4 = self.validator_addresses
        epoch = self._call(self.uptime, "current_epoch")
        for provider, reporters in ((slashed, (v3, v1)), (cleared, (v4, v2))):
            for v in reporters:
                self.send(v, self.hardware, "report", provider, epoch, 1 + self.rng.randrange(3),
                          self.rng.randbytes(32))
        self.mine(30)
        self.send(cleared, self.hardware, "dispute", epoch)
        self.mine(30)
        self.send(v1, self.hardware, "vote_dispute", cleared, epoch, True)
        self.send(v3, self.hardware, "vote_dispute", cleared, epoch, False)
        self.mine(30)
        return epoch

    def _close(self, jobs: dict, by_provider: int) -> int:
        """The tenant cancels its orders (their unallocated deposit back) and closes every lease
        but `by_provider`, which its provider closes; before any round is final. Returns the
        close time."""
        tenant = self.tenants[0]
        for job in jobs:
            self.send(tenant, self.market, "cancel_order", job)
        for lease_id, p in (w for ws in jobs.values() for w in ws):
            self.send(p.address if lease_id == by_provider else tenant, self.market,
                      "close_lease", lease_id)
        self.mine(60)
        return self.now

    def _release_and_withdraw(self, jobs: dict) -> None:
        """Each provider releases its lease's final rounds and withdraws (same sender: in order).
        A lease with a proven cheat is released too (its pay goes back to the tenant), but its
        provider has nothing to withdraw (`withdraw` would revert)."""
        for lease_id, p in (w for ws in jobs.values() for w in ws):
            self.send(p.address, self.settlement, "release", lease_id, ROUNDS)
            if not self._call(self.verification, "cheated", lease_id):
                self.send(p.address, self.market, "withdraw", lease_id)
        self.mine(60)

    def _validator_money(self) -> None:
        """V1 adds stake; V4 unbonds all and withdraws once its votes' locks are over; the
        deployer, made a Validators slasher through the Timelock, slashes V3 to the treasury."""
        v1, _v2, v3, v4 = self.validator_addresses
        timelock = self.network.address("Timelock")
        self._impersonate(timelock)
        self.send(timelock, self.validators, "set_slasher", self.deployer, True)
        self.send(v1, self.validators, "add_stake", 50 * TSTK)
        self.send(v4, self.validators, "request_unbond", VALIDATOR_STAKES[3])
        self.mine(60)
        self.send(self.deployer, self.validators, "slash", v3, 10 * TSTK,
                  devnet_account(TREASURY).address)
        self.now = max(self.now + self._call(self.validators, "unbonding_period"),
                       self._call(self.validators, "locked_until", v4))
        self.mine(60)
        self.send(v4, self.validators, "withdraw_unbonded")
        self.mine(60)

    def _refresh_providers(self) -> None:
        """Keep Workload's model of the providers true after slashes and jails, so that
        `round()` may run after the scenario."""
        min_stake = self._call(self.registry, "min_stake")
        for p in self.providers.values():
            record = self._call(self.registry, "providers", p.address)
            p.stake, p.jailed_until = record[0], record[10]
            p.active = p.stake >= min_stake
