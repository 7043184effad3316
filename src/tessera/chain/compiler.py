"""Compile the Vyper contracts, caching results by the hash of every source involved.

Search paths: the contracts folder and the site-packages folder that holds snekmate. The shared
interfaces (`contracts/interfaces/*.vyi`) are imported relatively (`from .interfaces import ...`),
so they resolve from the importing file wherever the contracts are compiled from (titanoboa
included); they are part of the cache key like every other source.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import vyper
from vyper.compiler import compile_from_file_input
from vyper.compiler.input_bundle import FilesystemInputBundle

from tessera.files import write_atomic

CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "contracts"
CONTRACT_NAMES = ("StakeToken", "PaymentToken", "ProviderRegistry", "Market", "Uptime",
                  "Validators", "Probes", "Verification", "Settlement", "HardwareReports",
                  "Timelock", "AgentBudget")
# The bridge's contracts (docs/bridge.md): deployed only where a network spans two chains; the
# Hyperlane dispatcher only where a source sends through a Hyperlane Mailbox; the forgery slasher
# on the home chain of bridges deployed since it existed, and so is BridgeOrders (an order funded
# from a peer chain in one message).
BRIDGE_CONTRACT_NAMES = ("BridgeOutbox", "BridgeInbox", "TokenBridge")
OPTIONAL_CONTRACT_NAMES = ("HyperlaneDispatcher", "ForgerySlasher", "BridgeOrders")
# Names in network files for a second instance of a contract: StakeBridge is a TokenBridge over
# the stake token (docs/bridge.md, "Stake on another chain"); networks deployed before it lack it.
CONTRACT_ALIASES = {"StakeBridge": "TokenBridge"}


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list
    bytecode: str


def _snekmate_root() -> Path:
    spec = importlib.util.find_spec("snekmate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("snekmate is not installed: run the project's setup script")
    return Path(list(spec.submodule_search_locations)[0]).parent


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tessera" / "vyper"


def _sources_digest() -> str:
    digest = hashlib.sha256(vyper.__version__.encode())
    roots = [CONTRACTS_DIR, _snekmate_root() / "snekmate"]
    for root in roots:
        for path in sorted(root.rglob("*.vy*")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:24]


def compile_contract(name: str) -> Artifact:
    """Return the ABI and deploy bytecode of contract `name` (or of the contract an alias names),
    compiling only on a cache miss."""
    known_names = (CONTRACT_NAMES + BRIDGE_CONTRACT_NAMES + OPTIONAL_CONTRACT_NAMES
                   + tuple(CONTRACT_ALIASES))
    if name not in known_names:
        known = ", ".join(known_names)
        raise ValueError(f"unknown contract {name!r}; known: {known}")
    source = CONTRACT_ALIASES.get(name, name)
    cache_file = _cache_dir() / _sources_digest() / f"{source}.json"
    if cache_file.exists():
        cached = json.loads(cache_file.read_text())
        return Artifact(name, cached["abi"], cached["bytecode"])
    bundle = FilesystemInputBundle([CONTRACTS_DIR, _snekmate_root()])
    file_input = bundle.load_file(CONTRACTS_DIR / f"{source}.vy")
    out = compile_from_file_input(file_input, input_bundle=bundle, output_formats=["abi", "bytecode"])
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cache_file, json.dumps({"abi": out["abi"], "bytecode": out["bytecode"]}))
    return Artifact(name, out["abi"], out["bytecode"])
