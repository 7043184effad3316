"""The network file names peer chains; a one-chain file loads, and is written, as before."""

from __future__ import annotations

import json

import pytest

from tessera.chain.compiler import CONTRACT_NAMES
from tessera.chain.network import Network, load_network, save_network
from tessera.errors import NetworkError

HOME = {name: "0x" + f"{i + 1:040x}" for i, name in enumerate(CONTRACT_NAMES)}
BRIDGE = {"BridgeOutbox": "0x" + "a" * 40, "BridgeInbox": "0x" + "b" * 40,
          "TokenBridge": "0x" + "c" * 40}
PEER = {"name": "peer", "chain_id": 31338, "rpc_url": "http://127.0.0.1:8546",
        "contracts": {"PaymentToken": "0x" + "d" * 40, **BRIDGE}}


def write(tmp_path, doc) -> object:
    path = tmp_path / "network.json"
    path.write_text(json.dumps(doc))
    return path


def one_chain() -> dict:
    return {"name": "devnet", "chain_id": 31337, "rpc_url": "http://127.0.0.1:8545",
            "contracts": dict(HOME), "deploy_block": 1}


def test_one_chain_file_loads_and_is_written_unchanged(tmp_path):
    network = load_network(write(tmp_path, one_chain()))
    assert network.peers == [] and [n.chain_id for n in network.chains()] == [31337]
    save_network(network, tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == one_chain()


def test_two_chain_file_names_the_peer(tmp_path):
    doc = {**one_chain(), "contracts": {**HOME, **BRIDGE}, "peers": [PEER]}
    network = load_network(write(tmp_path, doc))
    peer = network.peer(31338)
    assert isinstance(peer, Network) and peer.address("BridgeInbox") == BRIDGE["BridgeInbox"]
    assert [n.chain_id for n in network.chains()] == [31337, 31338]
    with pytest.raises(NetworkError, match="no peer chain 5"):
        network.chain(5)


@pytest.mark.parametrize("change,message", [
    (lambda d: d["peers"][0]["contracts"].pop("BridgeInbox"), "peer chain 'peer' .* BridgeInbox"),
    (lambda d: d["contracts"].pop("TokenBridge"), "home chain's bridge addresses for: TokenBridge"),
    (lambda d: d["peers"][0].update(chain_id=31337), "chain ids must differ"),
    (lambda d: d["peers"][0].update(chain_id=-1), "peers.0.chain_id"),
    (lambda d: d["peers"][0].update(extra=1), "peers.0.extra"),
    (lambda d: d.update(peers={"a": 1}), "peers"),
])
def test_bad_peers_are_named(tmp_path, change, message):
    doc = json.loads(json.dumps({**one_chain(), "contracts": {**HOME, **BRIDGE}, "peers": [PEER]}))
    change(doc)
    with pytest.raises(NetworkError, match=message):
        load_network(write(tmp_path, doc))
