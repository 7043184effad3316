"""The validator's liveness duty in process (validator/liveness.py) against a real anvil: what
`POST /liveness/beat` refuses and why (never a 500), the receipt it signs, the beats it keeps
across a restart, the one report per epoch (never twice, a lost save included), and the
answer to an inclusion challenge. Chain time is moved block by block (evm_setNextBlockTimestamp),
so the module waits for nothing. The daemons end to end: tests/e2e/test_liveness.py."""

from __future__ import annotations

import io
import time

import pytest
from eth_account import Account
from eth_keys.constants import SECPK1_N
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.registry import ProviderRegistry
from tessera.chain.tokens import StakeToken
from tessera.chain.uptime import Uptime
from tessera.http_limits import RequestGuard
from tessera.logs import EventLog
from tessera.protocol import liveness, messages
from tessera.validator.api import STREAMED
from tessera.validator.liveness import REFRESH_EVERY_S, LivenessDuty, liveness_routes
from tessera.validator.stake import ensure_validator

VALIDATOR, PROVIDER, IDLE, CHALLENGER = 7, 3, 4, 9
STAKE = 100 * 10**18


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("liveness")
    with private_devnet(home) as (_, network):
        for account in (PROVIDER, IDLE):
            ProviderRegistry(Chain(network, devnet_account(account))).register(
                STAKE, "CPU", 1, 1024, 1, "http://127.0.0.1:9", 1)
        chain = Chain(network, devnet_account(VALIDATOR))
        ensure_validator(chain, STAKE, "http://127.0.0.1:9")
        yield home, network, chain


def make_duty(world, open_epochs: bool = True) -> tuple[LivenessDuty, io.StringIO, TestClient]:
    home, _, chain = world
    stream = io.StringIO()
    duty = LivenessDuty(chain, devnet_account(VALIDATOR), home / "state", EventLog("t", stream),
                        CollectorRegistry(), open_epochs=open_epochs, open_within_s=0)
    duty.prepare()
    app = FastAPI()
    app.add_middleware(RequestGuard, streamed=STREAMED)
    app.include_router(liveness_routes(duty))
    return duty, stream, TestClient(app, raise_server_exceptions=False)


def next_epoch(uptime: Uptime) -> int:
    epoch = uptime.current_epoch() + 1
    w3 = uptime.chain.w3
    w3.provider.make_request("evm_setNextBlockTimestamp", [uptime.genesis() + epoch * 60])
    w3.provider.make_request("evm_mine", [])
    return epoch


def beat_body(account, uptime: Uptime, epoch: int, seed: bytes, provider: str | None = None) -> dict:
    signature = liveness.sign_beat(account, uptime.chain.network.chain_id, uptime.address,
                                   epoch, seed)
    return {"provider": provider or account.address, "epoch": epoch, "signature": signature}


def high_s(signature: str) -> str:
    """The malleated twin of a signature: the same signer to eth_account, refused on chain."""
    raw = bytes.fromhex(signature[2:])
    s = SECPK1_N - int.from_bytes(raw[32:64], "big")
    return "0x" + (raw[:32] + s.to_bytes(32, "big") + bytes([55 - raw[64]])).hex()


def test_junk_beats_get_4xx_and_a_good_one_a_receipt_kept_across_a_restart(world):
    _, network, chain = world
    duty, _, client = make_duty(world, open_epochs=False)
    uptime = duty.uptime
    epoch = next_epoch(uptime)
    duty.poll_once()
    provider = devnet_account(PROVIDER)

    def post(body, **kw):
        return client.post("/liveness/beat", json=body, **kw)

    early = post(beat_body(provider, uptime, epoch, bytes(32)))
    assert early.status_code == 425 and "seed is not set" in early.json()["detail"]
    Uptime(Chain(network, devnet_account(IDLE))).open_epoch()
    time.sleep(REFRESH_EVERY_S)   # the duty reads a zero seed again at most this often
    seed = uptime.seed(epoch)
    assert seed != bytes(32)
    good = beat_body(provider, uptime, epoch, seed)
    stranger = Account.create()
    refusals = [
        (post({"provider": provider.address}), 422, "not a SignedBeat"),
        (client.post("/liveness/beat", content=b"{not json"), 422, "SignedBeat"),
        (client.post("/liveness/beat", content=b"[" * 5000), 413, "larger than"),
        (post({**good, "epoch": epoch + 1}), 409, "current epoch"),
        (post({**good, "epoch": epoch - 1}), 409, "current epoch"),
        (post(beat_body(provider, uptime, epoch, b"\x01" * 32)), 403, "bad signature"),
        (post(beat_body(stranger, uptime, epoch, seed, provider.address)), 403, "bad signature"),
        (post({**good, "signature": high_s(good["signature"])}), 403, "upper half"),
        (post(beat_body(stranger, uptime, epoch, seed)), 403, "not registered"),
        (post({**good, "extra": 1}), 422, "extra"),
    ]
    for reply, status, words in refusals:
        assert (reply.status_code, words in reply.text) == (status, True), reply.text
    reply = post(good)
    assert reply.status_code == 200, reply.text
    receipt = liveness.BeatReceipt.model_validate(reply.json())
    typed = liveness.receipt_typed_data(network.chain_id, uptime.address, provider.address,
                                        chain.address, epoch)
    assert messages.recover(typed, receipt.signature) == chain.address
    assert (receipt.provider, receipt.validator, receipt.epoch) == \
        (provider.address, chain.address, epoch)
    assert post(good).json() == reply.json()                 # a repeat: the same receipt
    duty.close()

    again, _, client = make_duty(world)                      # a restart: the beat is kept
    assert again.store.providers(epoch) == [provider.address]
    assert client.get(f"/liveness/{epoch}").json()["providers"] == [provider.address]
    again.close()


def test_one_report_per_epoch_is_final_and_an_inclusion_challenge_is_answered(world):
    _, network, chain = world
    duty, log, client = make_duty(world)
    uptime = duty.uptime
    epoch = next_epoch(uptime)
    duty.poll_once()                                         # sees the epoch
    duty.poll_once()                                         # opens it (open_within_s=0)
    seed = uptime.seed(epoch)
    assert seed != bytes(32) and "epoch-opened" in log.getvalue()
    provider = devnet_account(PROVIDER)
    assert client.post("/liveness/beat", json=beat_body(provider, uptime, epoch, seed)).status_code == 200

    next_epoch(uptime)
    duty.poll_once()
    [report] = chain.events("Uptime", "LivenessReported", network.deploy_block,
                            argument_filters={"epoch": epoch})
    index = ProviderRegistry(chain).index_of(provider.address)
    words = list(report["args"]["words"])
    assert report["args"]["validator"] == chain.address
    assert liveness.indices_of(words) == [index]
    assert duty.store.report(epoch)["status"] == "posted"
    duty.poll_once()                                         # nothing more to send
    duty.store._do("DELETE FROM reports WHERE epoch=?", (epoch,))   # a save lost in a crash
    duty.poll_once()
    assert duty.store.report(epoch)["detail"].startswith("found on chain")
    assert len(chain.events("Uptime", "LivenessReported", network.deploy_block,
                            argument_filters={"epoch": epoch})) == 1

    # Anyone challenges the inclusion; the duty answers with the beat it holds.
    challenger = Chain(network, devnet_account(CHALLENGER))
    StakeToken(challenger).fund(uptime.address, 10 * 10**18, "challenge bond")
    _, challenge_id = Uptime(challenger).challenge_inclusion(chain.address, epoch,
                                                             provider.address, words)
    duty._scan_at = 0
    duty.poll_once()
    assert uptime.challenge(challenge_id)["state"] == 2      # answered
    assert "liveness-challenge-answered" in log.getvalue()

    # Final once report_delay + 1 + answer_epochs more epochs have ended: up by the report
    # alone (no heartbeat), and the provider that sent nothing is down.
    report_delay, answer_epochs = uptime.liveness_rules()
    while not uptime.is_final(epoch):
        assert uptime.is_up(devnet_account(IDLE).address, epoch)   # not final: presumed up
        next_epoch(uptime)
    assert uptime.current_epoch() == liveness.answer_end(epoch, report_delay, answer_epochs) + 1
    assert uptime.is_up(provider.address, epoch) and not uptime.beats(provider.address, epoch)
    assert not uptime.is_up(devnet_account(IDLE).address, epoch)
    duty.poll_once()                                         # past every window: nothing to do
    duty.close()
