"""`tessera facilitator run`'s service over real HTTP on an anvil devnet: /supported, /verify and
/settle with the SDK's wire format, a model server that settles through it, and junk answered
4xx (facilitator/service.py, docs/agents.md)."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from tests.payments.conftest import (
    PROVIDER,
    SERVICE_GAS,
    PaidInferenceServer,
    generate_body,
    new_payer,
    pay_with_sdk,
    payment_required,
    send_paid,
    sign_exact,
)
from typer.testing import CliRunner
from x402.http import decode_payment_response_header

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import free_port
from tessera.chain.x402_facilitator import X402Network
from tessera.cli import app
from tessera.provider.inference import InferencePrices


def wire(payload, requirements) -> dict:
    return {"x402Version": 2,
            "paymentPayload": payload.model_dump(mode="json", by_alias=True, exclude_none=True),
            "paymentRequirements": requirements.model_dump(mode="json", by_alias=True,
                                                           exclude_none=True)}


def test_supported_names_the_network_the_scheme_and_the_signer(facilitator_service,
                                                                payments_devnet):
    supported = httpx.get(facilitator_service.url + "/supported").json()
    kinds = {(k["scheme"], k["network"], k["x402Version"]) for k in supported["kinds"]}
    assert ("exact", f"eip155:{payments_devnet.chain_id}", 2) in kinds
    assert devnet_account(SERVICE_GAS).address in supported["signers"]["eip155:*"]
    health = httpx.get(facilitator_service.url + "/health").json()
    assert health["asset"] == payments_devnet.contracts["PaymentToken"]


def test_verify_moves_nothing_settle_moves_exactly_the_amount_once(facilitator_service,
                                                                   remote_inference_server):
    s, url = remote_inference_server, facilitator_service.url
    requirements = payment_required(s, generate_body(32)).accepts[0]
    body = wire(sign_exact(s.payer_key, requirements), requirements)
    before = s.balances(s.payer, s.pay_to)
    verified = httpx.post(url + "/verify", json=body).json()
    assert verified["isValid"] is True and verified["payer"] == s.payer
    assert s.balances(s.payer, s.pay_to) == before
    settled = httpx.post(url + "/settle", json=body, timeout=60).json()
    assert settled["success"] is True and settled["network"] == s.network
    price = s.price_for(32)
    assert s.balances(s.payer, s.pay_to) == (before[0] - price, before[1] + price)
    tx = s.net.chain.w3.eth.get_transaction(settled["transaction"])
    assert tx["from"] == devnet_account(SERVICE_GAS).address
    # the same payment again: not valid, not settled, nothing moves
    after = s.balances(s.payer, s.pay_to)
    assert httpx.post(url + "/verify", json=body).json()["isValid"] is False
    again = httpx.post(url + "/settle", json=body, timeout=60).json()
    assert again["success"] is False and again["errorReason"]
    assert s.balances(s.payer, s.pay_to) == after


def test_official_client_pays_a_server_that_settles_through_the_service(remote_inference_server,
                                                                        tiny_model):
    s = remote_inference_server
    before = s.balances(s.payer, s.pay_to)
    response = pay_with_sdk(s, generate_body(12, prompt="import "))
    assert response.status_code == 200, response.text
    assert response.json()["text"] == tiny_model.generate("import ", 12).text
    price = s.price_for(12)
    assert s.balances(s.payer, s.pay_to) == (before[0] - price, before[1] + price)
    settled = decode_payment_response_header(response.headers["payment-response"])
    tx = s.net.chain.w3.eth.get_transaction(settled.transaction)
    assert tx["from"] == devnet_account(SERVICE_GAS).address


def test_replay_through_the_service_is_refused(remote_inference_server):
    s = remote_inference_server
    body = generate_body(8)
    payment = sign_exact(s.payer_key, payment_required(s, body).accepts[0])
    assert send_paid(s, body, payment).status_code == 200
    before = s.balances(s.payer, s.pay_to)
    assert send_paid(s, body, payment).status_code == 402
    assert s.balances(s.payer, s.pay_to) == before


@pytest.mark.parametrize("bend, reason", [
    ({"network": "eip155:1"}, "wrong_network"),
    ({"asset": "StakeToken"}, "wrong_asset"),
    ({"scheme": "upto"}, "unsupported_scheme"),
])
def test_service_refuses_another_network_asset_or_scheme(facilitator_service,
                                                         remote_inference_server, bend, reason):
    s, url = remote_inference_server, facilitator_service.url
    requirements = payment_required(s, generate_body(8)).accepts[0]
    if bend.get("asset") == "StakeToken":
        bend = {"asset": s.net.chain.network.address("StakeToken")}
    other = requirements.model_copy(update=bend)
    body = wire(sign_exact(s.payer_key, other, **{k: v for k, v in bend.items()
                                                  if k in ("network", "asset")}), other)
    before = s.balances(s.payer, s.pay_to)
    verified = httpx.post(url + "/verify", json=body).json()
    assert verified["isValid"] is False and verified["invalidReason"] == reason
    settled = httpx.post(url + "/settle", json=body).json()
    assert settled["success"] is False and settled["errorReason"] == reason
    assert s.balances(s.payer, s.pay_to) == before


@pytest.mark.parametrize("bend, reason", [
    ({"amount": "0"}, "amount_not_positive"),         # a payment of nothing: only gas spent
    ({"pay_to": "self"}, "payee_not_served"),        # the payer pays itself: only gas spent
    ({"max_timeout_seconds": -1}, "bad_timeout"),
])
def test_service_spends_no_gas_on_payments_for_nobody(facilitator_service, remote_inference_server,
                                                      bend, reason):
    """An attacker sends well-signed payments of nothing, or to itself, to an open facilitator,
    in a loop: each would cost the facilitator's key gas. Refused before any transaction."""
    s, url = remote_inference_server, facilitator_service.url
    requirements = payment_required(s, generate_body(8)).accepts[0]
    if bend.get("pay_to") == "self":
        bend = {"pay_to": s.payer}
    other = requirements.model_copy(update=bend)
    body = wire(sign_exact(s.payer_key, other, value=int(other.amount), to=other.pay_to), other)
    gas = devnet_account(SERVICE_GAS).address
    nonce = s.net.chain.w3.eth.get_transaction_count(gas)
    before = s.balances(s.payer, s.pay_to)
    verified = httpx.post(url + "/verify", json=body).json()
    assert verified["isValid"] is False and verified["invalidReason"] == reason
    settled = httpx.post(url + "/settle", json=body, timeout=60).json()
    assert settled["success"] is False and settled["errorReason"] == reason
    assert s.net.chain.w3.eth.get_transaction_count(gas) == nonce   # no transaction sent
    assert s.balances(s.payer, s.pay_to) == before


def _valid_body(s) -> dict:
    requirements = payment_required(s, generate_body(8)).accepts[0]
    return wire(sign_exact(s.payer_key, requirements), requirements)


def _junk(s) -> list[tuple[str, object, int, str]]:
    """(name, body or raw bytes, status, a word the answer must hold)."""
    good = _valid_body(s)
    payload, requirements = good["paymentPayload"], good["paymentRequirements"]

    def with_(**parts):
        return {**good, **parts}
    return [
        ("not json", b"{nope", 400, "not JSON"),
        ("empty object", {}, 422, "paymentPayload"),
        ("payload not an object", with_(paymentPayload=7), 422, "paymentPayload"),
        ("payload lacks accepted", with_(paymentPayload={"payload": {}, "x402Version": 2}),
         400, "accepted"),
        ("authorization missing", with_(paymentPayload={**payload, "payload": {}}), 400,
         "cannot be read"),
        ("authorization junk", with_(paymentPayload={**payload, "payload": {
            "authorization": {"from": 1}, "signature": "0x"}}), 400, "cannot be read"),
        ("value not a number", with_(paymentPayload={**payload, "payload": {
            **payload["payload"], "authorization": {**payload["payload"]["authorization"],
                                                    "value": "lots"}}}), 400, "cannot be read"),
        ("requirements junk", with_(paymentRequirements={"scheme": "exact"}), 400,
         "paymentRequirements"),
        ("amount not a number", with_(paymentRequirements={**requirements, "amount": [1]}), 400,
         "paymentRequirements"),
        ("version 1", with_(x402Version=1), 400, "version"),
        ("payload version 1", with_(paymentPayload={**payload, "x402Version": 1}), 400,
         "version"),
        ("huge", b'{"x": "' + b"a" * (300 << 10) + b'"}', 413, "larger"),
        ("deep", b"[" * 50_000, 400, "not JSON"),
    ]


@pytest.mark.parametrize("route", ["/verify", "/settle"])
def test_junk_gets_4xx_naming_the_problem(facilitator_service, remote_inference_server, route):
    s, url = remote_inference_server, facilitator_service.url
    before = s.balances(s.payer, s.pay_to)
    for name, body, status, word in _junk(s):
        if isinstance(body, bytes):
            response = httpx.post(url + route, content=body,
                                  headers={"content-type": "application/json"})
        else:
            response = httpx.post(url + route, json=body)
        assert response.status_code == status, (name, response.text)
        assert word in response.text, (name, response.text)
    assert httpx.get(url + route).status_code == 405
    assert s.balances(s.payer, s.pay_to) == before


def test_an_unfunded_payer_is_invalid_not_an_error(facilitator_service, remote_inference_server):
    s, url = remote_inference_server, facilitator_service.url
    requirements = payment_required(s, generate_body(8)).accepts[0]
    broke = "0x" + bytes(Account.create().key).hex()
    body = wire(sign_exact(broke, requirements), requirements)
    verified = httpx.post(url + "/verify", json=body)
    assert verified.status_code == 200 and verified.json()["isValid"] is False
    assert "insufficient" in verified.json()["invalidReason"]


# -- the commands, as real processes ----------------------------------------------------------
@contextmanager
def command(args: list[str], log: Path, ready_url: str):
    """`python -m tessera.cli *args` until the block ends; waits for `ready_url` to answer."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tessera.cli", *args], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"{args[:2]} exited: {log.read_text()[-2000:]}"
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{args[:2]} did not answer: {log.read_text()}"
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_commands_serve_and_settle_a_paid_request(payments_devnet, tiny_model, tmp_path):
    """`tessera facilitator run --key-file` and `tessera provider serve-model --facilitator`, as
    processes: the official client pays, the facilitator's own key sends the settlement."""
    from tessera.chain.network import save_network

    network_file = tmp_path / "network.json"
    save_network(payments_devnet, network_file)
    gas = Account.create()
    Chain(payments_devnet).w3.provider.make_request("anvil_setBalance", [gas.address, hex(10**18)])
    key_file = tmp_path / "facilitator.key"
    key_file.write_text("0x" + bytes(gas.key).hex())
    key_file.chmod(0o644)
    refused = CliRunner().invoke(app, ["facilitator", "run", "--network", str(network_file),
                                       "--key-file", str(key_file)])
    assert refused.exit_code == 1 and "chmod 600" in refused.output
    key_file.chmod(0o600)
    f_port, m_port = free_port(), free_port()
    f_url, m_url = f"http://127.0.0.1:{f_port}", f"http://127.0.0.1:{m_port}"
    # the devnet's provider is not registered: the facilitator settles to it only when listed
    with command(["facilitator", "run", "--network", str(network_file), "--key-file",
                  str(key_file), "--port", str(f_port), "--pay-to",
                  devnet_account(PROVIDER).address], tmp_path / "facilitator.log",
                 f_url + "/health"), \
         command(["provider", "serve-model", "--model", str(tiny_model.source.parent),
                  "--account", f"devnet:{PROVIDER}", "--network", str(network_file),
                  "--facilitator", f_url, "--port", str(m_port)], tmp_path / "model.log",
                 m_url + "/v1/model"):
        assert httpx.get(f_url + "/health").json()["signer"] == gas.address
        server = PaidInferenceServer(
            url=m_url, route="/v1/generate", network=f"eip155:{payments_devnet.chain_id}",
            asset=payments_devnet.contracts["PaymentToken"], pay_to=devnet_account(PROVIDER).address,
            rpc_url=payments_devnet.rpc_url, chain_id=payments_devnet.chain_id,
            payer_key=new_payer(payments_devnet), prices=InferencePrices(1_000, 10),
            net=X402Network.read(Chain(payments_devnet)))
        before = server.balances(server.payer, server.pay_to)
        response = pay_with_sdk(server, generate_body(16))
        assert response.status_code == 200, response.text
        price = server.price_for(16)
        assert server.balances(server.payer, server.pay_to) == (before[0] - price,
                                                                before[1] + price)
        settled = decode_payment_response_header(response.headers["payment-response"])
        assert server.net.chain.w3.eth.get_transaction(settled.transaction)["from"] == gas.address


@pytest.mark.parametrize("args, says", [
    (["facilitator", "run"], "exactly one of --key"),
    (["facilitator", "run", "--key", "devnet:8", "--key-file", "k"], "exactly one of --key"),
    (["facilitator", "run", "--key", "devnet:x"], "devnet:N"),
    (["facilitator", "run", "--key-file", "/nonexistent/key"], "cannot read key file"),
    (["provider", "serve-model", "--model", "/nonexistent", "--account", "devnet:2"],
     "no trained model"),
    (["provider", "serve-model", "--model", ".", "--account", "devnet:2", "--per-token", "-1"],
     "per-token"),
])
def test_commands_refuse_bad_options_by_name(args, says):
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and says in result.output, result.output
