"""Typed access to Verification.vy: post a round root, challenge a commitment, answer, vote,
resolve, claim; and the contract's parameters with the defaults chosen in docs/verification.md."""

from __future__ import annotations

from dataclasses import astuple, dataclass
from enum import IntEnum

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.logs import DISCARD
from web3.types import TxReceipt

from tessera.chain.contract import ContractWrapper
from tessera.chain.tokens import StakeToken
from tessera.chain.validators import Validators
from tessera.errors import ChainError
from tessera.protocol import commitment as cm

TSTK = 10**StakeToken.DECIMALS
DAY = 86_400


@dataclass(frozen=True)
class VerificationParams:
    """Constructor arguments after (market, registry, validators), in order; immutable once
    deployed. Why these values: docs/verification.md, "Parameters"."""

    challenge_window: int = 3_600       # seconds after a root during which it can be challenged
    vote_period: int = 3_600            # seconds validators have to reach a quorum
    min_bond: int = 10 * TSTK           # challenger's bond, in stake-token base units
    slash_amount: int = 100 * TSTK      # taken from a provider proven to cheat (= registry min stake)
    challenger_bps: int = 2_500         # of the slash after voter rewards, to the challenger
    # ... to the tenant; the rest is burned. 0: a cheater leasing itself through a sybil tenant
    # that challenges it took back challenger and tenant shares (75 %) of its own slash, and so
    # left a pending honest verdict nothing to slash for 29 TSTK (review 28). The tenant gets
    # the round's pay back in TUSD; its challenge is paid by the challenger share.
    tenant_bps: int = 0
    voter_reward: int = 5 * TSTK        # shared by stake by the voters who made the verdict
    quorum_bps: int = 6_667             # of the eligible validator stake (must be a majority)
    jail_period: int = 7 * DAY

    def constructor_args(self) -> tuple:
        return astuple(self)


class Outcome(IntEnum):
    UNKNOWN = 0
    OPEN = 1
    UPHELD = 2
    REJECTED = 3
    EXPIRED = 4


@dataclass(frozen=True)
class RoundRecord:
    tree: bytes  # keccak256(abi_encode(root, n_leaves)), cm.RoundTree.tree_hash
    posted_at: int
    open_challenges: int


@dataclass(frozen=True)
class ChallengeRecord:
    challenge_id: int
    job: int
    round_index: int
    lease_id: int
    provider: str
    tenant: str
    challenger: str
    bond: int
    deadline: int
    snapshot: int           # the block whose validator stake weighs the votes
    quorum: int             # stake a verdict needs
    guilty_votes: int       # voters, for display
    innocent_votes: int
    guilty_stake: int       # what decides
    innocent_stake: int
    status: Outcome
    voter_pool: int         # the winning voters' reward, shared by stake
    answer: bytes


@dataclass(frozen=True)
class Resolution:
    """The token movements of one resolved challenge (the ChallengeResolved event)."""

    challenge_id: int
    outcome: Outcome
    slashed: int
    to_challenger: int
    to_tenant: int
    to_voters: int
    burned: int
    bond_to_provider: int
    bond_returned: int
    receipt: TxReceipt


class Verification(ContractWrapper):
    """What coordinators, challengers, providers and validators do on Verification.vy."""

    NAME = "Verification"

    # -- commitments ---------------------------------------------------------------------
    def leaf(self, c: cm.Commitment) -> bytes:
        return cm.leaf(self.chain.network.chain_id, self.address, c)

    def sign_commitment(self, account: LocalAccount, c: cm.Commitment) -> cm.SignedCommitment:
        return cm.sign(account, self.chain.network.chain_id, self.address, c)

    def round_tree(self, signed: list[cm.SignedCommitment]) -> cm.RoundTree:
        """The coordinator's tree; every signature is checked first, so a bad one is named."""
        for s in signed:
            try:
                who = cm.signer(self.chain.network.chain_id, self.address, s)
            except ValueError as exc:
                raise ChainError(f"lease {s.commitment.lease_id}: malformed signature ({exc})") from None
            if who.lower() != s.commitment.provider.lower():
                raise ChainError(f"lease {s.commitment.lease_id}: commitment signed by {who}, "
                                 f"not by its provider {s.commitment.provider}")
        return cm.round_tree([self.leaf(s.commitment) for s in signed])

    # -- coordinator ---------------------------------------------------------------------
    def post_root(self, job: int, round_index: int, tree: cm.RoundTree) -> TxReceipt:
        return self.chain.send(self.contract.functions.post_root(job, round_index, tree.root,
                                                                 tree.n_leaves))

    # -- challenger ----------------------------------------------------------------------
    def open_challenge(self, signed: cm.SignedCommitment, tree: cm.RoundTree, segment: int,
                       evidence: bytes, bond: int | None = None) -> tuple[int, list[TxReceipt]]:
        """Challenge `signed` (a leaf of `tree`) at `segment`; approves the bond if needed.
        Returns the challenge id and the receipts (approval, challenge)."""
        bond = self.chain.call(self.contract.functions.min_bond()) if bond is None else bond
        index = tree.index_of(self.leaf(signed.commitment))
        receipts = StakeToken(self.chain).fund(self.address, bond, "the challenge bond")
        receipt = self.chain.send(self.contract.functions.open_challenge(
            signed.commitment.as_contract_tuple(), bytes.fromhex(signed.signature[2:]), tree.root,
            tree.n_leaves, index, list(tree.proofs[index]), segment, evidence, bond))
        receipts.append(receipt)
        return self._event(receipt, "ChallengeOpened")["challenge_id"], receipts

    # -- provider ------------------------------------------------------------------------
    def answer(self, challenge_id: int, opening_hash: bytes) -> TxReceipt:
        return self.chain.send(self.contract.functions.answer(challenge_id, opening_hash))

    # -- validators ----------------------------------------------------------------------
    def weight_at_snapshot(self, record: ChallengeRecord, address: str) -> int:
        """What `address`'s vote on the challenge would weigh (its stake at the snapshot block,
        or now if less): 0 when it may not vote (registered later, unbonded)."""
        validators = Validators(self.chain)
        return min(validators.weight_of(address), validators.stake_at(address, record.snapshot))

    def vote(self, challenge_id: int, guilty: bool) -> TxReceipt:
        """Vote; the vote weighs this validator's stake at the challenge's snapshot block, and
        locks its stake until the verdict can be carried out."""
        return self.chain.send(self.contract.functions.vote(challenge_id, guilty))

    def vote_weight(self, challenge_id: int, validator: str) -> int:
        return self._call("vote_weight", challenge_id, Web3.to_checksum_address(validator))

    def claim_reward(self, challenge_id: int) -> TxReceipt:
        return self.chain.send(self.contract.functions.claim_reward(challenge_id))

    # -- anyone --------------------------------------------------------------------------
    def resolve(self, challenge_id: int) -> Resolution:
        receipt = self.chain.send(self.contract.functions.resolve(challenge_id))
        logs = self.contract.events.ChallengeResolved().process_receipt(receipt, errors=DISCARD)
        if not logs:
            raise ChainError(f"resolve of challenge {challenge_id} emitted no ChallengeResolved")
        args = dict(logs[0]["args"])
        args["outcome"] = Outcome(args["outcome"])
        return Resolution(receipt=receipt, **args)

    def round(self, job: int, round_index: int) -> RoundRecord:
        return RoundRecord(**self._struct("rounds", job, round_index))

    def challenge(self, challenge_id: int) -> ChallengeRecord:
        record = self._struct("challenges", challenge_id)
        if record["status"] == 0:
            raise ChainError(f"challenge {challenge_id} does not exist")
        record["status"] = Outcome(record["status"])
        return ChallengeRecord(challenge_id=challenge_id, **record)

    def verdict(self, challenge_id: int) -> Outcome:
        return Outcome(self.chain.call(self.contract.functions.verdict(challenge_id)))

    def vote_of(self, challenge_id: int, validator: str) -> int:
        """How `validator` voted on a challenge (0: not yet; the contract's vote codes)."""
        return self._call("votes", challenge_id, validator)

    def vote_period(self) -> int:
        return self._call("vote_period")

    def root_block_hash(self, job: int, round_index: int, from_block: int = 0) -> bytes:
        """The hash of the block that holds the round's root (its `RootPosted` log): the spot
        check's randomness, which a worker could not know when it signed. ChainError if the
        root is not on chain."""
        logs = self.chain.events("Verification", "RootPosted", from_block,
                                 argument_filters={"job": job, "round_index": round_index})
        if not logs:
            raise ChainError(f"no root of round {round_index} of job {job} on chain")
        return bytes(logs[0]["blockHash"])

    def open_challenge_of(self, job: int, round_index: int, lease_id: int) -> int:
        """The id of the open challenge on `lease_id`'s round of `job`, 0 when none (cleared
        when the challenge is resolved)."""
        return self.chain.call(self.contract.functions.open_challenge_of(job, round_index,
                                                                         lease_id))

    def rounds_posted(self, job: int) -> int:
        """How many round roots the job has on chain (the next round to post)."""
        return self.chain.call(self.contract.functions.rounds_posted(job))

    def first_round(self, job: int) -> int:
        """The round of the job's first root (0 before any): a replacement's order starts at
        the round it joined."""
        return self.chain.call(self.contract.functions.first_round(job))

    def round_finalized(self, job: int, round_index: int) -> bool:
        return self.chain.call(self.contract.functions.round_finalized(job, round_index))

    def proven(self, job: int, round_index: int, lease_id: int) -> bool:
        return self.chain.call(self.contract.functions.proven(job, round_index, lease_id))

    def cheated(self, lease_id: int) -> bool:
        """Whether a cheat was proven for the lease in any round: Settlement then releases none
        of its pay still held (it all goes back to the tenant)."""
        return self.chain.call(self.contract.functions.cheated(lease_id))

    def params(self) -> VerificationParams:
        fns = self.contract.functions
        return VerificationParams(**{name: self.chain.call(getattr(fns, name)())
                                     for name in VerificationParams.__dataclass_fields__})
