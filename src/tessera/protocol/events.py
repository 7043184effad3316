"""An event of Tessera's contracts as a plain, JSON-safe record: what figures are computed from.

Reading and decoding logs from a chain is chain/events.py; this is the pure record and its
canonical JSON forms."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class EventRecord:
    block_number: int
    block_hash: str
    timestamp: int
    tx_hash: str
    log_index: int
    contract: str
    event: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def order(self) -> tuple[int, int]:
        return (self.block_number, self.log_index)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> EventRecord:
        return cls(**raw)


def hex0x(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def json_safe(value: Any) -> Any:
    """ints stay Python ints, bytes become 0x-hex, addresses stay checksummed strings."""
    if isinstance(value, bool | int | str) or value is None:
        return value if not isinstance(value, bool) else bool(value)
    if isinstance(value, bytes | bytearray):
        return hex0x(value)
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    raise TypeError(f"cannot make {type(value).__name__} JSON-safe")


def args_json(args: dict) -> str:
    """Canonical JSON text of an event's args (sorted keys): the form stored in the database."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"))
