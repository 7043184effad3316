"""The stake route's and the forgery slash's gas, for bench/crosschain.py (issue 14): measured on
the same devnet after its latency phase, with the genesis committee (3 validators, all
signing), before the gas phase rotates the inboxes to fresh keys.

- `stake`: StakeBridge.send on the peer (lock) and at home (burn), and the deliveries they
  cause (a mint of TSTK at home, an unlock on the peer), 3 signatures each;
- `forgery`: prove_forgery on the home outbox (the slash runs in the same transaction), on the
  peer outbox (the report becomes the outbox's own message), and the report's delivery at home
  (the slash), each taking a validator's whole stake.
"""

from __future__ import annotations

from eth_account.signers.local import LocalAccount

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_inbox import BridgeInbox, sign_attestation
from tessera.chain.bridge_outbox import BridgeOutbox, SentMessage
from tessera.chain.client import Chain
from tessera.chain.devnet import BRIDGE_VALIDATORS, DEVNET_CHAIN_ID, PEER_CHAIN_ID
from tessera.chain.forgery_slasher import ForgerySlasher
from tessera.chain.network import Network
from tessera.chain.token_bridge import StakeBridge
from tessera.protocol.bridge import Message, sort_signatures
from tessera.protocol.money import STAKE_DECIMALS

HOME, PEER = DEVNET_CHAIN_ID, PEER_CHAIN_ID
TSTK = 10**STAKE_DECIMALS
SENDER, PROVER = 5, 6


def _deliver(network: Network, payer: LocalAccount, sent: SentMessage,
             signers: list[LocalAccount]) -> int:
    m = sent.message
    inbox = BridgeInbox(Chain(network.chain(m.destination_chain), payer))
    epoch = inbox.epoch()
    signed = {a.address: sign_attestation(a, m.destination_chain, inbox.address, m.id, epoch)
              for a in signers}
    delivered, receipt = inbox.deliver(m, sent.payload, sort_signatures(signed))
    assert delivered, "a stake transfer under the stake threshold was queued"
    return receipt["gasUsed"]


def _stake_send(network: Network, source: int, amount: int) -> tuple[int, SentMessage]:
    chain = Chain(network.chain(source), devnet_account(SENDER))
    destination = HOME if source == PEER else PEER
    _, receipts = StakeBridge(chain).send(destination, chain.address, amount)
    return receipts[-1]["gasUsed"], BridgeOutbox(chain).sent_in(receipts[-1])[0]


def stake_and_forgery_gas(network: Network, payer: LocalAccount) -> dict:
    """Gas of the stake route and of a forgery's slash (see the module docstring)."""
    committee = [devnet_account(i) for i in BRIDGE_VALIDATORS]
    lock_gas, to_home = _stake_send(network, PEER, 100 * TSTK)
    mint_gas = _deliver(network, payer, to_home, committee)
    burn_gas, to_peer = _stake_send(network, HOME, 40 * TSTK)
    unlock_gas = _deliver(network, payer, to_peer, committee)

    def forged(source: int, destination: int) -> tuple[Message, int]:
        outbox = BridgeOutbox(Chain(network.chain(source)))
        m = Message(source_chain=source, source_outbox=outbox.address,
                    sender=devnet_account(SENDER).address, nonce=outbox.count() + 1_000,
                    destination_chain=destination, recipient=devnet_account(SENDER).address,
                    kind=1, amount=TSTK, payload_hash=b"\x99" * 32)
        return m, BridgeInbox(Chain(network.chain(destination))).epoch()

    slasher = ForgerySlasher(Chain(network))
    at_home, epoch = forged(HOME, PEER)
    peer_inbox = BridgeInbox(Chain(network.chain(PEER)))
    _, home_receipt = BridgeOutbox(Chain(network, devnet_account(PROVER))).prove_forgery_receipt(
        at_home, epoch, sign_attestation(committee[0], PEER, peer_inbox.address, at_home.id, epoch))
    [local] = slasher.slashes_in(home_receipt)
    on_peer, epoch = forged(PEER, HOME)
    home_inbox = BridgeInbox(Chain(network))
    prover = BridgeOutbox(Chain(network.chain(PEER), devnet_account(PROVER)))
    _, peer_receipt = prover.prove_forgery_receipt(
        on_peer, epoch, sign_attestation(committee[1], HOME, home_inbox.address, on_peer.id, epoch))
    [report] = prover.sent_in(peer_receipt)
    report_gas = _deliver(network, payer, report, committee)
    assert slasher.slashed(PEER, committee[1].address, on_peer.id, epoch)
    return {
        "what": "receipts' gasUsed on anvil, 3 signatures (the genesis committee)",
        "stake": {"StakeBridge.send lock (on peer)": lock_gas,
                  "deliver + mint TSTK (on home)": mint_gas,
                  "StakeBridge.send burn (on home)": burn_gas,
                  "deliver + unlock TSTK (on peer)": unlock_gas},
        "forgery": {"prove_forgery on home, slash in the same tx": home_receipt["gasUsed"],
                    "prove_forgery on peer, report sent": peer_receipt["gasUsed"],
                    "deliver the report on home, slash": report_gas,
                    "taken_tstk": local["taken"] // TSTK,
                    "note": "each slash takes a validator's whole stake (100 TSTK on the "
                            "devnet): 10 % to the prover, the rest to the treasury"},
    }
