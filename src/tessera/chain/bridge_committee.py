"""Which bridge inboxes are due a committee rotation (docs/bridge.md, "Attestation and the
committee"): those, not paused, whose current committee differs from the home Validators'
stake-weighted choice (`protocol.bridge.rotation_due`), or whose epoch is old enough to be
renewed (`protocol.bridge.renewal_due`: the committee shows it can still sign, so the owner's
`recover_committee` stays closed). Read by the validators' rotation duty
(validator/bridge_rotation.py), which signs the hand-over, and by the relayer, which asks the
members for their signatures only while one is due.

Reading every validator's weight costs a call each, so the answer is computed again only when
the validator count, the total stake, or an inbox's epoch, pause or renewal moved since the last
look."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from web3 import Web3

from tessera.chain.bridge_deploy import validator_weights
from tessera.chain.bridge_inbox import BridgeInbox
from tessera.chain.client import Chain
from tessera.chain.validators import Validators
from tessera.errors import BridgeError, TxRefused
from tessera.protocol.bridge import choose_committee, renewal_due, rotation_due


@dataclass(frozen=True)
class DueRotation:
    """An inbox's hand-over: from `current` ({member: weight}, epoch `epoch - 1`) to epoch
    `epoch`'s committee (members ascending, weights)."""
    epoch: int
    members: list[str]
    weights: list[int]
    current: dict[str, int]


class CommitteeWatch:
    def __init__(self, home: Chain, inboxes: dict[int, BridgeInbox]):
        self.home, self.inboxes = home, inboxes
        self.validators = Validators(home)
        self._seen: tuple | None = None
        self._due: dict[int, DueRotation] = {}
        self._stall_periods: dict[str, int | None] = {}

    def due(self) -> dict[int, DueRotation]:
        """{chain id: its due rotation} for every inbox that should hand over now. A paused
        inbox never is: it holds reports of forgeries, and rotating a forger out would let it
        withdraw before its report lands (people may still rotate it by hand)."""
        states = {cid: (inbox.epoch(), inbox.paused(), self._renewal_due(inbox))
                  for cid, inbox in self.inboxes.items()}
        seen = (self.validators.count(), self.validators.total_stake(), tuple(states.values()))
        if seen != self._seen:
            self._seen, self._due = seen, self._compute(states)
        return self._due

    def _compute(self, states: dict[int, tuple[int, bool, bool]]) -> dict[int, DueRotation]:
        """`states`: {chain id: (epoch, paused, renewal due)} of each inbox, as `due` read them."""
        weighted = validator_weights(self.home)
        found = {}
        for chain_id, inbox in self.inboxes.items():
            epoch, paused, renew = states[chain_id]
            if paused:
                # renewed all the same, with the same members (a forger its held reports name
                # stays one), so that a pause cannot open the owner's recovery (review 17, M1)
                if renew:
                    current = inbox.weights(epoch)
                    found[chain_id] = DueRotation(epoch + 1, list(current),
                                                  list(current.values()), current)
                continue
            members, weights = choose_committee(eligible(weighted, inbox))
            if not members:      # no active validator at all: nothing to hand over to
                continue
            current = inbox.weights(epoch)
            proposed = dict(zip(members, weights, strict=True))
            if rotation_due(current, proposed) or renew:
                found[chain_id] = DueRotation(epoch + 1, members, weights, current)
        return found

    def _renewal_due(self, inbox: BridgeInbox) -> bool:
        """Never for an inbox deployed before recovery existed (no STALL_PERIOD: nothing to
        keep closed), which must not stop the duty for the others (review 17, L3)."""
        if inbox.address not in self._stall_periods:     # a constant of the contract
            try:
                self._stall_periods[inbox.address] = inbox.stall_period()
            except TxRefused:   # (an RPC that fails for now raises: asked again next poll)
                self._stall_periods[inbox.address] = None
        period = self._stall_periods[inbox.address]
        return period is not None and renewal_due(inbox.rotated_at(),
                                                  inbox.chain.block_timestamp(), period)


def eligible(weighted: Sequence[tuple[str, int]], inbox: BridgeInbox,
             left_out: Collection[str] = ()) -> list[tuple[str, int]]:
    """The (validator, weight) pairs that may sit on `inbox`'s committee: with stake, not
    `left_out`, and never a member a recovery retired from this inbox (its key lost)."""
    return [(who, w) for who, w in weighted
            if w > 0 and who not in left_out and not inbox.retired(who)]


@dataclass(frozen=True)
class Recovery:
    """An inbox's recovery (`BridgeInbox.recover_committee`, owner only, once stalled): epoch
    `epoch`'s committee, and the stalled committee's members it retires (`lost`)."""
    epoch: int
    members: list[str]
    weights: list[int]
    lost: list[str]
    stalled_since: int


def plan_recovery(home: Chain, inbox: BridgeInbox, lost: Sequence[str]) -> Recovery:
    """The home Validators' stake-weighted committee without the `lost` keys and the members
    this inbox already retired; only the `lost` keys are retired (a member that merely leaves,
    its stake below the minimum for now, may come back by rotation: review 17, M2).
    BridgeError when a lost key is not a member of the current committee, or nobody would be
    left."""
    epoch = inbox.epoch()
    current = inbox.committee(epoch)
    lost_keys = list(dict.fromkeys(Web3.to_checksum_address(a) for a in lost))
    weighted = validator_weights(home)
    staked = {who for who, w in weighted if w > 0}
    strangers = [a for a in lost_keys if a not in current and a not in staked]
    if strangers:
        raise BridgeError(f"{', '.join(strangers)} is neither a member of chain "
                          f"{inbox.chain.network.chain_id}'s committee (epoch {epoch}: "
                          f"{', '.join(current)}) nor a validator with stake: a typo?")
    members, weights = choose_committee(eligible(weighted, inbox, lost_keys))
    if not members:
        raise BridgeError("no active validator is left to form the committee once the lost "
                          "keys are left out: register validators on the home chain first")
    # a lost key of a validator that is not a member is only left out (the contract retires
    # members only): it cannot come back while its stake is not rotated in, and it signs nothing
    return Recovery(epoch + 1, members, weights, [a for a in lost_keys if a in current],
                    inbox.stalled_since())
