"""A reorg on the source chain (evm_snapshot, send, evm_revert): a message removed before its
confirmations is never attested nor delivered; a signature on one removed after them (a reorg
deeper than the attester's confirmations) is withdrawn, and the range is read again."""

from __future__ import annotations

from tests.bridge.conftest import CONFIRMATIONS, HOME, PEER, SENDER, TUSD, rpc

from tessera.chain.accounts import devnet_account
from tessera.logs import EventLog
from tessera.validator.bridge_attester import BridgeAttester


def test_message_reorged_out_before_confirmations_is_never_attested(bridge):
    sender = devnet_account(SENDER).address
    home_before, peer_before = bridge.tusd(HOME, sender), bridge.tusd(PEER, sender)
    relayer = bridge.relayer()
    fork = rpc(bridge.net(PEER), "evm_snapshot")
    gone = bridge.send(PEER, SENDER, 7 * TUSD)
    bridge.mine(PEER, CONFIRMATIONS - 1)        # one block short of confirmed
    bridge.attest()
    relayer.poll_once()
    assert relayer.state["open"] == {}
    assert all(a.store.count() == 0 for a in bridge.attesters.values())

    assert rpc(bridge.net(PEER), "evm_revert", fork)   # the reorg: the send is gone
    assert bridge.tusd(PEER, sender) == peer_before
    bridge.settle(relayer)
    assert all(a.store.count() == 0 for a in bridge.attesters.values())
    assert not bridge.inbox(HOME).delivered(gone)
    assert bridge.tusd(HOME, sender) == home_before

    # the nonce the reorg freed carries another message, which is attested and delivered
    kept = bridge.send(PEER, SENDER, 3 * TUSD)
    assert kept != gone
    bridge.settle(relayer)
    assert bridge.inbox(HOME).delivered(kept) and not bridge.inbox(HOME).delivered(gone)
    assert bridge.tusd(HOME, sender) == home_before + 3 * TUSD
    assert bridge.attesters[7].attestation(PEER, 0)["message_id"] == "0x" + kept.hex()


def test_reorg_deeper_than_confirmations_withdraws_the_signature(bridge, tmp_path):
    """An attester told to trust 0 confirmations signs at once; when the reorg removes the
    block it read, it withdraws what the outbox no longer stores (a forgery to be)."""
    hasty = BridgeAttester(devnet_account(7), bridge.network, tmp_path / "hasty",
                           EventLog("hasty"), confirmations=0)
    try:
        hasty.poll_once()
        fork = rpc(bridge.net(PEER), "evm_snapshot")
        gone = bridge.send(PEER, SENDER, 7 * TUSD)
        hasty.poll_once()
        assert hasty.attestation(PEER, 0)["message_id"] == "0x" + gone.hex()

        assert rpc(bridge.net(PEER), "evm_revert", fork)
        bridge.mine(PEER, 3)                       # the chain goes on without it
        hasty.poll_once()
        assert hasty.attestation(PEER, 0) is None

        kept = bridge.send(PEER, SENDER, 2 * TUSD)   # same nonce, another message
        hasty.poll_once()
        assert hasty.attestation(PEER, 0)["message_id"] == "0x" + kept.hex()
    finally:
        hasty.close()
