"""Which bridge inboxes are due a committee rotation (docs/bridge.md, "Attestation and the
committee"): those, not paused, whose current committee differs from the home Validators'
stake-weighted choice (`protocol.bridge.rotation_due`). Read by the validators' rotation duty
(validator/bridge_rotation.py), which signs the hand-over, and by the relayer, which asks the
members for their signatures only while one is due.

Reading every validator's weight costs a call each, so the answer is computed again only when
the validator count, the total stake, or an inbox's epoch or pause moved since the last look."""

from __future__ import annotations

from dataclasses import dataclass

from tessera.chain.bridge_deploy import validator_committee
from tessera.chain.bridge_inbox import BridgeInbox
from tessera.chain.client import Chain
from tessera.chain.validators import Validators
from tessera.errors import BridgeError
from tessera.protocol.bridge import rotation_due


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

    def due(self) -> dict[int, DueRotation]:
        """{chain id: its due rotation} for every inbox that should hand over now. A paused
        inbox never is: it holds reports of forgeries, and rotating a forger out would let it
        withdraw before its report lands (people may still rotate it by hand)."""
        seen = (self.validators.count(), self.validators.total_stake(),
                tuple((inbox.epoch(), inbox.paused()) for inbox in self.inboxes.values()))
        if seen != self._seen:
            self._seen, self._due = seen, self._compute()
        return self._due

    def _compute(self) -> dict[int, DueRotation]:
        try:
            members, weights = validator_committee(self.home)
        except BridgeError:      # no active validator at all: nothing to hand over to
            return {}
        proposed = dict(zip(members, weights, strict=True))
        found = {}
        for chain_id, inbox in self.inboxes.items():
            if inbox.paused():
                continue
            epoch = inbox.epoch()
            current = inbox.weights(epoch)
            if rotation_due(current, proposed):
                found[chain_id] = DueRotation(epoch + 1, members, weights, current)
        return found
