"""Uptime.vy: one heartbeat bit per provider and epoch, and validators' outage reports."""

from __future__ import annotations

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

    def beats(self, provider: str, epoch: int) -> bool:
        return bool(self._call("beats", provider, epoch))

    def beat_word(self, provider: str, index: int) -> int:
        """Epochs 256·index .. 256·index+255 of a provider's heartbeats as a bitmap."""
        return self._call("beat_word", provider, index)

    def reported_until(self, provider: str) -> int:
        return self._call("reported_until", provider)

    def heartbeat(self, epoch: int, block_number: int, block_hash: bytes) -> TxReceipt:
        """This account's heartbeat for `epoch`, naming a recent block (proof of liveness)."""
        return self._send("heartbeat", epoch, block_number, block_hash)

    def report_outage(self, provider: str, first_epoch: int) -> tuple[TxReceipt, dict]:
        """Report `jail_after` epochs without a heartbeat; the receipt and its OutageReported."""
        receipt = self._send("report_outage", provider, first_epoch)
        return receipt, self._event(receipt, "OutageReported")
