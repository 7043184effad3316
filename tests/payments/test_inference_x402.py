"""Pay-per-request inference over x402 on a real anvil devnet: the official Python client pays
the provider's model server and gets generated text; every bad payment leaves every balance as
it was and the model unrun (provider/inference.py, docs/agents.md)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from eth_account import Account
from tests.payments.conftest import (
    IN_PROCESS_GAS,
    generate_body,
    in_process_facilitator,
    pay_with_sdk,
    payment_required,
    running_server,
    send_paid,
    sign_exact,
)
from x402.http import decode_payment_response_header, encode_payment_signature_header

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.x402_facilitator import LocalFacilitatorClient
from tessera.compute.generate import generate
from tessera.provider.inference import InferencePrices


@pytest.fixture
def generations(tiny_model, monkeypatch) -> list:
    """Every generation the model runs during the test, as (prompt, max_tokens)."""
    runs, real = [], tiny_model.generate

    def counted(prompt, max_tokens, *args):
        runs.append((prompt, max_tokens))
        return real(prompt, max_tokens, *args)
    monkeypatch.setattr(tiny_model, "generate", counted)
    return runs


@contextmanager
def unchanged(server, *addresses):
    """Assert that the TUSD balances of the payer, the provider (and `addresses`) do not move."""
    who = (server.payer, server.pay_to, *addresses)
    before = server.balances(*who)
    yield
    assert server.balances(*who) == before


def refused(response, reason: str | None = None) -> None:
    """A 402 that served no text."""
    assert response.status_code == 402, response.text
    assert "text" not in response.text
    if reason is not None:
        assert reason in response.headers.get("payment-required", "") + _decoded_error(response)


def _decoded_error(response) -> str:
    from x402.http import decode_payment_required_header

    header = response.headers.get("payment-required")
    return (decode_payment_required_header(header).error or "") if header else ""


# -- the paid path ---------------------------------------------------------------------------
def test_model_route_is_free_and_names_the_terms(paid_inference_server, tiny_model):
    s = paid_inference_server
    info = httpx.get(s.url + "/v1/model").json()
    assert info["network"] == s.network == f"eip155:{s.chain_id}"
    assert (info["asset"], info["pay_to"]) == (s.asset, s.pay_to)
    assert info["asset_eip712"] == {"name": "Tessera USD", "version": "1"}
    assert info["price"]["per_request"] == s.prices.per_request
    assert info["model"]["model_sha256"] == tiny_model.sha256
    assert info["schemes"][0] == "exact"


@pytest.mark.parametrize("max_tokens", [1, 48])
def test_unpaid_request_gets_402_priced_for_its_tokens(paid_inference_server, generations,
                                                       max_tokens):
    s = paid_inference_server
    with unchanged(s):
        required = payment_required(s, generate_body(max_tokens))
    exact = next(r for r in required.accepts if r.scheme == "exact")
    assert exact.network == s.network and exact.asset == s.asset and exact.pay_to == s.pay_to
    assert int(exact.amount) == s.price_for(max_tokens) == 1_000 + 10 * max_tokens
    assert exact.extra["name"] == "Tessera USD" and exact.extra["version"] == "1"
    assert exact.extra["route"] == "POST /v1/generate"
    assert generations == []


def test_official_client_pays_and_gets_text(paid_inference_server, tiny_model, generations):
    s = paid_inference_server
    gas_payer = devnet_account(IN_PROCESS_GAS).address
    w3 = s.net.chain.w3
    payer_eth, gas_eth = w3.eth.get_balance(s.payer), w3.eth.get_balance(gas_payer)
    before = s.balances(s.payer, s.pay_to)
    body = {"prompt": "def main(", "max_tokens": 24, "temperature": 0.7, "seed": 5}
    response = pay_with_sdk(s, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["text"] == generate(tiny_model, "def main(", 24, 0.7, 5).text
    assert answer["tokens"] == 24 and answer["price"] == s.price_for(24)
    price = s.price_for(24)
    assert s.balances(s.payer, s.pay_to) == (before[0] - price, before[1] + price)
    settled = decode_payment_response_header(response.headers["payment-response"])
    assert settled.success and settled.network == s.network and settled.payer == s.payer
    receipt = w3.eth.get_transaction_receipt(settled.transaction)
    assert receipt["status"] == 1
    # the payer signed only; the facilitator's key sent the settlement and paid its gas
    assert w3.eth.get_transaction(settled.transaction)["from"] == gas_payer
    assert w3.eth.get_balance(s.payer) == payer_eth
    assert w3.eth.get_balance(gas_payer) < gas_eth
    assert generations == [("def main(", 24)]


def test_client_spend_cap_refuses_before_signing(paid_inference_server, generations):
    """The SDK client's spend controls refuse a price over its cap: nothing is signed or sent."""
    from x402.http.clients.httpx import PaymentError as ClientPaymentError

    s = paid_inference_server
    with unchanged(s), pytest.raises(ClientPaymentError, match="max_amount_per_payment"):
        pay_with_sdk(s, generate_body(64), cap=s.price_for(63))
    assert generations == []


# -- bad payments: each refused, no balance moved, the model never run -----------------------
def test_replayed_payment_is_refused(paid_inference_server, generations):
    s = paid_inference_server
    body = generate_body(8)
    payment = sign_exact(s.payer_key, payment_required(s, body).accepts[0])
    assert send_paid(s, body, payment).status_code == 200
    with unchanged(s):
        refused(send_paid(s, body, payment), "transaction_simulation_failed")
    assert len(generations) == 1


def test_concurrent_replay_runs_the_model_once_and_settles_once(paid_inference_server, generations):
    """The same payment sent six times at once (the attack: one payment, N generations). One
    request uses it; a copy that comes while it is in use gets 409 before anything runs, one
    that comes after it settled gets 402 (nonce used): the model runs once, paid once."""
    s = paid_inference_server
    body = generate_body(16)
    price = s.price_for(16)
    payment = sign_exact(s.payer_key, payment_required(s, body).accepts[0])
    before = s.balances(s.payer, s.pay_to)
    responses = []
    threads = [threading.Thread(target=lambda: responses.append(send_paid(s, body, payment)))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1 and set(statuses) <= {200, 402, 409}, statuses
    assert all("text" not in r.json() for r in responses if r.status_code != 200)
    assert len(generations) == 1
    assert s.balances(s.payer, s.pay_to) == (before[0] - price, before[1] + price)


def test_a_version_1_payment_is_refused_not_a_500(paid_inference_server, generations):
    """The SDK's route matching reads fields only an x402 v2 payment has: a v1 payment header
    made it answer 500. Refused with 400, nothing run, nothing moved."""
    import base64
    import json

    s = paid_inference_server
    v1 = {"x402Version": 1, "scheme": "exact", "network": s.network, "payload": {}}
    header = base64.b64encode(json.dumps(v1).encode()).decode()
    with unchanged(s):
        response = httpx.post(s.url + s.route, json=generate_body(8),
                              headers={"PAYMENT-SIGNATURE": header})
    assert response.status_code == 400 and "version 1" in response.text
    assert generations == []


@pytest.mark.parametrize("window", ["expired", "not yet valid"])
def test_authorization_outside_its_validity_window_is_refused(paid_inference_server, generations,
                                                              window):
    s = paid_inference_server
    body = generate_body(8)
    requirements = payment_required(s, body).accepts[0]
    now = int(time.time())
    bent = ({"valid_before": now - 60} if window == "expired"
            else {"valid_after": now + 3600, "valid_before": now + 7200})
    with unchanged(s):
        refused(send_paid(s, body, sign_exact(s.payer_key, requirements, **bent)),
                "valid_before" if window == "expired" else "valid_after")
    assert generations == []


def test_payment_for_another_network_is_refused(paid_inference_server, generations):
    s = paid_inference_server
    body = generate_body(8)
    requirements = payment_required(s, body).accepts[0]
    elsewhere = requirements.model_copy(update={"network": "eip155:1"})
    with unchanged(s):
        refused(send_paid(s, body, sign_exact(s.payer_key, elsewhere, network="eip155:1")),
                "No matching payment requirements")
        # signed for chain 1 while claiming this network's terms: the signature does not verify
        refused(send_paid(s, body, sign_exact(s.payer_key, requirements, network="eip155:1")),
                "signature")
    assert generations == []


def test_payment_in_another_asset_is_refused(paid_inference_server, generations):
    s = paid_inference_server
    body = generate_body(8)
    requirements = payment_required(s, body).accepts[0]
    stake = s.net.chain.network.address("StakeToken")
    other = requirements.model_copy(update={"asset": stake})
    with unchanged(s, ):
        refused(send_paid(s, body, sign_exact(s.payer_key, other, asset=stake)),
                "No matching payment requirements")
        refused(send_paid(s, body, sign_exact(s.payer_key, requirements, asset=stake)),
                "signature")
    assert generations == []


def test_payment_to_another_payee_is_refused(paid_inference_server, generations):
    s = paid_inference_server
    body = generate_body(8)
    requirements = payment_required(s, body).accepts[0]
    thief = Account.create().address
    with unchanged(s, thief):
        refused(send_paid(s, body, sign_exact(s.payer_key, requirements, to=thief)),
                "recipient_mismatch")
        claimed = requirements.model_copy(update={"pay_to": thief})
        refused(send_paid(s, body, sign_exact(s.payer_key, claimed)),
                "No matching payment requirements")
    assert generations == []


def test_payment_of_another_amount_is_refused(paid_inference_server, generations):
    s = paid_inference_server
    body = generate_body(64)
    requirements = payment_required(s, body).accepts[0]
    cheap = payment_required(s, generate_body(1)).accepts[0]
    with unchanged(s):
        # a signed authorization for less than the requirements it claims to meet
        refused(send_paid(s, body, sign_exact(s.payer_key, requirements,
                                              value=int(requirements.amount) - 1)),
                "value_mismatch")
        # a payment made for max_tokens=1, sent with max_tokens=64
        refused(send_paid(s, body, sign_exact(s.payer_key, cheap)),
                "No matching payment requirements")
    assert generations == []


def test_payment_for_another_route_is_refused(paid_inference_server, generations):
    s = paid_inference_server
    body = generate_body(8)
    requirements = payment_required(s, body).accepts[0]
    other_route = requirements.model_copy(update={"extra": {**requirements.extra,
                                                            "route": "POST /v1/embed"}})
    with unchanged(s):
        refused(send_paid(s, body, sign_exact(s.payer_key, other_route)),
                "No matching payment requirements")
    assert generations == []


class _DrainBeforeSettle(LocalFacilitatorClient):
    """In-process facilitator that, between verify and settle, has the payer send every TUSD it
    holds elsewhere (a real transfer, mined): a payment that verified and can no longer settle."""

    def __init__(self, facilitator, payer_key: str, sink: str):
        super().__init__(facilitator)
        self.payer_key, self.sink, self.drained = payer_key, sink, 0

    async def settle(self, payload, requirements):
        net = self.facilitator.net
        chain = Chain(net.chain.network, Account.from_key(self.payer_key))
        token = chain.payment_token
        self.drained = chain.call(token.functions.balanceOf(chain.address))
        chain.send(token.functions.transfer(self.sink, self.drained))
        return await super().settle(payload, requirements)


@pytest.mark.parametrize("simulate", [True, False], ids=["simulated-first", "reverts-on-chain"])
def test_settlement_that_fails_on_chain_serves_nothing_and_charges_nothing(
        payments_devnet, tiny_model, generations, simulate):
    """With simulation (the default) the facilitator sees the transfer would fail and sends
    nothing; without it the settlement is mined and reverts. Either way: 402, the text withheld,
    the failed PAYMENT-RESPONSE, and the provider paid nothing."""
    sink = Account.create().address
    facilitator = in_process_facilitator(payments_devnet, simulate_in_settle=simulate)
    with running_server(payments_devnet, tiny_model, None, facilitator.address,
                        client=lambda key: _DrainBeforeSettle(facilitator, key, sink)) as s:
        body = generate_body(8)
        payment = sign_exact(s.payer_key, payment_required(s, body).accepts[0])
        provider_before, payer_before = s.balance(s.pay_to), s.balance(s.payer)
        response = send_paid(s, body, payment)
        assert response.status_code == 402 and "withheld" in response.json()["error"]
        failed = decode_payment_response_header(response.headers["payment-response"])
        assert not failed.success
        if simulate:
            assert failed.transaction == ""
        else:
            receipt = s.net.chain.w3.eth.get_transaction_receipt(failed.transaction)
            assert receipt["status"] == 0
        assert s.balance(s.pay_to) == provider_before
        assert s.balance(s.payer) == 0 and s.balance(sink) == payer_before   # only its own move
    assert len(generations) == 1   # it ran (after verify), and its text was never sent


# -- junk: 4xx naming the problem, before any payment logic ------------------------------------
@pytest.mark.parametrize("content, status, says", [
    (b"not json", 400, "not JSON"),
    (b'{"prompt": "x", "max_tokens": NaN}', 400, "NaN"),
    (b'{"max_tokens": 8}', 422, "prompt"),
    (b'{"prompt": "x", "max_tokens": 0}', 422, "max_tokens"),
    (b'{"prompt": "x", "max_tokens": 100000}', 422, "max_tokens"),
    (b'{"prompt": "x", "max_tokens": "8"}', 422, "max_tokens"),
    (b'{"prompt": "x", "max_tokens": 8, "temperature": -1}', 422, "temperature"),
    (b'{"prompt": "", "max_tokens": 8}', 422, "prompt"),
    (b'{"prompt": "x", "max_tokens": 8, "tip": 1}', 422, "tip"),
    (b"[" * 100_000, 400, "not JSON"),
    (b'{"prompt": "' + b"x" * (300 << 10) + b'", "max_tokens": 8}', 413, "larger"),
])
def test_junk_requests_get_4xx(paid_inference_server, generations, content, status, says):
    s = paid_inference_server
    with unchanged(s):
        response = httpx.post(s.url + s.route, content=content,
                              headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert says in response.text
    assert generations == []


@pytest.mark.parametrize("path", ["/v1/generate/", "/V1/Generate", "//v1//generate"])
def test_other_spellings_of_the_route_are_not_found(paid_inference_server, generations, path):
    """Paths the SDK's matcher would take for the paid route but the router would not: 404
    before the paywall, so nobody pays for a 404 or a redirect."""
    s = paid_inference_server
    body = generate_body(8)
    payment = sign_exact(s.payer_key, payment_required(s, body).accepts[0])
    with unchanged(s):
        for headers in ({}, {"PAYMENT-SIGNATURE": encode_payment_signature_header(payment)}):
            response = httpx.post(s.url + path, json=body, headers=headers)
            assert response.status_code == 404, response.text
    assert generations == []


@pytest.mark.parametrize("header", ["not base64!", "eyJ4NDAyVmVyc2lvbiI6IDJ9", "e30=", "W10="])
def test_junk_payment_header_is_refused(paid_inference_server, generations, header):
    s = paid_inference_server
    with unchanged(s):
        response = httpx.post(s.url + s.route, json=generate_body(8),
                              headers={"PAYMENT-SIGNATURE": header})
    assert 400 <= response.status_code < 500, response.text
    assert generations == []


def test_prices_refuse_nonsense():
    for bad in ({"per_request": -1, "per_token": 1}, {"per_request": 0, "per_token": 0},
                {"per_request": 1.5, "per_token": 1}, {"per_request": 10**18, "per_token": 1}):
        with pytest.raises(ValueError):
            InferencePrices(**bad)
