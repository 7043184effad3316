"""Cross-chain replay: a message delivered on the peer chain, with its committee signatures,
is carried to a third anvil whose bridge has the same addresses (same deployer, same nonces),
the same committee and the same source registered. Its inbox refuses it, and a copy doctored to
name the third chain as its destination is refused too; nothing moves there."""

from __future__ import annotations

import dataclasses

import pytest
from tests.bridge.conftest import HOME, OWNER, PEER, RELAYER, SENDER, TUSD, extra_anvil
from web3 import Web3

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_deploy import (
    BridgeParams,
    deploy_bridge_side,
    deploy_peer_tokens,
    link_route,
)
from tessera.chain.bridge_inbox import BridgeInbox, refusal
from tessera.chain.client import Chain
from tessera.chain.network import Network
from tessera.chain.tokens import PaymentToken
from tessera.errors import BridgeError

THIRD = 31339


@pytest.fixture
def third_chain(bridge, tmp_path):
    with extra_anvil(tmp_path, THIRD) as url:
        w3 = Web3(Web3.HTTPProvider(url))
        deployer = devnet_account(OWNER)
        peer_inbox = bridge.inbox(PEER)
        committee = (peer_inbox.committee(0), list(peer_inbox.weights(0).values()))
        params = BridgeParams(guardian=devnet_account(1).address)
        tokens, _ = deploy_peer_tokens(w3, deployer)
        side, _ = deploy_bridge_side(w3, deployer, tokens["PaymentToken"], False, committee, params)
        network = Network(name="third", chain_id=THIRD, rpc_url=url, contracts={**tokens, **side})
        link_route(Chain(network, deployer), HOME, bridge.network.contracts, params)
        owner = Chain(network, deployer)   # TUSD the third chain's TokenBridge could release
        owner.send(owner.payment_token.functions.mint(side["TokenBridge"], 1_000 * TUSD))
        yield network


def test_message_for_the_peer_is_refused_on_a_third_chain(bridge, third_chain):
    peer_contracts = bridge.net(PEER).contracts
    for name in ("BridgeOutbox", "BridgeInbox", "TokenBridge"):   # the replay's premise
        assert third_chain.contracts[name] == peer_contracts[name]
    sender = devnet_account(SENDER).address
    bridge.send(PEER, SENDER, 5 * TUSD)      # locked on the peer: what can come back there
    relayer = bridge.settle()
    message_id = bridge.send(HOME, SENDER, 5 * TUSD)
    bridge.settle(relayer)
    assert bridge.inbox(PEER).delivered(message_id)
    sent = bridge.outbox(HOME).messages(0, "latest")[-1]
    signatures = relayer.collector.collect(sent.message)
    assert signatures is not None

    third = Chain(third_chain, devnet_account(RELAYER))
    token = PaymentToken(third)
    watched = (sender, third_chain.contracts["TokenBridge"])
    before = [token.balance_of(a) for a in watched]
    with pytest.raises(BridgeError) as refused:
        BridgeInbox(third).deliver(sent.message, sent.payload, signatures)
    assert refusal(refused.value) == "wrong chain"

    doctored = dataclasses.replace(sent.message, destination_chain=THIRD)
    with pytest.raises(BridgeError) as refused:
        BridgeInbox(third).deliver(doctored, sent.payload, signatures)
    assert refusal(refused.value) in ("not a member", "not ascending", "no quorum")
    assert [token.balance_of(a) for a in watched] == before
    assert not BridgeInbox(Chain(third_chain)).delivered(doctored.id)
