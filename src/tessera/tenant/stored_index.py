"""Where and how the tenant keeps a compact index of chain events between runs (the reliability
book, the offer listings): one JSON file per network and contract under $TESSERA_HOME, stamped
with what it was made for and the block (and its hash) it is final up to. A file that is
missing, unreadable, made for something else, or whose block a reorg removed is rebuilt from
the deploy block, and the caller is told why."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tessera.chain.accounts import tessera_home
from tessera.chain.client import Chain
from tessera.chain.events import EventReader
from tessera.files import write_atomic


def index_file(chain: Chain, folder: str, contract: str, home: Path | None = None) -> Path:
    """$TESSERA_HOME/<folder>/<network>-<chain id>-<contract address>.json."""
    network = chain.network
    address = network.address(contract).lower()
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in network.name)[:64]
    return (home or tessera_home()) / folder / f"{safe_name}-{network.chain_id}-{address}.json"


def read_index(path: Path, identity: dict, reader: EventReader, field: str,
               decode: Callable[[Any], Any]) -> tuple[Any, int, str | None, str | None]:
    """(decoded `field`, block, block hash, why not) of the stored index; the value is None when
    it must be rebuilt, with the reason (None, and no reason, when there is no file yet)."""
    if not path.exists():
        return None, 0, None, None
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        for key, want in identity.items():
            if raw.get(key) != want:
                return None, 0, None, (f"it was made for {key} {raw.get(key)!r}, "
                                       f"this network has {want!r}")
        value = decode(raw[field])
        block, block_hash = int(raw["block"]), str(raw["block_hash"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, 0, None, f"it is unreadable ({type(exc).__name__}: {str(exc)[:120]})"
    found = reader.block(block)
    if found is None or found[0] != block_hash:
        return None, 0, None, f"block {block} is no longer the chain's (a reorg)"
    return value, block, block_hash, None


def write_index(path: Path, identity: dict, block: int, block_hash: str, field: str,
                encoded: Any) -> None:
    state = {**identity, "block": block, "block_hash": block_hash, field: encoded}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(state, separators=(",", ":")))
