"""The network file: where a chain is and where Tessera's contracts live on it."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from tessera.chain.accounts import tessera_home
from tessera.chain.compiler import CONTRACT_NAMES
from tessera.errors import NetworkError
from tessera.files import write_atomic


class Network(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    chain_id: int
    rpc_url: str
    contracts: dict[str, str]
    deploy_block: int = 0

    def address(self, contract: str) -> str:
        try:
            return self.contracts[contract]
        except KeyError:
            raise NetworkError(f"network {self.name!r} has no {contract} address") from None


def devnet_network_file() -> Path:
    """Where `tessera devnet up` writes the local chain's network file. Every command that is
    given no --network (or no `network` in its config) uses it: this is that default's one home."""
    return tessera_home() / "devnet" / "network.json"


def load_network(path: Path | None) -> Network:
    """The network file at `path`, or the local devnet's when `path` is None."""
    path = Path(path) if path is not None else devnet_network_file()
    if not path.exists():
        raise NetworkError(
            f"network file {path} not found: start a local chain with `tessera devnet up` "
            "or pass --network PATH"
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NetworkError(f"network file {path} is not valid JSON: {exc}") from None
    try:
        network = Network.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise NetworkError(f"network file {path} is invalid: {problems}") from None
    missing = [name for name in CONTRACT_NAMES if name not in network.contracts]
    if missing:
        raise NetworkError(f"network file {path} lacks addresses for: {', '.join(missing)}")
    return network


def save_network(network: Network, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, network.model_dump_json(indent=2))
