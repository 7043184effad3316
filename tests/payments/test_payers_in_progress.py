"""Review 22, on the payments devnet: one payer, one paid request in progress; and a payment that
someone else settled first is served, not withheld.

How a rational party would try to get round the paywall, and the test that tries it:
- the same signed payment spelled N ways (a grant " 5 ", a nonce without 0x or in capitals) sent
  at once, so that a guard keyed on the payment's text lets each run the model for one
  settlement: the guard is keyed on the parsed payer, and a spelling the server does not read is
  refused outright (`test_one_payment_spelled_many_ways_runs_the_model_once`);
- N distinct payments of a grant whose budget covers one, sent at once, each verified against
  the same chain state (`test_payments_beyond_the_budget_run_the_model_once`);
- a mempool copier submits the signed payment (AgentBudget `pay`, or the token's
  `transferWithAuthorization`) before the provider's facilitator does: the client has paid, so
  it is served, with the copier's transaction as its receipt
  (`test_a_payment_settled_by_someone_else_is_served`).
Generation is held on an event, not a sleep, until the other requests have been answered.
"""

from __future__ import annotations

import threading

import pytest
from eth_account import Account
from web3 import Web3
from x402.http import decode_payment_response_header, encode_payment_signature_header
from x402.schemas import PaymentPayload

import tessera.chain.x402_budget  # noqa: F401  (registers "tessera-budget")
from tessera.chain.accounts import devnet_account
from tessera.chain.agent_budget import AgentBudget
from tessera.chain.client import Chain
from tessera.chain.tokens import PaymentToken
from tessera.chain.x402_facilitator import X402Network
from tessera.provider.inference import payment_key, payment_signer

from .conftest import generate_body, payment_required, send_paid, sign_exact

USD = 10**6
DAY = 86_400
OWNER, COPIER = 3, 6


@pytest.fixture(scope="module")
def budget(payments_devnet):
    owner = AgentBudget(Chain(payments_devnet, devnet_account(OWNER)))
    owner.deposit(100 * USD)
    return {"owner": owner, "reader": AgentBudget(Chain(payments_devnet)),
            "copier": AgentBudget(Chain(payments_devnet, devnet_account(COPIER)))}


def grant(budget, key, payee, limit: int = 10 * USD) -> int:
    now = budget["reader"].chain.block_timestamp()
    gid, _ = budget["owner"].grant(key.address, limit, DAY, limit, now - 60, now + 30 * DAY, [payee])
    return gid


@pytest.fixture
def held(tiny_model, monkeypatch):
    """Generation waits until `release` is set (or 20 s): the generations run, counted."""
    runs, release, real = [], threading.Event(), tiny_model.generate

    def waiting(prompt, max_tokens, *args):
        runs.append(prompt)
        release.wait(20)
        return real(prompt, max_tokens, *args)
    monkeypatch.setattr(tiny_model, "generate", waiting)
    return runs, release


def fire(server, body, payloads, release) -> list:
    """Send every payload at once; release the generations once all but one are answered."""
    out: list = []
    done = threading.Condition()

    def send(p):
        response = send_paid(server, body, p)
        with done:
            out.append(response)
            done.notify_all()
    threads = [threading.Thread(target=send, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    with done:
        done.wait_for(lambda: len(out) >= len(payloads) - 1, timeout=20)
    release.set()
    for t in threads:
        t.join()
    return out


def budget_option(server, body):
    return next(r for r in payment_required(server, body).accepts if r.scheme == "tessera-budget")


def test_one_payment_spelled_many_ways_runs_the_model_once(paid_inference_server, budget, held):
    s, body = paid_inference_server, generate_body(8)
    runs, release = held
    option = budget_option(s, body)
    key = Account.create()
    gid = grant(budget, key, s.pay_to)
    signed = budget["reader"].sign_payment(key, gid, s.pay_to, int(option.amount))
    nonce = signed["nonce"][2:]
    spellings = [dict(signed), dict(signed, grant=str(gid)), dict(signed, nonce="0x" + nonce.upper()),
                 dict(signed, grant=f" {gid} "), dict(signed, nonce=nonce)]
    before = budget["reader"].balance_of(budget["owner"].chain.address)
    answers = fire(s, body, [PaymentPayload(x402_version=2, accepted=option, payload=p)
                             for p in spellings], release)
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(200) == 1 and set(statuses) <= {200, 400, 402, 409}, statuses
    assert len(runs) == 1
    assert before - budget["reader"].balance_of(budget["owner"].chain.address) == int(option.amount)
    spelled = [r for r in answers if r.status_code == 400]
    assert spelled and all("grant" in r.text for r in spelled), [r.text for r in spelled]


def test_payments_beyond_the_budget_run_the_model_once(paid_inference_server, budget, held):
    s, body = paid_inference_server, generate_body(8)
    runs, release = held
    option = budget_option(s, body)
    key = Account.create()
    gid = grant(budget, key, s.pay_to, limit=int(option.amount))       # one request's worth
    payments = [budget["reader"].sign_payment(key, gid, s.pay_to, int(option.amount))
                for _ in range(4)]
    answers = fire(s, body, [PaymentPayload(x402_version=2, accepted=option, payload=p)
                             for p in payments], release)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 409, 409, 409], statuses
    assert "one at a time per payer" in next(r.text for r in answers if r.status_code == 409)
    assert len(runs) == 1
    again = send_paid(s, body, PaymentPayload(x402_version=2, accepted=option, payload=payments[1]))
    assert again.status_code == 402 and len(runs) == 1       # verified against what the first left


def test_a_payment_settled_by_someone_else_is_served(paid_inference_server, budget, tiny_model,
                                                     monkeypatch, payments_devnet):
    s, body = paid_inference_server, generate_body(8)
    option = budget_option(s, body)
    key = Account.create()
    gid = grant(budget, key, s.pay_to)
    signed = budget["reader"].sign_payment(key, gid, s.pay_to, int(option.amount))
    exact_option = next(r for r in payment_required(s, body).accepts if r.scheme == "exact")
    exact = sign_exact(s.payer_key, exact_option)
    copier = Chain(payments_devnet, devnet_account(COPIER))
    real = tiny_model.generate
    copy_first = {"payment": None}

    def generate_then_copy(*args):
        out = real(*args)
        copy_first["payment"]()          # the copier's transaction lands before the settlement
        return out
    monkeypatch.setattr(tiny_model, "generate", generate_then_copy)

    copy_first["payment"] = lambda: budget["copier"].pay(signed)
    before = budget["reader"].balance_of(budget["owner"].chain.address)
    answer = send_paid(s, body, PaymentPayload(x402_version=2, accepted=option, payload=signed))
    assert answer.status_code == 200 and "text" in answer.json(), answer.text
    receipt = decode_payment_response_header(answer.headers["PAYMENT-RESPONSE"])
    assert receipt.success and receipt.transaction.startswith("0x")
    assert before - budget["reader"].balance_of(budget["owner"].chain.address) == int(option.amount)

    auth = exact.payload["authorization"]
    signature = bytes.fromhex(exact.payload["signature"].removeprefix("0x"))
    token = PaymentToken(copier)

    def copy_exact():
        fn = token.contract.functions.transferWithAuthorization(
            Web3.to_checksum_address(auth["from"]), Web3.to_checksum_address(auth["to"]),
            int(auth["value"]), int(auth["validAfter"]), int(auth["validBefore"]),
            bytes.fromhex(auth["nonce"][2:]), signature[64], signature[:32], signature[32:64])
        copier.send(fn)
    copy_first["payment"] = copy_exact
    payer_before = token.balance_of(auth["from"])
    answer = send_paid(s, body, exact)
    assert answer.status_code == 200 and "text" in answer.json(), answer.text
    assert payer_before - token.balance_of(auth["from"]) == int(exact_option.amount)


def test_a_payment_naming_a_victim_it_cannot_sign_does_not_hold_the_victims_turn(
        paid_inference_server, held, payments_devnet):
    """Review 24: keyed on the named payer alone, anyone could send payments signed by a stranger
    that NAME a victim as their payer ("exact" authorization.from): each held the victim's turn
    while the paywall verified it, and the victim's own paid requests got 409. The key is the
    payer and who signed, so the forgeries take only their own turn (and are refused, 402)."""
    s, body = paid_inference_server, generate_body(8)
    runs, release = held
    option = next(r for r in payment_required(s, body).accepts if r.scheme == "exact")
    victim = Account.from_key(s.payer_key)
    forged = sign_exact(Account.create().key.hex(), option)
    forged.payload["authorization"]["from"] = victim.address
    genuine = sign_exact(s.payer_key, option)

    def key(payload):
        scope = {"headers": [(b"payment-signature", encode_payment_signature_header(payload).encode())]}
        return payment_key(scope, payment_signer(X402Network.read(Chain(payments_devnet))))
    assert key(forged)[1] != key(genuine)[1]                  # the forgery takes another turn
    assert key(genuine)[1] == key(sign_exact(s.payer_key, option))[1]   # the victim's: one turn
    answers = fire(s, body, [forged, genuine], release)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 402], statuses                   # the victim served, the forgery not
    assert len(runs) == 1


FAKE_SETTLE = """# pragma version ~=0.4.3
interface Token:
    def transferWithAuthorization(_from: address, to: address, amount: uint256,
                                  validAfter: uint256, validBefore: uint256, nonce: bytes32,
                                  v: uint8, r: bytes32, s: bytes32): nonpayable

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

@external
def go(token: address, _from: address, to: address, amount: uint256, va: uint256, vb: uint256,
       nonce: bytes32, v: uint8, r: bytes32, s: bytes32, payee: address, fake: uint256):
    extcall Token(token).transferWithAuthorization(_from, to, amount, va, vb, nonce, v, r, s)
    log Transfer(sender=_from, receiver=payee, value=fake)
"""


def test_a_used_nonce_with_a_fake_transfer_log_is_not_a_settlement(paid_inference_server,
                                                                  payments_devnet, tiny_model,
                                                                  monkeypatch):
    """Review 24: the payer uses its payment's nonce for a second authorization of 1 unit to
    ITSELF, through a contract of its own that also logs a Transfer(payer -> payee, price) of
    its own making: only the token's Transfer logged right after that AuthorizationUsed counts,
    so the paywall does not take it for the payment settled by someone else (402, nothing
    served; the payee was not paid)."""
    import vyper
    import x402.mechanisms.evm.utils as evm_utils

    s, body = paid_inference_server, generate_body(8)
    payer = Account.from_key(s.payer_key)
    chain = Chain(payments_devnet, payer)
    out = vyper.compile_code(FAKE_SETTLE, output_formats=["abi", "bytecode"])
    w3 = chain.w3
    tx = w3.eth.contract(abi=out["abi"], bytecode=out["bytecode"]).constructor().build_transaction(
        {"from": payer.address, "nonce": w3.eth.get_transaction_count(payer.address)})
    deployed = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(payer.sign_transaction(tx).raw_transaction))
    fake = w3.eth.contract(address=deployed["contractAddress"], abi=out["abi"])
    option = next(r for r in payment_required(s, body).accepts if r.scheme == "exact")
    payment = sign_exact(s.payer_key, option)
    nonce = payment.payload["authorization"]["nonce"]
    monkeypatch.setattr(evm_utils, "create_nonce", lambda: nonce)
    to_self = sign_exact(s.payer_key, option, to=payer.address, value=1)
    a = to_self.payload["authorization"]
    sig = bytes.fromhex(to_self.payload["signature"].removeprefix("0x"))
    real = tiny_model.generate

    def generate_then_spend_the_nonce(*args):
        result = real(*args)
        chain.send(fake.functions.go(option.asset, payer.address, payer.address, 1,
                                     int(a["validAfter"]), int(a["validBefore"]),
                                     bytes.fromhex(nonce[2:]), sig[64], sig[:32], sig[32:64],
                                     Web3.to_checksum_address(s.pay_to), int(option.amount)))
        return result
    monkeypatch.setattr(tiny_model, "generate", generate_then_spend_the_nonce)
    payee_before = s.balance(s.pay_to)
    answer = send_paid(s, body, payment)
    assert answer.status_code == 402 and "text" not in answer.json(), answer.text
    assert s.balance(s.pay_to) == payee_before
