"""The network file: where a chain is and where Tessera's contracts live on it.

A network may also name peer chains (`peers`): second EVM chains joined to it by the bridge
(docs/bridge.md). The home chain keeps the market and every registry; a peer holds tokens and
the bridge's three contracts. A one-chain network file has no `peers` and loads unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tessera.chain.accounts import tessera_home
from tessera.chain.compiler import BRIDGE_CONTRACT_NAMES, CONTRACT_NAMES
from tessera.errors import NetworkError
from tessera.files import write_atomic

# What a peer chain must name: its TUSD (locked there, minted on the home chain) and the bridge.
# A peer deployed by chain/bridge_deploy.py also names its "Timelock" (the bridge's owner there);
# it is not required, so that files written before the peer Timelock existed still load.
PEER_CONTRACT_NAMES = ("PaymentToken", *BRIDGE_CONTRACT_NAMES)


class PeerChain(BaseModel):
    """A second chain joined to the home chain by the bridge."""

    model_config = ConfigDict(extra="forbid")

    name: str
    chain_id: int = Field(gt=0)
    rpc_url: str
    contracts: dict[str, str]
    deploy_block: int = Field(0, ge=0)


class Network(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    chain_id: int
    rpc_url: str
    contracts: dict[str, str]
    deploy_block: int = 0
    peers: list[PeerChain] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_chains(self) -> Network:
        ids = [self.chain_id, *(p.chain_id for p in self.peers)]
        if len(set(ids)) != len(ids):
            raise ValueError(f"chain ids must differ between the home chain and its peers, got {ids}")
        return self

    def address(self, contract: str) -> str:
        try:
            return self.contracts[contract]
        except KeyError:
            raise NetworkError(f"network {self.name!r} has no {contract} address") from None

    def peer(self, chain_id: int) -> Network:
        """Peer chain `chain_id` as a Network of its own (what `Chain` connects to)."""
        for peer in self.peers:
            if peer.chain_id == chain_id:
                return Network(name=peer.name, chain_id=peer.chain_id, rpc_url=peer.rpc_url,
                               contracts=dict(peer.contracts), deploy_block=peer.deploy_block)
        known = ", ".join(str(p.chain_id) for p in self.peers) or "none"
        raise NetworkError(f"network {self.name!r} names no peer chain {chain_id} (peers: {known})")

    def chains(self) -> list[Network]:
        """The home chain (without its peers) then each peer, each as a Network."""
        home = self.model_copy(update={"peers": []})
        return [home, *(self.peer(p.chain_id) for p in self.peers)]

    def chain(self, chain_id: int) -> Network:
        """The home chain or one of its peers, by chain id."""
        if chain_id == self.chain_id:
            return self.model_copy(update={"peers": []})
        return self.peer(chain_id)


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
    if network.peers:
        missing = [name for name in BRIDGE_CONTRACT_NAMES if name not in network.contracts]
        if missing:
            raise NetworkError(f"network file {path} names peer chains but lacks the home "
                               f"chain's bridge addresses for: {', '.join(missing)}")
    for peer in network.peers:
        missing = [name for name in PEER_CONTRACT_NAMES if name not in peer.contracts]
        if missing:
            raise NetworkError(f"network file {path}: peer chain {peer.name!r} ({peer.chain_id}) "
                               f"lacks addresses for: {', '.join(missing)}")
    return network


def save_network(network: Network, path: Path) -> None:
    """Write `network` to `path`; a one-chain network is written as before peers existed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    exclude = None if network.peers else {"peers"}
    write_atomic(path, network.model_dump_json(indent=2, exclude=exclude))
