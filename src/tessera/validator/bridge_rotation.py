"""The validator's rotation duty (docs/bridge.md, "Attestation and the committee"): keep every
inbox's committee the one the home Validators' stake now chooses.

Each poll asks `chain/bridge_committee.CommitteeWatch` which inboxes are due: those whose
current committee differs from the home Validators' active validators weighted by stake (at
most 32, the heaviest) (`protocol.bridge.rotation_due`: a member joining or
leaving, or a weight moved by 10 %), a member of the current committee signs the hand-over to
the next epoch and serves it at `GET /bridge/rotations?chain=ID`; a relayer gathers a quorum
and calls `BridgeInbox.rotate` (relayer/relay.py). So a validator that unbonds leaves the
committee without anyone's initiative, and then, no longer a member, may withdraw (the
Validators' withdraw guard) once its unbonding period is over: that period is the window in
which a departed member's forgeries can still be proven and slashed. A slashed forger loses its
seat the same way; a new validator gains one. A paused inbox is not rotated by this duty (its
held reports must find the forgers still members), only renewed with the same members once its
epoch is a third of STALL_PERIOD old, as every inbox is (so that the owner's committee recovery
stays closed while the committee can sign: docs/bridge.md, "When the committee cannot sign").
"""

from __future__ import annotations

from eth_account.signers.local import LocalAccount

from tessera.chain.bridge_committee import CommitteeWatch
from tessera.chain.bridge_inbox import BridgeInbox, sign_rotation
from tessera.chain.client import Chain
from tessera.logs import EventLog


class RotationSigner:
    """Signs, as `account`, each inbox's hand-over to the stake-weighted committee."""

    def __init__(self, account: LocalAccount, home: Chain, inboxes: dict[int, BridgeInbox],
                 log: EventLog):
        self.account, self.inboxes, self.log = account, inboxes, log
        self.watch = CommitteeWatch(home, inboxes)
        self.signed: dict[int, dict] = {}   # chain id -> the rotation it serves

    def poll_once(self) -> None:
        due = self.watch.due()
        for chain_id in [c for c in self.signed if c not in due]:
            del self.signed[chain_id]          # done, or no longer due (paused, stake moved)
        for chain_id, rotation in due.items():
            served = self.signed.get(chain_id)
            if self.account.address not in rotation.current:
                continue                       # our word would not count
            if served and (served["epoch"], served["members"], served["weights"]) == (
                    rotation.epoch, rotation.members, rotation.weights):
                continue
            inbox = self.inboxes[chain_id]
            signature = sign_rotation(self.account, chain_id, inbox.address, rotation.epoch,
                                      rotation.members, rotation.weights)
            self.signed[chain_id] = {"chain_id": chain_id, "inbox": inbox.address,
                                     "epoch": rotation.epoch, "members": rotation.members,
                                     "weights": rotation.weights, "signer": self.account.address,
                                     "signature": "0x" + signature.hex()}
            self.log("bridge-rotation-signed", chain=chain_id, epoch=rotation.epoch,
                     members=len(rotation.members),
                     leaving=sorted(set(rotation.current) - set(rotation.members)),
                     joining=sorted(set(rotation.members) - set(rotation.current)))

    def rotation(self, chain_id: int) -> dict | None:
        """The rotation this validator signed for `chain_id`'s inbox (None: none is due)."""
        doc = self.signed.get(chain_id)
        if doc is None:
            return None
        return {**doc, "weights": [str(w) for w in doc["weights"]]}
