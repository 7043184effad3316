"""Review 7 (outside attacker): making `tessera audit` disagree for ever, cheaply, on the two
anvil nodes of `bridge_env` (src/tessera/explorer/audit_bridge.py, derive_bridge.py).

Finding (fixed, the test below was the attack):
- finding 3: anyone calls the peer outbox's public `send` once with kind 2 (a bounce's kind),
  no value, to any recipient: the audit reported "a bounce no TransferCancelled sent" for ever
  (the rule did not ask whether a token bridge sent it), for one transaction's gas.

Defences that hold (passing tests):
- a forgery proven on each chain, its slash carried out at home (directly and by a report
  message from the peer outbox): the audit still agrees (the report is a value-less message of
  no token; the slash's TSTK moves Validators -> ForgerySlasher -> prover and treasury).
"""

from __future__ import annotations

from tests.bridge.conftest import HOME, OTHER, PEER, RELAYER
from tests.bridge.test_bridge_explorer import hexid

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_inbox import sign_attestation
from tessera.chain.bridge_outbox import BridgeOutbox
from tessera.chain.client import Chain
from tessera.chain.devnet import BRIDGE_VALIDATORS
from tessera.chain.network import Network
from tessera.explorer.audit import audit
from tessera.explorer.bridge_index import bridge_indexers, sync_bridge
from tessera.explorer.db import make_engine
from tessera.explorer.indexer import Indexer
from tessera.protocol.bridge import KIND_BOUNCE, Message


def index(network: Network, engine) -> None:
    Indexer(Chain(network), engine, confirmations=0).sync()
    sync_bridge(bridge_indexers(network, engine, 0), engine)


def clean_audit(bridge, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'explorer.db'}")
    index(bridge.network, engine)
    return engine, audit(Chain(bridge.network), engine)


def test_a_strangers_bounce_kind_message_does_not_break_the_audit(bridge, tmp_path):
    """Finding 3 (fixed): the "bounce without a cancellation" rule applies to token bridges'
    bounces only."""
    engine, report = clean_audit(bridge, tmp_path)
    assert report.agrees, report.problems
    stranger = bridge.chain(PEER, RELAYER)
    receipt = stranger.send(stranger.contract("BridgeOutbox").functions.send(
        HOME, stranger.address, KIND_BOUNCE, 0, b""))
    [junk] = bridge.outbox(PEER).sent_in(receipt)
    bridge.settle()   # attested; the relayer does not carry it (not one of the bridge's routes)
    index(bridge.network, engine)
    problems = audit(Chain(bridge.network), engine).problems
    assert not any(hexid(junk.message.id) in p for p in problems), problems


def test_forgery_slashes_on_both_chains_leave_the_audit_agreeing(bridge, tmp_path):
    """Validator 7 forges toward home (proven on the peer: a report message carried home),
    validator 8 toward the peer (proven at home: slashed in the transaction); the audit's money
    and bridge parts still agree afterwards."""
    prover = OTHER
    f7, f8 = (devnet_account(i) for i in BRIDGE_VALIDATORS[:2])
    home_inbox, peer_inbox = bridge.inbox(HOME), bridge.inbox(PEER)
    to_home = Message(source_chain=PEER, source_outbox=bridge.outbox(PEER).address,
                      sender=f7.address, nonce=80_000, destination_chain=HOME, recipient=f7.address,
                      kind=1, amount=5, payload_hash=b"\x66" * 32)
    to_peer = Message(source_chain=HOME, source_outbox=bridge.outbox(HOME).address,
                      sender=f8.address, nonce=80_000, destination_chain=PEER, recipient=f8.address,
                      kind=1, amount=5, payload_hash=b"\x77" * 32)
    BridgeOutbox(bridge.chain(PEER, prover)).prove_forgery(
        to_home, home_inbox.epoch(),
        sign_attestation(f7, HOME, home_inbox.address, to_home.id, home_inbox.epoch()))
    BridgeOutbox(bridge.chain(HOME, prover)).prove_forgery(
        to_peer, peer_inbox.epoch(),
        sign_attestation(f8, PEER, peer_inbox.address, to_peer.id, peer_inbox.epoch()))
    relayer = bridge.settle()
    assert relayer.state["open"] == {}
    _, report = clean_audit(bridge, tmp_path)
    assert report.agrees, report.problems
