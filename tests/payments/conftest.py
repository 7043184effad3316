"""Fixtures for paying a model server over x402 on a real anvil devnet (docs/agents.md).

- `payments_devnet`: one devnet for the whole session (the contracts deployed, its accounts
  funded); every test measures balances before and after, so tests can share it.
- `tiny_model`: a ByteGPT trained for a few dozen steps on the stdlib corpus (about a second).
- `paid_inference_server` (module-scoped): the provider's model server (provider/inference.py)
  served by uvicorn on a free port, verifying and settling in-process, with a fresh payer funded
  with TUSD (and a little ETH, so a test can make it move its own tokens). H3's npm interop test
  (tests/payments/test_npm_client.py) uses it too.
- `facilitator_service` (module-scoped): `tessera facilitator run`'s app on a free port, and
  `remote_inference_server`: a model server that verifies and settles through it over HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from eth_account import Account
from tests.support.compute import CORPUS_BYTES, TINY
from tests.support.uvicorn_server import serve

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.network import Network
from tessera.chain.tokens import PaymentToken
from tessera.chain.x402_facilitator import (
    LocalFacilitatorClient,
    TesseraFacilitator,
    X402Network,
    registered_or_listed,
)
from tessera.compute.corpus import build_stdlib_corpus
from tessera.compute.generate import TextModel, load_model
from tessera.compute.train import train
from tessera.provider.inference import GENERATE_ROUTE, InferencePrices, create_inference_app

# Who is who (anvil's published test keys; 0 deploys, 1 is the treasury, 5 the e2e tenant).
PROVIDER, FUNDER, IN_PROCESS_GAS, SERVICE_GAS = 2, 9, 7, 8
PRICES = InferencePrices(per_request=1_000, per_token=10)   # 0.001 TUSD + 0.00001 TUSD per token
PAYER_FUNDS = 50 * 10**6                                   # 50 TUSD
PAYER_ETH = 10**18


def key_of(account) -> str:
    return "0x" + bytes(account.key).hex()


def new_payer(network: Network) -> str:
    """A fresh key holding PAYER_FUNDS TUSD (sent by a devnet account) and PAYER_ETH."""
    payer = Account.create()
    chain = Chain(network, devnet_account(FUNDER))
    chain.send(chain.payment_token.functions.transfer(payer.address, PAYER_FUNDS))
    chain.w3.provider.make_request("anvil_setBalance", [payer.address, hex(PAYER_ETH)])
    return key_of(payer)


@dataclass
class PaidInferenceServer:
    """A running paywalled model server, and what a client needs to pay it."""

    url: str
    route: str
    network: str           # CAIP-2, "eip155:<chain id>"
    asset: str             # the PaymentToken's address
    pay_to: str            # the provider's address
    rpc_url: str
    chain_id: int
    payer_key: str         # a funded payer (TUSD and ETH), fresh for this server
    prices: InferencePrices
    net: X402Network = field(repr=False)
    facilitator_address: str = ""

    def price_for(self, max_tokens: int) -> int:
        return self.prices.price_for(max_tokens)

    @property
    def payer(self) -> str:
        return Account.from_key(self.payer_key).address

    def balance(self, address: str) -> int:
        return PaymentToken(self.net.chain).balance_of(address)

    def balances(self, *addresses: str) -> tuple[int, ...]:
        return tuple(self.balance(a) for a in addresses)


@pytest.fixture(scope="session")
def payments_devnet(tmp_path_factory, private_devnet) -> Iterator[Network]:
    with private_devnet(tmp_path_factory.mktemp("payments")) as (_devnet, network):
        yield network


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TextModel:
    """A tiny ByteGPT trained for 60 steps (its results folder has artifacts.json, so loading it
    checks every artifact's sha256 as `load_model` does for a finished job)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    workload = TINY.model_copy(update={"steps": 60, "eval_every": 30, "checkpoint_every": 60})
    train(workload, build_stdlib_corpus(CORPUS_BYTES), folder)
    return load_model(folder)


@contextmanager
def running_server(network: Network, model: TextModel, facilitator, facilitator_address: str,
                   client=None) -> Iterator[PaidInferenceServer]:
    """A model server paid to devnet:2, with a fresh payer; `client(payer_key)`, when given,
    builds the facilitator client instead of `facilitator` (a test that needs the payer's key
    inside its facilitator)."""
    net = X402Network.read(Chain(network))
    provider = devnet_account(PROVIDER).address
    payer_key = new_payer(network)
    if client is not None:
        facilitator = client(payer_key)
    app = create_inference_app(model, net, provider, PRICES, facilitator)
    with serve(app) as url:
        yield PaidInferenceServer(
            url=url, route=GENERATE_ROUTE, network=net.caip2, asset=net.token.address,
            pay_to=provider, rpc_url=network.rpc_url, chain_id=network.chain_id,
            payer_key=payer_key, prices=PRICES, net=net,
            facilitator_address=facilitator_address)


def in_process_facilitator(network: Network, **options) -> TesseraFacilitator:
    net = X402Network.read(Chain(network))
    return TesseraFacilitator(net, key_of(devnet_account(IN_PROCESS_GAS)), **options)


@pytest.fixture(scope="module")
def paid_inference_server(payments_devnet, tiny_model) -> Iterator[PaidInferenceServer]:
    """The model server verifying and settling in-process (gas paid by devnet:7)."""
    facilitator = in_process_facilitator(payments_devnet)
    with running_server(payments_devnet, tiny_model, LocalFacilitatorClient(facilitator),
                        facilitator.address) as server:
        yield server


@dataclass
class FacilitatorService:
    url: str
    facilitator: TesseraFacilitator


@pytest.fixture(scope="module")
def facilitator_service(payments_devnet) -> Iterator[FacilitatorService]:
    """`tessera facilitator run`'s app for the devnet (gas paid by devnet:8), over real HTTP."""
    from tessera.facilitator.service import create_facilitator_app

    chain = Chain(payments_devnet)
    net = X402Network.read(chain)
    # as `tessera facilitator run --pay-to <the provider>`: the devnet's provider is not registered
    facilitator = TesseraFacilitator(net, key_of(devnet_account(SERVICE_GAS)), payees=(
        registered_or_listed(chain, (devnet_account(PROVIDER).address,))))
    with serve(create_facilitator_app(facilitator)) as url:
        yield FacilitatorService(url, facilitator)


@pytest.fixture(scope="module")
def remote_inference_server(payments_devnet, tiny_model,
                            facilitator_service) -> Iterator[PaidInferenceServer]:
    """The model server verifying and settling through `facilitator_service` over HTTP."""
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient

    client = HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_service.url))
    with running_server(payments_devnet, tiny_model, client,
                        facilitator_service.facilitator.address) as server:
        yield server


# -- paying by hand: the SDK's own client scheme, with terms a test chooses --------------------
def generate_body(max_tokens: int = 8, prompt: str = "def ") -> dict:
    return {"prompt": prompt, "max_tokens": max_tokens}


def payment_required(server: PaidInferenceServer, body: dict):
    """The 402 an unpaid request gets, decoded (x402.schemas.PaymentRequired)."""
    import httpx
    from x402.http import decode_payment_required_header

    response = httpx.post(server.url + server.route, json=body)
    assert response.status_code == 402, response.text
    return decode_payment_required_header(response.headers["payment-required"])


def sign_exact(payer_key: str, requirements, *, accepted=None, to: str | None = None,
               value: int | None = None, valid_after: int = 0, valid_before: int | None = None,
               asset: str | None = None, network: str | None = None):
    """A PaymentPayload for "exact", signed by `payer_key` with the SDK's client scheme, over an
    authorization a test may bend: another payee, amount, validity window, or a signature made
    for another token or chain. `accepted` (default: `requirements`) is what the payload claims
    it pays."""
    from x402.mechanisms.evm.exact import ExactEvmClientScheme
    from x402.mechanisms.evm.types import ExactEIP3009Authorization, ExactEIP3009Payload
    from x402.mechanisms.evm.utils import create_nonce
    from x402.schemas import PaymentPayload

    account = Account.from_key(payer_key)
    authorization = ExactEIP3009Authorization(
        from_address=account.address, to=to or requirements.pay_to,
        value=str(requirements.amount if value is None else value), valid_after=str(valid_after),
        valid_before=str(int(time.time()) + 300 if valid_before is None else valid_before),
        nonce=create_nonce())
    signed_for = requirements.model_copy(update={k: v for k, v in
                                                 (("asset", asset), ("network", network)) if v})
    signature = ExactEvmClientScheme(account)._sign_authorization(authorization, signed_for)
    return PaymentPayload(x402_version=2, accepted=accepted or requirements,
                          payload=ExactEIP3009Payload(authorization, signature).to_dict())


def send_paid(server: PaidInferenceServer, body: dict, payload):
    """POST `body` with `payload` as its PAYMENT-SIGNATURE; the httpx response."""
    import httpx
    from x402.http import encode_payment_signature_header

    return httpx.post(server.url + server.route, json=body, timeout=60,
                      headers={"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)})


def sdk_client(server: PaidInferenceServer, cap: int | None = None):
    """The official Python client (x402Client with the "exact" EVM scheme) for the server's payer,
    allowed to pay the server's token up to `cap` base units per payment."""
    from x402 import x402Client
    from x402.mechanisms.evm.exact import register_exact_evm_client

    client = x402Client()
    client.set_spend_controls({"allowed_assets": [{
        "network": server.network, "asset": server.asset,
        "max_amount_per_payment": str(cap if cap is not None else server.price_for(1024))}]})
    register_exact_evm_client(client, Account.from_key(server.payer_key), networks=server.network)
    return client


def pay_with_sdk(server: PaidInferenceServer, body: dict, cap: int | None = None):
    """POST `body` through `x402HttpxClient`, which pays the 402 and retries; the response."""
    import asyncio

    from x402.http.clients import x402HttpxClient

    async def go():
        async with x402HttpxClient(sdk_client(server, cap), base_url=server.url,
                                   timeout=60) as http:
            return await http.post(server.route, json=body)
    return asyncio.run(go())
