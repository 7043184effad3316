"""One epoch's report from its probe records: Merkle leaves and root, per-provider tallies,
and the receipts document served at GET /receipts/{epoch} (with a proof per leaf)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tessera.protocol import merkle
from tessera.protocol.probes import probe_leaf
from tessera.validator.store import ProbeRecord


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    root: bytes
    leaves: list[bytes]
    tallies: list[tuple[str, int, int]]  # (provider, answered, missed), sorted by address value

    @property
    def receipt_count(self) -> int:
        return len(self.leaves)


def build_report(records: list[ProbeRecord], chain_id: int, probes: str, validator: str) -> EpochReport:
    if not records:
        raise ValueError("an epoch report needs at least one probe")
    epochs = {r.epoch for r in records}
    if len(epochs) != 1:
        raise ValueError(f"probe records span several epochs: {sorted(epochs)}")
    leaves = [probe_leaf(chain_id, probes, r.provider, validator, r.epoch, r.challenge, r.deadline,
                         r.answered, r.signature) for r in records]
    answered = Counter(r.provider for r in records if r.answered)
    missed = Counter(r.provider for r in records if not r.answered)
    providers = sorted({r.provider for r in records}, key=lambda a: int(a, 16))
    tallies = [(p, answered[p], missed[p]) for p in providers]
    return EpochReport(records[0].epoch, merkle.root(leaves), leaves, tallies)


def receipts_document(records: list[ProbeRecord], report: EpochReport, chain_id: int, probes: str,
                      validator: str, posted: dict | None) -> dict:
    """Everything needed to check each leaf against the root posted on chain."""
    proofs = merkle.proofs(report.leaves)
    return {
        "chain_id": chain_id,
        "probes_contract": probes,
        "validator": validator,
        "epoch": report.epoch,
        "root": "0x" + report.root.hex(),
        "receipt_count": report.receipt_count,
        "report": posted,
        "receipts": [
            {
                "index": i,
                "provider": r.provider,
                "challenge": r.challenge,
                "deadline": r.deadline,
                "answered": r.answered,
                "signature": r.signature,
                "reason": r.reason,
                "latency_ms": r.latency_ms,
                "leaf": "0x" + leaf.hex(),
                "proof": ["0x" + h.hex() for h in proof],
            }
            for i, (r, leaf, proof) in enumerate(zip(records, report.leaves, proofs, strict=True))
        ],
    }
