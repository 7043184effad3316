"""Interoperability: the official npm x402 client (`@x402/fetch` with `@x402/evm`'s "exact"
scheme, signing with viem) pays a Tessera provider's model server on anvil and gets the text.

The client runs as a real node process (tests/payments/npm_pay.mjs) against the packages that
`./scripts/setup.sh --tests` installs into .tools/. Only a missing `node` skips these tests; a
missing npm package fails them, naming the setup step, so they never pass without paying."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from tests.payments.conftest import PaidInferenceServer
from web3 import Web3

from tessera.compute.generate import generate

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("npm_pay.mjs")
NODE_MODULES = ROOT / ".tools" / "node_modules"
PACKAGES = ("@x402/fetch", "@x402/evm", "viem")
# Keccak of Transfer(address,address,uint256): the settlement must move the token, payer to payee.
TRANSFER_TOPIC = Web3.keccak(text="Transfer(address,address,uint256)")

PROMPT, MAX_TOKENS, TEMPERATURE, SEED = "def main(", 16, 0.7, 3

# Checked at import, before the session's devnet and model fixtures start (they are set up
# before any module-scoped fixture could skip).
NODE = shutil.which("node")
if NODE is None:
    pytest.skip("node is not installed: the npm x402 client needs Node.js "
                "(./scripts/setup.sh installs Debian's nodejs)", allow_module_level=True)


def body(max_tokens: int = MAX_TOKENS) -> dict:
    return {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": TEMPERATURE, "seed": SEED}


@pytest.fixture(scope="module")
def node() -> str:
    missing = [p for p in PACKAGES if not (NODE_MODULES / p / "package.json").exists()]
    if missing:
        pytest.fail(f"npm packages missing from {NODE_MODULES}: {', '.join(missing)}; "
                    "run `./scripts/setup.sh --tests`")
    return NODE


def npm_pay(node: str, server: PaidInferenceServer, request: dict,
            max_amount: int | None = None) -> tuple[int, dict]:
    """Run the npm client once: its exit code and the JSON it printed. The key travels in the
    environment, not argv; the client may pay the server's token up to `max_amount` base units
    (default: exactly the price of `request`)."""
    cap = server.price_for(request["max_tokens"]) if max_amount is None else max_amount
    args = [node, str(SCRIPT), "--url", server.url + server.route, "--rpc-url", server.rpc_url,
            "--chain-id", str(server.chain_id), "--asset", server.asset,
            "--max-amount", str(cap), "--body", json.dumps(request)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("X402_")}
    env.update(X402_PAYER_KEY=server.payer_key, X402_NODE_TOOLS=str(ROOT / ".tools"))
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert lines, f"npm_pay printed nothing (exit {done.returncode}): {done.stderr}"
    return done.returncode, json.loads(lines[-1])


@pytest.fixture(scope="module")
def npm_payment(node, paid_inference_server):
    """One payment by the npm client: (its output, balances before, balances after), balances
    as (payer, provider)."""
    server = paid_inference_server
    who = (server.payer, server.pay_to)
    before = server.balances(*who)
    code, result = npm_pay(node, server, body())
    assert code == 0, result
    return result, before, server.balances(*who)


def test_npm_client_pays_and_gets_the_text(npm_payment, paid_inference_server, tiny_model):
    server = paid_inference_server
    result, before, after = npm_payment
    price = server.price_for(MAX_TOKENS)

    # The unpaid request got 402; the client signed and the paid retry got the model's text.
    assert result["statuses"] == [402, 200], result
    assert result["status"] == 200
    answer = result["body"]
    assert answer["text"] == generate(tiny_model, PROMPT, MAX_TOKENS, TEMPERATURE, SEED).text
    assert answer["price"] == price

    # PAYMENT-RESPONSE names a real, successful transaction on this chain.
    settled = result["payment_response"]
    assert settled["success"] is True, settled
    assert settled["network"] == server.network
    assert Web3.to_checksum_address(settled["payer"]) == server.payer
    w3 = Web3(Web3.HTTPProvider(server.rpc_url))
    receipt = w3.eth.get_transaction_receipt(settled["transaction"])
    assert receipt["status"] == 1
    assert receipt["to"] == Web3.to_checksum_address(server.asset)
    transfers = [log for log in receipt["logs"]
                 if log["address"] == Web3.to_checksum_address(server.asset)
                 and log["topics"][0] == TRANSFER_TOPIC]
    assert len(transfers) == 1
    (log,) = transfers
    assert Web3.to_checksum_address(log["topics"][1][-20:]) == server.payer
    assert Web3.to_checksum_address(log["topics"][2][-20:]) == Web3.to_checksum_address(server.pay_to)
    assert int.from_bytes(log["data"], "big") == price

    # Exactly the price moved, from the payer to the provider.
    (payer_before, provider_before), (payer_after, provider_after) = before, after
    assert payer_before - payer_after == price
    assert provider_after - provider_before == price


def test_replayed_npm_signature_is_refused(npm_payment, paid_inference_server, tiny_model,
                                           monkeypatch):
    """The PAYMENT-SIGNATURE the npm client sent, sent again by another client: refused, the
    model unrun, nothing moved (EIP-3009 nonces are single-use on the token)."""
    server = paid_inference_server
    runs = []
    real = tiny_model.generate
    monkeypatch.setattr(tiny_model, "generate", lambda *a: runs.append(a) or real(*a))
    result, _, _ = npm_payment
    signature = result["payment_signature"]
    assert signature, result
    who = (server.payer, server.pay_to)
    before = server.balances(*who)

    replay = httpx.post(server.url + server.route, json=body(), timeout=60,
                        headers={"PAYMENT-SIGNATURE": signature})

    assert replay.status_code == 402, replay.text
    assert "text" not in replay.text
    assert "payment-response" not in replay.headers
    assert runs == []
    assert server.balances(*who) == before


def test_npm_client_refuses_over_its_cap_before_signing(node, paid_inference_server):
    """The npm client's own spend control: a price above its per-payment cap is refused before
    anything is signed, so nothing reaches the server or the chain."""
    server = paid_inference_server
    who = (server.payer, server.pay_to)
    before = server.balances(*who)

    code, result = npm_pay(node, server, body(), max_amount=server.price_for(MAX_TOKENS) - 1)

    assert code == 1, result
    assert "spendControls" in result["error"]
    assert result["statuses"] == [402]
    assert result["payment_signature"] is None
    assert server.balances(*who) == before
