"""The validator's attestation route answers junk with 4xx, never 500, and serves what it
signed once the message is confirmed."""

from __future__ import annotations

import httpx
import pytest
from tests.bridge.conftest import PEER, SENDER, TUSD

JUNK = [
    ("", 422), ("?source=abc&nonce=0", 422), (f"?source={PEER}&nonce=-1", 422),
    ("?source=1e999&nonce=0", 422), (f"?source={10**30}&nonce=0", 422),
    (f"?source={PEER}&nonce={2**64}", 422), (f"?source={PEER}", 422),
    ("?source=5&nonce=0", 404), (f"?source={PEER}&nonce=0", 404),
    (f"?source={PEER}&nonce=0&source=x", 422),
]


@pytest.mark.parametrize("query,status", JUNK)
def test_junk_queries_get_4xx(bridge, query, status):
    url = bridge.env.urls[7]
    reply = httpx.get(f"{url}/bridge/attestations{query}", timeout=5)
    assert reply.status_code == status, reply.text


def test_serves_the_signature_once_confirmed(bridge):
    url = bridge.env.urls[8]
    assert httpx.post(f"{url}/bridge/attestations", timeout=5).status_code == 405
    message_id = bridge.send(PEER, SENDER, 1 * TUSD)
    bridge.attest()
    assert httpx.get(f"{url}/bridge/attestations?source={PEER}&nonce=0", timeout=5).status_code == 404
    bridge.mine(PEER)
    bridge.attest()
    doc = httpx.get(f"{url}/bridge/attestations?source={PEER}&nonce=0", timeout=5).json()
    assert doc["message_id"] == "0x" + message_id.hex() and doc["epoch"] == 0
    assert doc["signer"] == bridge.attesters[8].address and len(doc["signature"]) == 2 + 130
    status = httpx.get(f"{url}/bridge/status", timeout=5).json()
    assert status["attested"] == 1 and status["confirmations"] == 2
