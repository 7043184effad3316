"""The validator's rotation duty (docs/bridge.md, "Attestation and the committee"): keep every
inbox's committee the one the home Validators' stake now chooses.

Each poll reads the home Validators' active validators weighted by stake
(`bridge_deploy.validator_committee`: at most 32, the heaviest). For each chain's inbox whose
current committee differs from that choice (`protocol.bridge.rotation_due`: a member joining or
leaving, or a weight moved by 10 %), a member of the current committee signs the hand-over to
the next epoch and serves it at `GET /bridge/rotations?chain=ID`; a relayer gathers a quorum
and calls `BridgeInbox.rotate` (relayer/relay.py). So a validator that unbonds leaves the
committee without anyone's initiative, and then, no longer a member, may withdraw (the
Validators' withdraw guard) once its unbonding period is over: that period is the window in
which a departed member's forgeries can still be proven and slashed. A slashed forger loses its
seat the same way; a new validator gains one. A paused inbox is not rotated by this duty (its
held reports must find the forgers still members).
"""

from __future__ import annotations

from eth_account.signers.local import LocalAccount

from tessera.chain.bridge_deploy import validator_committee
from tessera.chain.bridge_inbox import BridgeInbox, sign_rotation
from tessera.chain.client import Chain
from tessera.chain.validators import Validators
from tessera.errors import BridgeError
from tessera.logs import EventLog
from tessera.protocol.bridge import rotation_due


class RotationSigner:
    """Signs, as `account`, each inbox's hand-over to the stake-weighted committee."""

    def __init__(self, account: LocalAccount, home: Chain, inboxes: dict[int, BridgeInbox],
                 log: EventLog):
        self.account, self.home, self.inboxes, self.log = account, home, inboxes, log
        self.validators = Validators(home)
        self.signed: dict[int, dict] = {}   # chain id -> the rotation it serves
        self._seen: tuple | None = None

    def poll_once(self) -> None:
        # Reading every validator's weight costs a call each: only when the validator count,
        # the total stake or an inbox's epoch moved since the last look
        seen = (self.validators.count(), self.validators.total_stake(),
                tuple((inbox.epoch(), inbox.paused()) for inbox in self.inboxes.values()))
        if seen == self._seen:
            return
        self._seen = seen
        try:
            members, weights = validator_committee(self.home)
        except BridgeError:      # no active validator at all: nothing to hand over to
            return
        proposed = dict(zip(members, weights, strict=True))
        for chain_id, inbox in self.inboxes.items():
            if inbox.paused():
                # a paused inbox holds reports of forgeries; rotating a forger out now would
                # let it withdraw before its report lands (a person may still rotate by hand)
                self.signed.pop(chain_id, None)
                continue
            epoch = inbox.epoch()
            current = inbox.weights(epoch)
            served = self.signed.get(chain_id)
            if not rotation_due(current, proposed) or self.account.address not in current:
                self.signed.pop(chain_id, None)   # nothing due, or our word would not count
                continue
            if served and (served["epoch"], served["members"], served["weights"]) == (
                    epoch + 1, members, weights):
                continue
            signature = sign_rotation(self.account, chain_id, inbox.address, epoch + 1, members,
                                      weights)
            self.signed[chain_id] = {"chain_id": chain_id, "inbox": inbox.address,
                                     "epoch": epoch + 1, "members": members, "weights": weights,
                                     "signer": self.account.address,
                                     "signature": "0x" + signature.hex()}
            self.log("bridge-rotation-signed", chain=chain_id, epoch=epoch + 1,
                     members=len(members), leaving=sorted(set(current) - set(proposed)),
                     joining=sorted(set(proposed) - set(current)))

    def rotation(self, chain_id: int) -> dict | None:
        """The rotation this validator signed for `chain_id`'s inbox (None: none is due)."""
        doc = self.signed.get(chain_id)
        if doc is None:
            return None
        return {**doc, "weights": [str(w) for w in doc["weights"]]}
