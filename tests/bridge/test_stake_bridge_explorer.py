"""The explorer and the audit over both token bridges (docs/explorer.md, "The bridge"), on the two
real anvil nodes of `bridge_env`: TokenBridge moves TUSD (6 decimals), StakeBridge TSTK (18),
both through the same outbox and inbox. Each transfer row names its token by the bridge that
sent it; conservation is per direction and per token; each lock-mode bridge's `balanceOf` is read
in its own token.

How a rational party would try to get round it, and the test that tries it:
- a stolen quorum releases the peer's locked stake with a stake transfer the home chain never
  sent: the TSTK direction home -> peer breaks and the delivery is named, TUSD's sums are
  untouched (`test_forged_stake_release_and_a_drained_stake_lock_are_caught`);
- the peer StakeBridge's TSTK balance shrinks under what its logs say it holds (here: its
  balance slot overwritten, a stand-in for a token bug or a drain): a shortfall named for the
  StakeBridge, in TSTK; TSTK sent straight to it is over-cover, shown and not a problem (the
  rule TokenBridge has: docs/bridge.md, "Conservation");
- a database indexed without the StakeBridge then read with a network file that names one would
  miss its past stake transfers: refused (`test_a_network_without_stake_bridge_is_as_before`).
"""

from __future__ import annotations

import pytest
from eth_utils import keccak
from fastapi.testclient import TestClient
from tests.bridge.conftest import HOME, PEER, RELAYER, SENDER, TUSD, balance_slot, rpc
from tests.bridge.test_bridge_explorer import hexid, logs_of, rows

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_inbox import sign_attestation
from tessera.chain.client import Chain
from tessera.chain.devnet import BRIDGE_VALIDATORS
from tessera.chain.network import Network
from tessera.chain.token_bridge import StakeBridge
from tessera.chain.tokens import StakeToken
from tessera.errors import IndexerError
from tessera.explorer.audit import audit
from tessera.explorer.bridge_index import bridge_indexers, sync_bridge
from tessera.explorer.db import make_engine
from tessera.explorer.indexer import Indexer
from tessera.explorer.recap import cross_chain_transfers
from tessera.explorer.web import create_app
from tessera.protocol.bridge import KIND_TRANSFER, Message, sort_signatures, transfer_payload

TSTK = 10**18


def index(network: Network, engine) -> None:
    Indexer(Chain(network), engine, confirmations=0).sync()
    sync_bridge(bridge_indexers(network, engine, 0), engine)


def send_stake(bridge, source: int, account: int, amount: int) -> bytes:
    chain = bridge.chain(source, account)
    message_id, _ = StakeBridge(chain).send(PEER if source == HOME else HOME, chain.address, amount)
    return message_id


def sums(report) -> dict:
    return {(d.source, d.destination, d.token): d for d in report.bridge.directions}


def test_stake_and_tusd_transfers_are_indexed_with_their_token(bridge, tmp_path):
    """TSTK each way and TUSD from the peer: each row names its token, with its send and its
    delivery on both chains (checked in the receipts); the audit agrees with both tokens moving,
    sums each token apart and reads each lock-mode bridge's balance in its own token; the pages,
    the API and the demo's recap show the token and its decimals."""
    stake_in = send_stake(bridge, PEER, SENDER, 150 * TSTK)
    tusd_in = bridge.send(PEER, SENDER, 5 * TUSD)
    bridge.settle()
    stake_out = send_stake(bridge, HOME, SENDER, 40 * TSTK)
    bridge.settle()
    engine = make_engine(f"sqlite:///{tmp_path / 'explorer.db'}")
    index(bridge.network, engine)
    found = rows(engine)
    assert len(found) == 3
    for mid, source, destination, token, amount in (
            (stake_in, PEER, HOME, "TSTK", 150 * TSTK), (tusd_in, PEER, HOME, "TUSD", 5 * TUSD),
            (stake_out, HOME, PEER, "TSTK", 40 * TSTK)):
        row = found[hexid(mid)]
        assert (row.token, row.source_chain, row.destination_chain, row.amount, row.received, row.state) == (
            token, source, destination, amount, amount, "delivered")
        assert hexid(mid) in logs_of(bridge, source, row.source_tx)
        assert hexid(mid) in logs_of(bridge, destination, row.delivery_tx)

    report = audit(Chain(bridge.network), engine)
    assert report.agrees, report.problems
    by = sums(report)
    assert (by[(PEER, HOME, "TSTK")].locked, by[(PEER, HOME, "TSTK")].received) == (150 * TSTK, 150 * TSTK)
    assert (by[(HOME, PEER, "TSTK")].locked, by[(HOME, PEER, "TSTK")].received) == (40 * TSTK, 40 * TSTK)
    assert (by[(PEER, HOME, "TUSD")].locked, by[(PEER, HOME, "TUSD")].transfers) == (5 * TUSD, 1)
    assert by[(HOME, PEER, "TUSD")].locked == 0
    sides = {(s.chain_id, s.bridge): s for s in report.bridge.lock_sides}
    assert set(sides) == {(PEER, "TokenBridge"), (PEER, "StakeBridge")}   # the home side mints
    tusd_side, stake_side = sides[(PEER, "TokenBridge")], sides[(PEER, "StakeBridge")]
    assert (tusd_side.token, tusd_side.held_by_logs) == ("TUSD", 5 * TUSD)
    assert (stake_side.token, stake_side.held_by_logs) == ("TSTK", 110 * TSTK)
    assert stake_side.balance_of == StakeToken(bridge.chain(PEER)).balance_of(
        StakeBridge(bridge.chain(PEER)).address) >= 110 * TSTK
    lines = "\n".join(report.bridge.lines())
    assert f"{PEER} -> {HOME} TSTK: locked 150.00 TSTK" in lines
    assert f"{PEER} -> {HOME} TUSD: locked 5.00 TUSD" in lines
    assert report.bridge.to_json()["directions"][0]["token"] == "TUSD"

    client = TestClient(create_app(engine))
    page = client.get("/bridge").text
    assert "150.00 TSTK" in page and "5.00 TUSD" in page and "40.00 TSTK" in page
    api = {t["message_id"]: t for t in client.get("/api/bridge/transfers").json()["transfers"]}
    stake_row = api[hexid(stake_in)]
    assert (stake_row["token"], stake_row["decimals"], stake_row["amount"],
            stake_row["amount_base_units"]) == ("TSTK", 18, "150.00 TSTK", str(150 * TSTK))
    assert (api[hexid(tusd_in)]["token"], api[hexid(tusd_in)]["decimals"]) == ("TUSD", 6)
    only = client.get("/api/bridge/transfers", params={"token": "TSTK"}).json()["transfers"]
    assert {t["message_id"] for t in only} == {hexid(stake_in), hexid(stake_out)}
    assert client.get("/api/bridge/transfers", params={"token": "ETH"}).status_code == 422
    assert client.get("/bridge", params={"token": "<b>"}).status_code == 422
    detail = client.get(f"/bridge/{hexid(stake_in)}").text
    assert "StakeBridge.TransferReceived" in detail and "150.00 TSTK" in detail
    recap = {t["message_id"]: t for t in cross_chain_transfers(engine)}
    assert {t["token"] for t in recap.values()} == {"TSTK", "TUSD"}
    assert recap[hexid(stake_out)]["token"] == "TSTK" and recap[hexid(stake_out)]["amount"] == 40 * TSTK


def test_forged_stake_release_and_a_drained_stake_lock_are_caught(bridge, tmp_path):
    """Stake locked on the peer; TSTK sent straight to the peer StakeBridge (over-cover: fine).
    Then the committee's keys (a stolen quorum) release 30 TSTK of that lock with a stake transfer
    the home chain never sent: the delivery is named, the TSTK direction home -> peer breaks,
    TUSD's does not. Then the lock's balance is cut below its logs: a StakeBridge shortfall."""
    send_stake(bridge, PEER, SENDER, 100 * TSTK)
    bridge.settle()
    peer_stake = StakeBridge(bridge.chain(PEER))
    StakeToken(bridge.chain(PEER, RELAYER)).transfer(peer_stake.address, 1 * TSTK, "a gift to the lock")
    engine = make_engine(f"sqlite:///{tmp_path / 'explorer.db'}")
    index(bridge.network, engine)
    report = audit(Chain(bridge.network), engine)
    assert report.agrees, report.problems
    side = next(s for s in report.bridge.lock_sides if s.bridge == "StakeBridge")
    assert (side.held_by_logs, side.balance_of) == (100 * TSTK, 101 * TSTK)

    thief = devnet_account(RELAYER).address
    payload = transfer_payload(thief, thief)
    inbox = bridge.inbox(PEER, RELAYER)
    forged = Message(source_chain=HOME, source_outbox=bridge.outbox(HOME).address,
                     sender=StakeBridge(bridge.chain(HOME)).address, nonce=10_000, destination_chain=PEER,
                     recipient=peer_stake.address, kind=KIND_TRANSFER, amount=30 * TSTK,
                     payload_hash=keccak(payload))
    signed = {devnet_account(i).address: sign_attestation(devnet_account(i), PEER, inbox.address, forged.id,
                                                          inbox.epoch()) for i in BRIDGE_VALIDATORS}
    before = StakeToken(bridge.chain(PEER)).balance_of(thief)
    assert inbox.deliver(forged, payload, sort_signatures(signed))[0]
    assert StakeToken(bridge.chain(PEER)).balance_of(thief) == before + 30 * TSTK
    index(bridge.network, engine)
    row = rows(engine)[hexid(forged.id)]
    assert (row.token, row.source_tx, row.received) == ("TSTK", None, 30 * TSTK)
    problems = audit(Chain(bridge.network), engine).problems
    assert any(hexid(forged.id) in p and "never sent" in p for p in problems), problems
    assert any(f"conservation {HOME} -> {PEER} (TSTK)" in p for p in problems), problems
    assert not any("(TUSD)" in p or "TokenBridge" in p for p in problems), problems

    # the lock drained under its logs (71 TSTK held, 70 by the logs): cut it to 60
    slot = balance_slot(bridge.net(PEER), peer_stake.token(), peer_stake.address,
                        StakeToken(bridge.chain(PEER)).balance_of(peer_stake.address))
    value = "0x" + (60 * TSTK).to_bytes(32, "big").hex()
    assert rpc(bridge.net(PEER), "anvil_setStorageAt", peer_stake.token(), hex(slot), value) is True
    bridge.mine(PEER, 1)
    problems = audit(Chain(bridge.network), engine).problems
    assert any(f"chain {PEER}: StakeBridge holds {60 * TSTK} TSTK base units" in p
               and f"{10 * TSTK} missing" in p for p in problems), problems
    assert not any("TokenBridge holds" in p for p in problems), problems


def without_stake_bridge(network: Network) -> Network:
    """The network file as written before StakeBridge existed."""
    def strip(contracts: dict) -> dict:
        return {k: v for k, v in contracts.items() if k != "StakeBridge"}
    peers = [p.model_copy(update={"contracts": strip(p.contracts)}) for p in network.peers]
    return network.model_copy(update={"contracts": strip(network.contracts), "peers": peers})


def test_a_network_without_stake_bridge_is_as_before(bridge, tmp_path):
    """A network file that names no StakeBridge: TUSD only, as before (one direction each way,
    one lock side, no token column surprises); the same database read with a network file that
    names a StakeBridge is refused, since its past stake transfers were never indexed."""
    old = without_stake_bridge(bridge.network)
    mid = bridge.send(PEER, SENDER, 3 * TUSD)
    bridge.settle()
    engine = make_engine(f"sqlite:///{tmp_path / 'explorer.db'}")
    index(old, engine)
    assert rows(engine)[hexid(mid)].token == "TUSD"
    report = audit(Chain(old), engine)
    assert report.agrees, report.problems
    assert [(d.source, d.destination, d.token) for d in report.bridge.directions] == [
        (HOME, PEER, "TUSD"), (PEER, HOME, "TUSD")]
    assert [(s.chain_id, s.bridge, s.held_by_logs) for s in report.bridge.lock_sides] == [
        (PEER, "TokenBridge", 3 * TUSD)]
    with pytest.raises(IndexerError, match="StakeBridge"):
        index(bridge.network, engine)


def test_tokens_by_sender_and_per_token_sums_from_logs_alone():
    """The pure rules (derive_bridge): a row's token is the bridge that sent it; a value message
    from a sender that is neither bridge is kept out of every token's sums, and named once
    delivered (sending one only costs gas: the inbox refuses it); a TUSD
    transfer released by the other chain's StakeBridge breaks both tokens' sums."""
    from tessera.explorer.derive_bridge import ChainEvent, directions, problems, transfers
    from tessera.protocol.events import EventRecord

    a_tusd, a_tstk, b_tusd, b_tstk, stranger, person = (f"0x{c * 40}" for c in "abcdef")
    bridges = {1: {a_tusd: "TUSD", a_tstk: "TSTK"}, 2: {b_tusd: "TUSD", b_tstk: "TSTK"}}
    log = iter(range(100))

    def ev(chain: int, contract: str, event: str, **args) -> ChainEvent:
        n = next(log)
        return ChainEvent(chain, EventRecord(n, f"0x{n:064x}", n, f"0x{n:064x}", 0, contract, event, args))

    def sent(mid: str, sender: str, amount: int, recipient: str) -> ChainEvent:
        return ev(1, "BridgeOutbox", "MessageSent", message_id=mid, nonce=int(mid[-1]), destination_chain=2,
                  sender=sender, recipient=recipient, kind=KIND_TRANSFER, amount=amount, payload="0x")

    junk, tusd, stake = ("0x" + str(i) * 64 for i in (1, 2, 3))
    events = [sent(junk, stranger, 7, b_tusd),
              sent(tusd, a_tusd, 5, b_tusd),
              ev(1, "TokenBridge", "TransferSent", message_id=tusd, sender=person, destination_chain=2,
                 to=person, amount=5),
              sent(stake, a_tstk, 9 * TSTK, b_tstk),
              ev(1, "StakeBridge", "TransferSent", message_id=stake, sender=person, destination_chain=2,
                 to=person, amount=9 * TSTK)]
    rows_ = transfers(events, bridges)
    assert {m: r.token for m, r in rows_.items()} == {junk: None, tusd: "TUSD", stake: "TSTK"}
    # undelivered (the inbox refuses value from anyone but the bridges): costs gas, breaks nothing
    assert problems(events, rows_, {}, bridges) == []
    delivered_junk = [ev(2, "BridgeInbox", "MessageDelivered", message_id=junk, source_chain=1,
                         recipient=b_tusd, kind=KIND_TRANSFER, amount=7)]
    found = problems(events + delivered_junk, transfers(events + delivered_junk, bridges), {}, bridges)
    assert len(found) == 1 and junk in found[0] and "neither the TokenBridge nor the StakeBridge" in found[0]
    sums = directions(events, rows_, bridges)
    assert list(sums) == [(1, 2, "TUSD"), (1, 2, "TSTK"), (2, 1, "TUSD"), (2, 1, "TSTK")]
    assert (sums[(1, 2, "TUSD")].locked, sums[(1, 2, "TUSD")].in_flight) == (5, 5)
    assert (sums[(1, 2, "TSTK")].locked, sums[(1, 2, "TSTK")].in_flight) == (9 * TSTK, 9 * TSTK)

    # the TUSD transfer delivered to, and released by, chain 2's StakeBridge (a misrouted peer)
    events += [ev(2, "BridgeInbox", "MessageDelivered", message_id=tusd, source_chain=1, recipient=b_tusd,
                  kind=KIND_TRANSFER, amount=5),
               ev(2, "StakeBridge", "TransferReceived", message_id=tusd, source_chain=1, to=person, amount=5)]
    rows_ = transfers(events, bridges)
    found = problems(events, rows_, {}, bridges)
    assert any("conservation 1 -> 2 (TUSD): locked 5 != received 0" in p for p in found), found
    assert any("conservation 1 -> 2 (TSTK)" in p and "+5 released without a lock" in p for p in found), found
