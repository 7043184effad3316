"""Uptime.vy: liveness per provider and epoch (heartbeats, validators' reports, receipt claims,
inclusion challenges) and outage reports (docs/uptime.md)."""

from __future__ import annotations

from web3.exceptions import BadFunctionCallOutput
from web3.types import TxReceipt

from tessera.chain.contract import ContractWrapper


class Uptime(ContractWrapper):
    NAME = "Uptime"

    def genesis(self) -> int:
        return self._call("genesis")

    def epoch_length(self) -> int:
        return self._call("epoch_length")

    def jail_after(self) -> int:
        return self._call("jail_after")

    def current_epoch(self) -> int:
        return self._call("current_epoch")

    def liveness_rules(self) -> tuple[int, int]:
        """(report_delay, answer_epochs): immutable, the windows of protocol.liveness."""
        return self._call("report_delay"), self._call("answer_epochs")

    def challenge_rules(self) -> tuple[int, int]:
        """(challenge_bond, inclusion_slash): immutable, in stake-token base units."""
        return self._call("challenge_bond"), self._call("inclusion_slash")

    def beats(self, provider: str, epoch: int) -> bool:
        """A heartbeat transaction (or a claimed receipt) for `epoch`."""
        return bool(self._call("beats", provider, epoch))

    def beat_word(self, provider: str, index: int) -> int:
        """Epochs 256·index .. 256·index+255 of a provider's heartbeats as a bitmap."""
        return self._call("beat_word", provider, index)

    def is_up(self, provider: str, epoch: int) -> bool:
        """Heartbeat, claimed receipt or unrevoked report; an epoch not yet final counts as up."""
        return bool(self._call("is_up", provider, epoch))

    def is_final(self, epoch: int) -> bool:
        return bool(self._call("is_final", epoch))

    def live_word(self, epoch: int, index: int) -> int:
        """Registry indices 256·index .. 256·index+255 named live in `epoch` (less revoked)."""
        return self._call("live_word", epoch, index)

    def seed(self, epoch: int, block_identifier: int | str = "latest") -> bytes:
        """The epoch's seed as of `block_identifier` (zero bytes until someone opens the epoch,
        and at a block before Uptime existed). Daemons read it at head - confirmations: a seed
        a reorg can still change must not be signed (docs/uptime.md, "Reorgs")."""
        if block_identifier == "latest":
            return bytes(self._call("seed", epoch))
        fn = self.contract.functions.seed(epoch)
        try:
            return bytes(self.chain.rpc(lambda: fn.call(block_identifier=block_identifier),
                                        what="seed"))
        except BadFunctionCallOutput:   # no code at that block: not deployed yet
            return bytes(32)

    def opened_block(self, epoch: int) -> int:
        """The block that opened `epoch` (0 if never): a receipt's validator counts for
        `claim_beat` if it is one now or was one at the end of that block."""
        return self._call("opened_block", epoch)

    def report_hash(self, validator: str, epoch: int) -> bytes:
        return bytes(self._call("report_hash", validator, epoch))

    def challenge(self, challenge_id: int) -> dict:
        return self._struct("challenges", challenge_id)

    def reported_until(self, provider: str) -> int:
        return self._call("reported_until", provider)

    def heartbeat(self, epoch: int, block_number: int, block_hash: bytes) -> TxReceipt:
        """This account's heartbeat for `epoch`, naming a recent block (proof of liveness)."""
        return self._send("heartbeat", epoch, block_number, block_hash)

    def open_epoch(self) -> TxReceipt:
        """Fix the current epoch's seed (idempotent; anyone)."""
        return self._send("open_epoch")

    def report_liveness(self, epoch: int, words: list[int]) -> TxReceipt:
        """A validator's report: the registry indices whose beats it holds, as 256-bit words."""
        return self._send("report_liveness", epoch, words)

    def claim_beat(self, epoch: int, validator: str, receipt_signature: bytes,
                   beat_signature: bytes) -> TxReceipt:
        """This provider's epoch, with a validator's receipt that its report left out."""
        return self._send("claim_beat", epoch, validator, receipt_signature, beat_signature)

    def challenge_inclusion(self, validator: str, epoch: int, provider: str,
                            words: list[int]) -> tuple[TxReceipt, int]:
        """Challenge a report naming `provider` (bond: approve the stake token first)."""
        receipt = self._send("challenge_inclusion", validator, epoch, provider, words)
        return receipt, self._event(receipt, "InclusionChallenged")["challenge_id"]

    def answer_challenge(self, challenge_id: int, beat_signature: bytes) -> TxReceipt:
        """Show the provider's beat; ANSWERER_SHARE_BPS of the bond comes to this account, the
        rest goes to the validator (ChallengeAnswered's to_answerer and to_validator)."""
        return self._send("answer_challenge", challenge_id, beat_signature)

    def resolve_challenge(self, challenge_id: int) -> TxReceipt:
        return self._send("resolve_challenge", challenge_id)

    def report_outage(self, provider: str, first_epoch: int) -> tuple[TxReceipt, dict]:
        """Report `jail_after` final epochs not up; the receipt and its OutageReported."""
        receipt = self._send("report_outage", provider, first_epoch)
        return receipt, self._event(receipt, "OutageReported")
