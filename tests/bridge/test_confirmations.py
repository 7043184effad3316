"""How deep a bridge message must be before it is signed or carried: the devnet's default only
on the devnet's own chains; anywhere else the operator must name the source chain's finality.
(A red-team run showed the cost of a too-shallow default: a reorg past it kept a delivered
transfer on the destination with nothing locked on the source, and made an honest validator's
signature a provable forgery.)"""

from __future__ import annotations

import pytest

from tessera.chain.devnet import DEVNET_CHAIN_ID, PEER_CHAIN_ID, bridge_confirmations
from tessera.chain.network import Network, PeerChain
from tessera.errors import BridgeError
from tessera.protocol.bridge import DEFAULT_CONFIRMATIONS


def network(home: int, peer: int) -> Network:
    return Network(name="n", chain_id=home, rpc_url="http://127.0.0.1:1", contracts={},
                   peers=[PeerChain(name="p", chain_id=peer, rpc_url="http://127.0.0.1:2",
                                    contracts={})])


def test_the_devnet_default_applies_on_the_devnet_only():
    assert bridge_confirmations(network(DEVNET_CHAIN_ID, PEER_CHAIN_ID), None) == DEFAULT_CONFIRMATIONS
    assert bridge_confirmations(network(1, 10), 64) == 64
    with pytest.raises(BridgeError, match="finality"):
        bridge_confirmations(network(1, 10), None)
    with pytest.raises(BridgeError, match="finality"):
        bridge_confirmations(network(DEVNET_CHAIN_ID, 10), None)
