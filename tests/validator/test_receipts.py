"""Probe receipts without a chain: judging a provider's answer, the Merkle leaf of a probe, the
epoch report and its receipts document, and checking a leaf against a root."""

from __future__ import annotations

import time

import pytest
from eth_account import Account

from tessera.protocol import merkle, messages
from tessera.protocol.probes import ProbeReceipt as Receipt
from tessera.protocol.probes import (
    ProbeRequest,
    check_receipt_entry,
    probe_leaf,
    receipt_signer,
    receipt_typed_data,
    request_signer,
)
from tessera.validator.probe import judge, new_request
from tessera.validator.report import build_report, receipts_document
from tessera.validator.store import ProbeRecord, ValidatorStore

CHAIN_ID, PROBES = 31337, "0x" + "ab" * 20
VALIDATOR = Account.from_key(b"\x01" * 32)
PROVIDERS = [Account.from_key(bytes([i + 2]) * 32) for i in range(3)]


def answer(request: ProbeRequest, provider, signer=None, **changes) -> dict:
    typed = receipt_typed_data(CHAIN_ID, PROBES, provider.address, request.validator,
                               request.epoch, request.challenge, request.deadline)
    body = {"provider": provider.address, "validator": request.validator, "epoch": request.epoch,
            "challenge": request.challenge, "deadline": request.deadline,
            "signature": messages.sign(signer or provider, typed)}
    return {**body, **changes}


def ask(epoch: int, timeout_s: float, provider=PROVIDERS[0]) -> ProbeRequest:
    return new_request(VALIDATOR, provider.address, epoch, timeout_s, CHAIN_ID, PROBES)


def test_new_request_is_fresh_and_valid():
    before = time.time()     # the clock can pass a whole second between ask and the check
    a, b = ask(4, 3.0), ask(4, 3.0)
    assert a.challenge != b.challenge and len(bytes.fromhex(a.challenge[2:])) == 32
    assert before + 3 < a.deadline <= time.time() + 5


def test_request_refuses_bad_fields():
    good = ask(1, 3).model_dump()
    for field, bad in (("validator", "0x12"), ("epoch", -1), ("challenge", "0x" + "00" * 31),
                       ("deadline", 0), ("provider", "0x12"), ("signature", "0x12"),
                       ("epoch", 2**64), ("deadline", 2**256)):
        with pytest.raises(ValueError, match=field):
            ProbeRequest.model_validate({**good, field: bad})
    with pytest.raises(ValueError, match="extra"):
        ProbeRequest.model_validate({**good, "more": 1})


def test_new_request_is_signed_by_the_validator_for_one_provider_and_chain():
    """The signature binds the provider, the validator, the chain and the Probes contract:
    replayed to another provider, chain or deployment, or with a field changed, it recovers
    to someone else (the provider then refuses it, provider/probes.py)."""
    req = ask(7, 3)
    assert req.provider == PROVIDERS[0].address and req.validator == VALIDATOR.address
    assert request_signer(req, CHAIN_ID, PROBES) == VALIDATOR.address
    assert request_signer(req, CHAIN_ID + 1, PROBES) != VALIDATOR.address
    assert request_signer(req, CHAIN_ID, "0x" + "cd" * 20) != VALIDATOR.address
    for change in ({"provider": PROVIDERS[1].address}, {"epoch": 8},
                   {"deadline": req.deadline + 1}, {"challenge": "0x" + "00" * 32}):
        other = req.model_copy(update=change)
        assert request_signer(other, CHAIN_ID, PROBES) != VALIDATOR.address, change
    assert request_signer(req.model_copy(update={"signature": "0x" + "00" * 65}), CHAIN_ID,
                          PROBES) is None


def test_judge_accepts_the_providers_own_signature():
    req, p = ask(7, 3), PROVIDERS[0]
    body = answer(req, p)
    assert judge(req, p.address, body, CHAIN_ID, PROBES, time.time()) == (True, body["signature"], "ok")
    assert receipt_signer(Receipt.model_validate(body), CHAIN_ID, PROBES) == p.address


def test_judge_refuses_forgeries_mismatches_and_late_answers():
    req, p = ask(7, 3), PROVIDERS[0]
    cases = {
        "signed by": answer(req, p, signer=PROVIDERS[1]),                  # wrong key
        "other fields": answer(req, p, challenge="0x" + "00" * 32),        # another challenge
        "malformed": {"provider": p.address},
    }
    for reason, body in cases.items():
        ok, sig, why = judge(req, p.address, body, CHAIN_ID, PROBES, time.time())
        assert (ok, sig) == (False, "") and reason in why
    # a receipt for another chain or contract does not recover to the provider
    typed = receipt_typed_data(CHAIN_ID + 1, PROBES, p.address, req.validator, req.epoch,
                               req.challenge, req.deadline)
    ok, _, why = judge(req, p.address, answer(req, p, signature=messages.sign(p, typed)), CHAIN_ID,
                       PROBES, time.time())
    assert not ok and "signed by" in why
    ok, _, why = judge(req, p.address, answer(req, p), CHAIN_ID, PROBES, req.deadline + 1)
    assert not ok and "deadline" in why


def test_leaf_binds_every_field():
    req, p = ask(7, 3), PROVIDERS[0]
    sig = answer(req, p)["signature"]
    base = (CHAIN_ID, PROBES, p.address, VALIDATOR.address, 7, req.challenge, req.deadline, True, sig)
    leaf = probe_leaf(*base)
    variants = [
        (CHAIN_ID + 1, *base[1:]), (base[0], "0x" + "cd" * 20, *base[2:]),
        (*base[:2], PROVIDERS[1].address, *base[3:]), (*base[:4], 8, *base[5:]),
        (*base[:5], "0x" + "00" * 32, *base[6:]), (*base[:6], req.deadline + 1, *base[7:]),
        (*base[:7], False, ""),
    ]
    assert len({probe_leaf(*v) for v in variants} | {leaf}) == len(variants) + 1
    with pytest.raises(ValueError, match="signature"):
        probe_leaf(*base[:7], False, sig)


def _records(tmp_path, epoch: int) -> list[ProbeRecord]:
    store = ValidatorStore(tmp_path / "v.db")
    outcomes = [(PROVIDERS[2], True), (PROVIDERS[0], False), (PROVIDERS[2], False),
                (PROVIDERS[1], True)]
    for p, ok in outcomes:
        req = new_request(VALIDATOR, p.address, epoch, 3, CHAIN_ID, PROBES)
        sig = answer(req, p)["signature"] if ok else ""
        store.add_probe(epoch, p.address, "http://x", req.challenge, req.deadline, ok, sig,
                        "ok" if ok else "unreachable", 1.0, time.time())
    store.add_probe(epoch + 1, PROVIDERS[0].address, "http://x", "0x" + "00" * 32, 1, False, "",
                    "other epoch", None, time.time())
    return store.probes(epoch)


def test_report_and_every_leaf_checks_against_the_root(tmp_path):
    records = _records(tmp_path, 5)
    assert len(records) == 4
    report = build_report(records, CHAIN_ID, PROBES, VALIDATOR.address)
    by_value = sorted((p.address for p in PROVIDERS), key=lambda a: int(a, 16))
    assert [t[0] for t in report.tallies] == by_value
    counts = {t[0]: t[1:] for t in report.tallies}
    assert counts == {PROVIDERS[0].address: (0, 1), PROVIDERS[1].address: (1, 0),
                      PROVIDERS[2].address: (1, 1)}
    assert report.receipt_count == 4 and report.root == merkle.root(report.leaves)
    doc = receipts_document(records, report, CHAIN_ID, PROBES, VALIDATOR.address, None)
    for entry in doc["receipts"]:
        assert check_receipt_entry(entry, report.root, 4, CHAIN_ID, PROBES, VALIDATOR.address,
                                   5) is None
    entry = doc["receipts"][0]
    forged_sig = messages.sign(PROVIDERS[0], receipt_typed_data(
        CHAIN_ID, PROBES, entry["provider"], VALIDATOR.address, 5, entry["challenge"],
        entry["deadline"]))
    problems = {
        "flipped": check_receipt_entry(dict(entry, answered=False, signature=""), report.root, 4,
                                       CHAIN_ID, PROBES, VALIDATOR.address, 5),
        "other signer": check_receipt_entry(dict(entry, signature=forged_sig), report.root, 4,
                                            CHAIN_ID, PROBES, VALIDATOR.address, 5),
        "other index": check_receipt_entry(dict(entry, index=1), report.root, 4, CHAIN_ID, PROBES,
                                           VALIDATOR.address, 5),
        "other epoch": check_receipt_entry(entry, report.root, 4, CHAIN_ID, PROBES,
                                           VALIDATOR.address, 6),
        "missing field": check_receipt_entry({"index": 0}, report.root, 4, CHAIN_ID, PROBES,
                                             VALIDATOR.address, 5),
    }
    assert all(problems.values()), problems
    assert "not the provider" in problems["other signer"]


def test_report_refuses_empty_or_mixed_epochs(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        build_report([], CHAIN_ID, PROBES, VALIDATOR.address)
    records = _records(tmp_path, 5)
    mixed = records + ValidatorStore(tmp_path / "v.db").probes(6)
    with pytest.raises(ValueError, match="several epochs"):
        build_report(mixed, CHAIN_ID, PROBES, VALIDATOR.address)


def test_store_tracks_unreported_epochs(tmp_path):
    _records(tmp_path, 5)
    store = ValidatorStore(tmp_path / "v.db")
    assert store.unreported_epochs(before=6) == [5]
    assert store.unreported_epochs(before=7) == [5, 6]
    store.save_report(5, "posted", "0x" + "11" * 32, 4, "0xtx", 50_000)
    store.save_report(6, "refused", detail="probes: epoch too old")
    assert store.unreported_epochs(before=7) == []
    assert store.last_probed_epoch() == 6 and store.last_posted_epoch() == 5
    assert store.report(5).gas_used == 50_000
