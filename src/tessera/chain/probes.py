"""Probes.vy: validators' probe reports, one Merkle root and tallies per validator and epoch."""

from __future__ import annotations

from web3.types import TxReceipt

from tessera.chain.contract import ContractWrapper


class Probes(ContractWrapper):
    NAME = "Probes"

    def genesis(self) -> int:
        return self._call("genesis")

    def epoch_length(self) -> int:
        return self._call("epoch_length")

    def max_providers(self) -> int:
        return self._call("MAX_PROVIDERS")

    def current_epoch(self) -> int:
        return self._call("current_epoch")

    def reported(self, validator: str, epoch: int) -> bool:
        return bool(self._call("reported", validator, epoch))

    def report(self, epoch: int, root: bytes, receipt_count: int, tallies: list) -> TxReceipt:
        return self._send("report", epoch, root, receipt_count, tallies)
