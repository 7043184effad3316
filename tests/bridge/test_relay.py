"""The bridge end to end on two anvil nodes: attesters sign confirmed messages, a relayer
carries them with a quorum, TUSD locked on the peer chain is minted on the home chain and
burned there to come back (docs/bridge.md)."""

from __future__ import annotations

from tests.bridge.conftest import HOME, PEER, SENDER, TUSD

from tessera.chain.accounts import devnet_account


def test_tusd_goes_home_and_back(bridge):
    sender = devnet_account(SENDER).address
    peer_before, home_before = bridge.tusd(PEER, sender), bridge.tusd(HOME, sender)
    held_before = bridge.tusd(PEER, bridge.token_bridge(PEER).address)

    out_id = bridge.send(PEER, SENDER, 25 * TUSD)
    relayer = bridge.settle()
    assert bridge.inbox(HOME).delivered(out_id) and not bridge.inbox(HOME).pending(out_id)
    assert bridge.tusd(PEER, sender) == peer_before - 25 * TUSD
    assert bridge.tusd(HOME, sender) == home_before + 25 * TUSD
    assert bridge.tusd(PEER, bridge.token_bridge(PEER).address) == held_before + 25 * TUSD

    back_id = bridge.send(HOME, SENDER, 10 * TUSD)
    bridge.settle(relayer)
    assert bridge.inbox(PEER).delivered(back_id)
    assert bridge.tusd(HOME, sender) == home_before + 15 * TUSD
    assert bridge.tusd(PEER, sender) == peer_before - 15 * TUSD
    # conservation (docs/bridge.md): held on the peer = minted on home - burned on home
    assert bridge.tusd(PEER, bridge.token_bridge(PEER).address) == held_before + 15 * TUSD
    assert relayer.state["open"] == {} and relayer.state["done"] == {"delivered": 2}
