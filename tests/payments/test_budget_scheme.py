"""x402 scheme "tessera-budget" (chain/x402_budget.py, chain/x402_spend.py): an agent holding only
a session key pays a paywalled endpoint from its owner's AgentBudget, through the SDK's own
client, resource server and facilitator; and each payment the grant does not allow is refused
twice, leaving every balance as it was: by the agent's client before anything is signed, and,
with the client bypassed (a payload built by hand), by the facilitator (the contract's revert
reason, from simulating `pay`) and by the contract itself.

Offline tests first (signing, typed data, prices), then one devnet for the module.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from types import SimpleNamespace

import httpx
import pytest
from eth_account import Account
from fastapi import FastAPI
from web3 import Web3
from x402 import x402Client, x402ResourceServer
from x402.http import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    RouteConfig,
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_signature_header,
)
from x402.http.clients.httpx import PaymentError as X402PaymentError
from x402.http.clients.httpx import x402AsyncTransport, x402HttpxClient
from x402.http.middleware.fastapi import PaymentMiddlewareASGI
from x402.mechanisms.evm.exact import ExactEvmClientScheme
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import NoMatchingRequirementsError, PaymentPayload, PaymentRequirements

from tessera.chain.accounts import devnet_account
from tessera.chain.agent_budget import AgentBudget
from tessera.chain.client import Chain
from tessera.chain.tokens import PaymentToken
from tessera.chain.x402_budget import (
    SCHEME,
    BudgetClientScheme,
    BudgetFacilitatorScheme,
    BudgetServerScheme,
)
from tessera.chain.x402_facilitator import (
    LocalFacilitatorClient,
    TesseraFacilitator,
    X402Network,
    schemes,
)
from tessera.chain.x402_spend import BudgetGuard, budget_client, spend_controls
from tessera.errors import PaymentRefused, TxRefused
from tessera.protocol import messages
from tessera.protocol.agent_budget import DOMAIN_NAME, DOMAIN_VERSION, payment_typed_data

USD = 10**6
DAY = 86_400
PRICE = 250_000   # 0.25 TUSD a request
BUDGET, TOKEN, OTHER = "0x" + "b0" * 20, "0x" + "70" * 20, "0x" + "0e" * 20
PAYEE = Account.from_key("0x" + "0a" * 32).address


class SpySigner:
    """The SDK's EthAccountSigner, counting the signatures asked of it."""

    def __init__(self, account):
        self.inner, self.calls = EthAccountSigner(account), 0

    @property
    def address(self) -> str:
        return self.inner.address

    def sign_typed_data(self, *args):
        self.calls += 1
        return self.inner.sign_typed_data(*args)


class FakeGuard:
    """A BudgetGuard without a chain: grant 7 on BUDGET at chain 31337, refusing `refuse`."""

    def __init__(self, refuse: str | None = None, now: int = 1_700_000_000):
        self.grant_id, self.chain_id, self.network = 7, 31337, "eip155:31337"
        self.budget_address, self.token, self.refuse, self._now = BUDGET, TOKEN, refuse, now
        self.checked: list[tuple] = []

    def domain(self):
        return DOMAIN_NAME, DOMAIN_VERSION

    def now(self):
        return self._now

    @staticmethod
    def payee(address):
        return Web3.to_checksum_address(address)

    def check(self, *args):
        self.checked.append(args)
        if self.refuse:
            raise PaymentRefused(f"payment refused before signing: {self.refuse}")


def requirements(**changes) -> PaymentRequirements:
    base = PaymentRequirements(scheme=SCHEME, network="eip155:31337", asset=TOKEN,
                               amount=str(PRICE), pay_to=PAYEE, max_timeout_seconds=300,
                               extra={"budget": BUDGET, "name": DOMAIN_NAME,
                                      "version": DOMAIN_VERSION})
    return base.model_copy(update=changes)


# -- offline -------------------------------------------------------------------------------------
def test_the_client_signs_an_agent_payment_that_recovers_to_the_session_key():
    key = Account.create()
    spy = SpySigner(key)
    payload = BudgetClientScheme(spy, FakeGuard()).create_payment_payload(requirements())
    assert spy.calls == 1
    assert set(payload) == {"grant", "payee", "amount", "nonce", "deadline", "signature"}
    assert (payload["grant"], payload["payee"], payload["amount"]) == (7, PAYEE, PRICE)
    assert payload["deadline"] == 1_700_000_000 + 300
    typed = payment_typed_data(31337, BUDGET, 7, PAYEE, PRICE, bytes.fromhex(payload["nonce"][2:]),
                               payload["deadline"])
    assert messages.recover(typed, payload["signature"]) == key.address
    # a deadline never lies further ahead than MAX_DEADLINE_S, whatever the route asks
    far = BudgetClientScheme(key, FakeGuard()).create_payment_payload(
        requirements(max_timeout_seconds=10**9))
    assert far["deadline"] == 1_700_000_000 + 3_600


@pytest.mark.parametrize("changes, reason", [
    ({"network": "eip155:1"}, "wrong_network"),
    ({"extra": {"budget": OTHER, "name": DOMAIN_NAME, "version": DOMAIN_VERSION}},
     "wrong_budget_contract"),
    ({"extra": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION}}, "wrong_budget_contract"),
    ({"extra": {"budget": BUDGET, "name": "Other", "version": DOMAIN_VERSION}},
     "wrong_budget_contract"),
    ({"asset": OTHER}, "wrong_asset"),
    ({"scheme": "exact"}, "unsupported_scheme"),
    ({"amount": "1.5"}, "is not an integer"),
])
def test_the_client_refuses_requirements_for_another_network_or_contract_before_signing(
        changes, reason):
    spy, guard = SpySigner(Account.create()), FakeGuard()
    with pytest.raises(PaymentRefused, match=reason):
        BudgetClientScheme(spy, guard).create_payment_payload(requirements(**changes))
    assert spy.calls == 0 and guard.checked == []


def test_the_client_refuses_what_the_guard_or_the_spend_cap_refuses_before_signing():
    spy = SpySigner(Account.create())
    with pytest.raises(PaymentRefused, match="over cap"):
        BudgetClientScheme(spy, FakeGuard(refuse="over cap")).create_payment_payload(requirements())
    context = SimpleNamespace(max_amount_per_payment=str(PRICE - 1))
    with pytest.raises(PaymentRefused, match="spend_controls cap"):
        BudgetClientScheme(spy, FakeGuard()).create_payment_payload(requirements(), context)
    assert spy.calls == 0


def test_the_server_prices_in_base_units_of_the_budget_token_and_names_the_contract():
    server = BudgetServerScheme(TOKEN, BUDGET, DOMAIN_NAME, DOMAIN_VERSION)
    for price in (PRICE, str(PRICE), {"amount": str(PRICE)}, {"amount": PRICE, "asset": TOKEN}):
        amount = server.parse_price(price, "eip155:31337")
        assert (amount.amount, amount.asset) == (str(PRICE), TOKEN)
        assert amount.extra == {"budget": BUDGET, "name": DOMAIN_NAME, "version": DOMAIN_VERSION}
    for junk in ("$0.01", "1.5", 0, -3, True, None, {"amount": "x"}, {"amount": 1, "asset": OTHER}):
        with pytest.raises(ValueError, match="tessera-budget"):
            server.parse_price(junk, "eip155:31337")
    kind = SimpleNamespace(extra={"budget": BUDGET, "name": DOMAIN_NAME, "version": "1"})
    bare = requirements(extra={})
    assert BudgetServerScheme(TOKEN).enhance_payment_requirements(bare, kind, [])\
        .extra["budget"] == BUDGET
    with pytest.raises(ValueError, match="settles on"):
        BudgetServerScheme(TOKEN, OTHER, DOMAIN_NAME, "1").enhance_payment_requirements(
            requirements(extra={}), kind, [])


def test_spend_controls_allow_the_token_with_an_atomic_cap():
    assert spend_controls("eip155:31337", TOKEN, 5) == {"allowed_assets": [
        {"network": "eip155:31337", "asset": TOKEN, "max_amount_per_payment": "5"}]}
    assert spend_controls("eip155:31337", TOKEN) == {"allowed_assets": [
        {"network": "eip155:31337", "asset": TOKEN}]}
    for junk in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_amount_per_payment"):
            spend_controls("eip155:31337", TOKEN, junk)


# -- on a devnet ---------------------------------------------------------------------------------
OWNER, RELAYER, FACILITATOR_GAS = 3, 6, 4   # anvil's test keys (conftest.py names 2, 7, 8, 9)
DEPOSIT = 100 * USD


def run(coroutine):
    return asyncio.run(coroutine)


def key_hex(account) -> str:
    return "0x" + bytes(account.key).hex()


@dataclass
class World:
    """The payments devnet with an owner's deposit, a relayer, an in-process facilitator and a
    minimal paywall (GET /paid, PRICE in "exact" and "tessera-budget") paying `payee`."""

    network: object
    owner: AgentBudget      # on the owner's chain
    reader: AgentBudget     # on a chain with no account (what an agent holds)
    relayer: AgentBudget    # submits payments straight to the contract
    token: PaymentToken
    facilitator: TesseraFacilitator
    app: FastAPI
    payee: str
    paid_by_relayer: list = field(default_factory=list)   # its `pay` transactions

    def grant(self, key, *, budget=10 * USD, cap=USD, period=DAY, start=None, expiry=None,
              payees=None) -> int:
        now = self.reader.chain.block_timestamp()
        start = now - 60 if start is None else start
        expiry = now + 30 * DAY if expiry is None else expiry
        grant_id, _ = self.owner.grant(key.address, budget, period, cap, start, expiry,
                                       [self.payee] if payees is None else payees)
        return grant_id

    def snapshot(self, grant_id: int) -> dict:
        return {"owner deposit": self.reader.balance_of(self.reader.grants(grant_id).owner),
                "payee tokens": self.token.balance_of(self.payee),
                "contract tokens": self.token.balance_of(self.reader.address),
                "spent": self.reader.spent_in_period(grant_id)}

    def sign(self, key, grant_id: int, **changes) -> dict:
        """A payment built by hand (no client, no checks): what a bypassing agent sends."""
        terms = {"payee": self.payee, "amount": PRICE, "nonce": None, "deadline": None} | changes
        return self.reader.sign_payment(key, grant_id, terms["payee"], terms["amount"],
                                        terms["nonce"], terms["deadline"], check=False)

    def offered(self) -> PaymentRequirements:
        """The paywall's "tessera-budget" requirements, from an unpaid request's 402."""
        response = self.get()
        assert response.status_code == 402
        required = decode_payment_required_header(response.headers[PAYMENT_REQUIRED_HEADER])
        assert {r.scheme for r in required.accepts} == {"exact", SCHEME}
        return next(r for r in required.accepts if r.scheme == SCHEME)

    def get(self, client: x402Client | None = None, payment: PaymentPayload | None = None):
        headers = {PAYMENT_SIGNATURE_HEADER: encode_payment_signature_header(payment)} \
            if payment is not None else {}

        async def go():
            inner = httpx.ASGITransport(app=self.app)
            transport = x402AsyncTransport(client, inner) if client is not None else inner
            async with httpx.AsyncClient(transport=transport, base_url="http://paywall.test") as http:
                return await http.get("/paid", headers=headers)
        return run(go())


def paywall(net: X402Network, facilitator: TesseraFacilitator, pay_to: str) -> FastAPI:
    """The smallest paywall: every registered scheme's offer of PRICE for GET /paid."""
    supports = schemes()
    options = [o for s in supports if (o := s.option(net, pay_to, PRICE, 300)) is not None]
    server = x402ResourceServer(LocalFacilitatorClient(facilitator))
    for support in supports:
        server.register(net.caip2, support.server(net))
    server.initialize()
    app = FastAPI()

    @app.get("/paid")
    def paid() -> dict:
        return {"content": "paid for"}

    app.add_middleware(PaymentMiddlewareASGI, routes={"GET /paid": RouteConfig(accepts=options)},
                       server=server)
    return app


@pytest.fixture(scope="module")
def world(payments_devnet) -> World:
    network = payments_devnet
    net = X402Network.read(Chain(network))
    owner = AgentBudget(Chain(network, devnet_account(OWNER)))
    owner.deposit(DEPOSIT)
    facilitator = TesseraFacilitator(net, key_hex(devnet_account(FACILITATOR_GAS)))
    assert SCHEME in facilitator.schemes
    payee = Account.create().address
    return World(network, owner, AgentBudget(Chain(network)),
                 AgentBudget(Chain(network, devnet_account(RELAYER))), PaymentToken(Chain(network)),
                 facilitator, paywall(net, facilitator, payee), payee)


def test_an_agent_with_only_a_session_key_pays_from_its_budget(world):
    key = Account.create()   # no ETH, no TUSD: only the grant
    grant_id = world.grant(key)
    before = world.snapshot(grant_id)
    spy = SpySigner(key)
    response = world.get(budget_client(world.network, spy, grant_id))
    assert response.status_code == 200, response.text
    assert response.json() == {"content": "paid for"} and spy.calls == 1
    settled = decode_payment_response_header(response.headers[PAYMENT_RESPONSE_HEADER])
    assert settled.success and settled.payer == world.owner.chain.address
    assert settled.network == f"eip155:{world.network.chain_id}" and settled.amount == str(PRICE)
    receipt = world.reader.chain.w3.eth.get_transaction_receipt(settled.transaction)
    paid = world.reader.payments(receipt)
    assert len(paid) == 1
    assert (paid[0]["grant_id"], paid[0]["owner"], paid[0]["payee"], paid[0]["key"],
            paid[0]["amount"]) == (grant_id, world.owner.chain.address, world.payee,
                                   key.address, PRICE)
    after = world.snapshot(grant_id)
    assert after == {"owner deposit": before["owner deposit"] - PRICE,
                     "payee tokens": before["payee tokens"] + PRICE,
                     "contract tokens": before["contract tokens"] - PRICE,
                     "spent": before["spent"] + PRICE}
    assert world.reader.chain.w3.eth.get_balance(key.address) == 0   # the facilitator paid gas
    # a second request, same grant, payee and period (warm storage: the figure per request)
    again = world.get(budget_client(world.network, key, grant_id))
    assert again.status_code == 200 and world.snapshot(grant_id)["spent"] == 2 * PRICE
    tx = decode_payment_response_header(again.headers[PAYMENT_RESPONSE_HEADER]).transaction
    second = world.reader.chain.w3.eth.get_transaction_receipt(tx)["gasUsed"]
    print(f"\ngas to settle a tessera-budget payment (AgentBudget.pay on anvil): first of its "
          f"grant to a payee holding no TUSD {receipt['gasUsed']}, the next one {second}")


def test_the_model_server_takes_payment_from_a_budget(world, paid_inference_server):
    """The provider's model server (provider/inference.py), settling in-process."""
    pay_the_model_server(world, paid_inference_server)


def test_a_model_server_settling_through_the_facilitator_service_takes_it_too(
        world, remote_inference_server):
    """... and through `tessera facilitator run`'s service over HTTP."""
    pay_the_model_server(world, remote_inference_server)


def pay_the_model_server(world, server):
    key = Account.create()
    grant_id = world.grant(key, payees=[server.pay_to])
    price = server.price_for(8)
    before = (world.reader.balance_of(world.owner.chain.address), server.balance(server.pay_to))
    client = budget_client(world.network, key, grant_id, max_amount_per_payment=price)

    async def go():
        async with x402HttpxClient(client, base_url=server.url) as http:
            return await http.post(server.route, json={"prompt": "def ", "max_tokens": 8})
    response = run(go())
    assert response.status_code == 200, response.text
    assert response.json()["tokens"] == 8
    settled = decode_payment_response_header(response.headers[PAYMENT_RESPONSE_HEADER])
    assert settled.success and settled.amount == str(price)
    receipt = world.reader.chain.w3.eth.get_transaction_receipt(settled.transaction)
    assert [(p["grant_id"], p["amount"]) for p in world.reader.payments(receipt)] == \
        [(grant_id, price)]
    assert (world.reader.balance_of(world.owner.chain.address),
            server.balance(server.pay_to)) == (before[0] - price, before[1] + price)
    assert SCHEME in httpx.get(server.url + "/v1/model").json()["schemes"]
    # the SDK's spend controls refuse a request priced over the agent's cap, before signing
    spy = SpySigner(key)
    capped = budget_client(world.network, spy, grant_id, max_amount_per_payment=price - 1)

    async def over():
        async with x402HttpxClient(capped, base_url=server.url) as http:
            return await http.post(server.route, json={"prompt": "def ", "max_tokens": 8})
    with pytest.raises(X402PaymentError) as refused:
        run(over())
    assert isinstance(refused.value.__cause__, NoMatchingRequirementsError) and spy.calls == 0
    assert world.reader.balance_of(world.owner.chain.address) == before[0] - price


def test_the_facilitator_advertises_the_budget_contract(world):
    kinds = {k.scheme: k for k in world.facilitator.get_supported().kinds}
    name, version = world.reader.domain()
    assert kinds[SCHEME].extra == {"budget": world.reader.address, "name": name,
                                   "version": version}
    assert world.offered().extra == kinds[SCHEME].extra


# Each refused payment: how to set its grant up (returns the grant id and, for a replay, the
# payment already settled), and the reason the client, the facilitator and the contract give.
def _over_period_budget(world, key):
    grant_id = world.grant(key, budget=PRICE * 3 // 2, cap=PRICE)
    world.relayer.pay(world.sign(key, grant_id))
    return grant_id, None


def _replay(world, key):
    grant_id = world.grant(key)
    payment = world.sign(key, grant_id)
    paid = world.relayer.pay(payment)
    world.paid_by_relayer.append(paid.tx)
    return grant_id, payment


def _revoked(world, key):
    grant_id = world.grant(key)
    world.owner.revoke(grant_id)
    return grant_id, None


def _paused(world, key):
    grant_id = world.grant(key)
    world.owner.set_paused(grant_id, True)
    return grant_id, None


def _expired(world, key):
    now = world.reader.chain.block_timestamp()
    return world.grant(key, start=now - 3_600, expiry=now - 60), None


def _not_started(world, key):
    return world.grant(key, start=world.reader.chain.block_timestamp() + DAY), None


def _owner_balance(world, key):
    """A second owner whose deposit is below the price."""
    poor = Account.create()
    world.reader.chain.w3.provider.make_request("anvil_setBalance", [poor.address, hex(10**18)])
    world.owner.chain.send(world.token.contract.functions.transfer(poor.address, PRICE - 1))
    budget = AgentBudget(Chain(world.network, poor))
    budget.deposit(PRICE - 1)
    now = world.reader.chain.block_timestamp()
    grant_id, _ = budget.grant(key.address, 10 * USD, DAY, USD, now - 60, now + DAY, [world.payee])
    return grant_id, None


REFUSALS = {
    "over cap": lambda world, key: (world.grant(key, cap=PRICE - 1), None),
    "over period budget": _over_period_budget,
    "revoked": _revoked,
    "paused": _paused,
    "expired": _expired,
    "not started": _not_started,
    "payee not allowed": lambda world, key: (world.grant(key, payees=[Account.create().address]),
                                             None),
    "nonce used": _replay,
    "owner balance": _owner_balance,
}


@pytest.mark.parametrize("reason", list(REFUSALS))
def test_the_client_refuses_before_signing_and_nothing_moves(world, reason):
    key = Account.create()
    grant_id, replayed = REFUSALS[reason](world, key)
    before = world.snapshot(grant_id)
    spy = SpySigner(key)
    nonce = (lambda: bytes.fromhex(replayed["nonce"][2:])) if replayed else \
        (lambda: secrets.token_bytes(32))
    guard = BudgetGuard(world.reader, grant_id)
    client = x402Client().register(guard.network, BudgetClientScheme(spy, guard, nonce))
    client.set_spend_controls(spend_controls(guard.network, guard.token))
    with pytest.raises(X402PaymentError) as refused:
        world.get(client)
    assert isinstance(refused.value.__cause__, PaymentRefused)
    assert f"before signing: {reason}" in str(refused.value.__cause__)
    assert spy.calls == 0
    assert world.snapshot(grant_id) == before


@pytest.mark.parametrize("reason", list(REFUSALS))
def test_a_hand_built_payment_is_refused_by_the_facilitator_and_the_contract(world, reason):
    key = Account.create()
    grant_id, replayed = REFUSALS[reason](world, key)
    payment = replayed or world.sign(key, grant_id)
    before = world.snapshot(grant_id)
    offered = world.offered()
    payload = PaymentPayload(payload=payment, accepted=offered)
    # the paywall: its facilitator simulates `pay` and answers the contract's reason
    response = world.get(payment=payload)
    assert response.status_code == 402
    assert decode_payment_required_header(response.headers[PAYMENT_REQUIRED_HEADER]).error == reason
    # the facilitator asked to settle anyway: refused before sending anything (a payment that
    # someone else already settled, the replay, is answered as settled by that transaction: the
    # payee has been paid, review 22; the paywall's verify refused it before anything ran)
    settled = world.facilitator.settle(payload, offered)
    if reason == "nonce used":
        assert settled.success and settled.transaction == world.paid_by_relayer[-1]
    else:
        assert (settled.success, settled.error_reason, settled.transaction) == (False, reason, "")
    # the contract, sent the payment directly
    with pytest.raises(TxRefused, match=f"pay refused: {reason}"):
        world.relayer.pay(payment)
    # and a facilitator that does not simulate: the transaction is mined and reverts
    blind = BudgetFacilitatorScheme(world.reader, world.facilitator.signer,
                                    simulate_in_settle=False)
    reverted = blind.settle(payload, offered)
    if reason == "nonce used":
        assert reverted.success and reverted.transaction == world.paid_by_relayer[-1]
    else:
        assert not reverted.success and reverted.error_reason == "transaction_failed"
        assert world.reader.chain.w3.eth.get_transaction_receipt(reverted.transaction)["status"] == 0
    assert world.snapshot(grant_id) == before


def test_the_client_refuses_another_network_or_budget_contract_before_signing(world):
    key = Account.create()
    grant_id = world.grant(key)
    before = world.snapshot(grant_id)
    spy = SpySigner(key)
    scheme = BudgetClientScheme(spy, BudgetGuard(world.reader, grant_id))
    offered = world.offered()
    elsewhere = {"network": "eip155:1"}
    other_budget = {"extra": {**offered.extra, "budget": Account.create().address}}
    other_asset = {"asset": Account.create().address}
    for changes, reason in ((elsewhere, "wrong_network"), (other_budget, "wrong_budget_contract"),
                            (other_asset, "wrong_asset")):
        with pytest.raises(PaymentRefused, match=reason):
            scheme.create_payment_payload(offered.model_copy(update=changes))
    # an agent whose grant is on another chain finds nothing it may pay at this paywall
    abroad = world.network.model_copy(update={"chain_id": 1})
    with pytest.raises(X402PaymentError) as refused:
        world.get(budget_client(abroad, spy, grant_id))
    assert isinstance(refused.value.__cause__, NoMatchingRequirementsError)
    assert spy.calls == 0
    assert world.snapshot(grant_id) == before


def test_a_payment_for_another_network_or_budget_contract_is_refused(world):
    key = Account.create()
    grant_id = world.grant(key)
    before = world.snapshot(grant_id)
    offered = world.offered()
    payment = world.sign(key, grant_id)
    for changes, reason in (({"network": "eip155:1"}, "wrong_network"),
                            ({"extra": {**offered.extra, "budget": OTHER}},
                             "wrong_budget_contract")):
        elsewhere = offered.model_copy(update=changes)
        payload = PaymentPayload(payload=payment, accepted=elsewhere)
        # the paywall offered no such terms: 402 before its facilitator is asked
        assert world.get(payment=payload).status_code == 402
        # a facilitator asked directly refuses it
        assert world.facilitator.verify(payload, elsewhere).invalid_reason == reason
        assert world.facilitator.settle(payload, elsewhere).error_reason == reason
    # signed for another AgentBudget (its domain), sent with this one's terms: not the key's
    chain_id = world.network.chain_id
    name, version = world.reader.domain()
    nonce = secrets.token_bytes(32)
    deadline = world.reader.chain.block_timestamp() + 300
    typed = payment_typed_data(chain_id, OTHER, grant_id, world.payee, PRICE, nonce, deadline,
                               name, version)
    forged = {**payment, "nonce": "0x" + nonce.hex(), "deadline": deadline,
              "signature": messages.sign(key, typed)}
    payload = PaymentPayload(payload=forged, accepted=offered)
    response = world.get(payment=payload)
    assert decode_payment_required_header(
        response.headers[PAYMENT_REQUIRED_HEADER]).error == "bad signature"
    with pytest.raises(TxRefused, match="pay refused: bad signature"):
        world.relayer.pay(forged)
    # and on another chain id, the same
    typed = payment_typed_data(1, world.reader.address, grant_id, world.payee, PRICE, nonce,
                               deadline, name, version)
    forged["signature"] = messages.sign(key, typed)
    assert world.facilitator.verify(PaymentPayload(payload=forged, accepted=offered),
                                    offered).invalid_reason == "bad signature"
    assert world.snapshot(grant_id) == before


@pytest.mark.parametrize("case", ["wrong payee", "wrong amount", "deadline passed", "junk"])
def test_a_payment_that_is_not_what_the_route_asks_is_refused(world, case):
    key = Account.create()
    other_payee = Account.create().address
    grant_id = world.grant(key, payees=[world.payee, other_payee])
    before = world.snapshot(grant_id)
    offered = world.offered()
    now = world.reader.chain.block_timestamp()
    payment, reason = {
        "wrong payee": (world.sign(key, grant_id, payee=other_payee), "wrong_payee"),
        "wrong amount": (world.sign(key, grant_id, amount=PRICE - 1), "wrong_amount"),
        "deadline passed": (world.sign(key, grant_id, deadline=now - 1), "deadline passed"),
        "junk": ({**world.sign(key, grant_id), "nonce": "0xnothex"}, "invalid_payload"),
    }[case]
    payload = PaymentPayload(payload=payment, accepted=offered)
    response = world.get(payment=payload)
    assert response.status_code == 402
    assert decode_payment_required_header(response.headers[PAYMENT_REQUIRED_HEADER]).error == reason
    settled = world.facilitator.settle(payload, offered)
    assert (settled.success, settled.error_reason) == (False, reason)
    assert world.snapshot(grant_id) == before


def test_spend_controls_cap_exact_payments_from_a_wallet_too(world):
    wallet = devnet_account(RELAYER)   # holds TUSD: pays "exact" (EIP-3009) from its own balance
    token = world.token.address
    before = (world.token.balance_of(wallet.address), world.token.balance_of(world.payee))
    spy = SpySigner(wallet)
    capped = x402Client().register(world.offered().network, ExactEvmClientScheme(spy))
    capped.set_spend_controls(spend_controls(world.offered().network, token, PRICE - 1))
    with pytest.raises(X402PaymentError) as refused:
        world.get(capped)
    assert isinstance(refused.value.__cause__, NoMatchingRequirementsError) and spy.calls == 0
    assert (world.token.balance_of(wallet.address), world.token.balance_of(world.payee)) == before
    paying = x402Client().register(world.offered().network, ExactEvmClientScheme(spy))
    paying.set_spend_controls(spend_controls(world.offered().network, token, PRICE))
    assert world.get(paying).status_code == 200 and spy.calls == 1
    assert (world.token.balance_of(wallet.address), world.token.balance_of(world.payee)) == \
        (before[0] - PRICE, before[1] + PRICE)


def test_the_client_refuses_to_sign_with_a_key_that_is_not_the_grants(world):
    grant_id = world.grant(Account.create())
    spy = SpySigner(Account.create())
    scheme = BudgetClientScheme(spy, BudgetGuard(world.reader, grant_id))
    with pytest.raises(PaymentRefused, match="is not grant .* key"):
        scheme.create_payment_payload(world.offered())
    with pytest.raises(PaymentRefused, match="unknown grant"):
        BudgetClientScheme(spy, BudgetGuard(world.reader, 10**9)).create_payment_payload(
            world.offered())
    assert spy.calls == 0


def test_a_payment_about_to_expire_is_not_verified(world):
    """Verify keeps a margin before the deadline: the resource is produced before settling."""
    key = Account.create()
    grant_id = world.grant(key)
    before = world.snapshot(grant_id)
    offered = world.offered()
    soon = world.sign(key, grant_id, deadline=world.reader.chain.block_timestamp() + 2)
    response = world.get(payment=PaymentPayload(payload=soon, accepted=offered))
    assert response.status_code == 402
    assert decode_payment_required_header(
        response.headers[PAYMENT_REQUIRED_HEADER]).error == "deadline_too_soon"
    assert world.snapshot(grant_id) == before
