"""Probe one provider: POST a fresh random challenge, signed by this validator, to its /probe
and judge the answer.

An answer counts only when it arrives within the timeout and before the deadline, names
exactly what was asked, and is signed by the provider's own key; anything else is a miss,
with the reason kept beside it (the reason is the validator's note, not part of the leaf)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import pydantic_core
import requests
from eth_account.signers.local import LocalAccount
from pydantic import ValidationError

from tessera.protocol.probes import ProbeReceipt, ProbeRequest, receipt_signer, signed_request

MAX_ANSWER_BYTES = 64 << 10   # a receipt is a few hundred bytes; more is read no further


@dataclass(frozen=True)
class ProbeOutcome:
    challenge: str
    deadline: int
    answered: bool
    signature: str  # "" when missed
    reason: str     # "ok" or why it was missed
    latency_ms: float | None


def new_request(account: LocalAccount, provider: str, epoch: int, timeout_s: float,
                chain_id: int, probes: str) -> ProbeRequest:
    """A fresh challenge to `provider`, signed by the validator's `account` (the provider
    answers only a request its validator signed, for it, on this chain); the deadline (unix
    seconds) leaves the provider `timeout_s`, rounded up."""
    deadline = int(time.time() + timeout_s) + 1
    return signed_request(account, chain_id, probes, provider, epoch,
                          "0x" + secrets.token_hex(32), deadline)


def judge(request: ProbeRequest, provider: str, body: object, chain_id: int, probes: str,
          answered_at: float) -> tuple[bool, str, str]:
    """(answered, signature, reason) for a provider's reply body."""
    try:
        receipt = ProbeReceipt.model_validate(body)
    except ValidationError as exc:
        return False, "", f"malformed receipt: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}"
    asked = (provider.lower(), request.validator.lower(), request.epoch, request.challenge,
             request.deadline)
    got = (receipt.provider.lower(), receipt.validator.lower(), receipt.epoch, receipt.challenge,
           receipt.deadline)
    if got != asked:
        return False, "", "receipt names other fields than the probe"
    signer = receipt_signer(receipt, chain_id, probes)
    if signer is None or signer.lower() != provider.lower():
        return False, "", f"receipt signed by {signer}, not by the provider"
    if answered_at > request.deadline:
        return False, "", "answered after the deadline"
    return True, receipt.signature, "ok"


def probe(session: requests.Session, endpoint: str, provider: str, request: ProbeRequest,
          timeout_s: float, chain_id: int, probes: str) -> ProbeOutcome:
    """Send one probe and judge it. Never raises for the provider's faults."""
    start = time.monotonic()

    def missed(reason: str, latency: float | None = None) -> ProbeOutcome:
        return ProbeOutcome(request.challenge, request.deadline, False, "", reason, latency)

    try:
        with session.post(endpoint.rstrip("/") + "/probe", json=request.model_dump(),
                          timeout=timeout_s, stream=True) as reply:
            status, raw = reply.status_code, bytearray()
            for chunk in reply.iter_content(8192):
                raw += chunk
                if len(raw) > MAX_ANSWER_BYTES:
                    break
    except requests.Timeout:
        return missed(f"no answer within {timeout_s} s")
    except requests.RequestException as exc:
        return missed(f"unreachable: {type(exc).__name__}")
    latency_ms = round((time.monotonic() - start) * 1000, 1)
    if latency_ms > timeout_s * 1000:
        return missed(f"answered after {latency_ms} ms (timeout {timeout_s} s)", latency_ms)
    if len(raw) > MAX_ANSWER_BYTES:
        return missed(f"answer is larger than {MAX_ANSWER_BYTES} bytes", latency_ms)
    if status != 200:
        return missed(f"HTTP {status}: {raw[:200].decode(errors='replace')}", latency_ms)
    try:   # pydantic-core stops at a fixed depth; json.loads would recurse until it crashed
        body = pydantic_core.from_json(bytes(raw))
    except ValueError as exc:
        return missed(f"answer is not JSON: {exc}", latency_ms)
    answered, signature, reason = judge(request, provider, body, chain_id, probes, time.time())
    return ProbeOutcome(request.challenge, request.deadline, answered, signature, reason, latency_ms)
