"""Hardware challenges without a chain: the derivation, the exactness that lets a CPU check a GPU,
the sampled-row check and its catch rate, the size and deadline rule, and judging answers."""

from __future__ import annotations

import random
import secrets

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tessera.chain.accounts import devnet_account
from tessera.compute import hardware_challenge as hw
from tessera.protocol import hardware_challenge as hc
from tessera.protocol import messages
from tessera.validator.config import HardwareSection
from tessera.validator.hardware import judge_answer

CHAIN_ID = 31337
PROBES = "0x" + "ab" * 20
SEED = "0x" + "5e" * 32
PROVIDER, OTHER, VALIDATOR = devnet_account(3), devnet_account(4), devnet_account(7)


def _seed() -> str:
    return "0x" + secrets.token_hex(32)


# -- derivation ------------------------------------------------------------------------------
def test_entries_are_small_integers_spread_evenly():
    a = hw.derive_matrix(SEED, "A", 256)
    assert a.dtype == torch.float32 and a.shape == (256, 256)
    values, counts = torch.unique(a, return_counts=True)
    assert values.tolist() == [float(v) for v in range(-8, 8)]
    share = counts.double() / a.numel()
    assert torch.all((share - 1 / 16).abs() < 0.01), share


def test_derivation_is_deterministic_and_blockwise_consistent():
    size = 320  # not a multiple of BLOCK_ROWS, so the last block is short
    whole = hw.derive_matrix(SEED, "B", size)
    assert torch.equal(whole, hw.derive_matrix(SEED, "B", size))
    assert torch.equal(whole[37:301], hw.derive_rows(SEED, "B", size, 37, 301))
    assert not torch.equal(whole, hw.derive_matrix(SEED, "A", size))
    assert not torch.equal(whole, hw.derive_matrix(_seed(), "B", size))


def test_derivation_refuses_bad_arguments():
    with pytest.raises(ValueError, match="'A' or 'B'"):
        hw.derive_rows(SEED, "C", 64, 0, 1)
    with pytest.raises(ValueError, match="outside"):
        hw.derive_rows(SEED, "A", 64, 10, 65)
    with pytest.raises(ValueError, match="32 bytes"):
        hw.derive_rows("0x1234", "A", 64, 0, 1)


def test_float32_product_is_exact_in_any_order():
    """What lets a CPU validator check a GPU's answer bit for bit: every partial sum is an
    integer below 2**24, so float32 in any summation order equals the float64 truth."""
    size = 512
    a, b = hw.derive_matrix(SEED, "A", size), hw.derive_matrix(SEED, "B", size)
    truth = a.double() @ b.double()
    assert torch.equal((a @ b).double(), truth)
    assert torch.equal((b.T @ a.T).T.double(), truth)  # another kernel, another order
    halves = a[:, :256] @ b[:256] + a[:, 256:] @ b[256:]
    assert torch.equal(halves.double(), truth)
    assert torch.equal(hw.compute_fingerprints(SEED, size),
                       hw.row_fingerprints(SEED, hw.expected_rows(SEED, size, list(range(size)))))


# -- the sampled-row check -------------------------------------------------------------------
def test_honest_answer_passes_and_one_wrong_entry_is_caught():
    size = 128
    seed = _seed()
    c = hw.derive_matrix(seed, "A", size) @ hw.derive_matrix(seed, "B", size)
    honest = hw.row_fingerprints(seed, c).tolist()
    assert hw.wrong_rows(seed, size, honest, list(range(size))) == []
    c[17, 99] += 1  # one entry off by one
    forged = hw.row_fingerprints(seed, c).tolist()
    assert hw.wrong_rows(seed, size, forged, [3, 17, 64]) == [17]
    assert hw.wrong_rows(seed, size, forged, [3, 64]) == []  # an unsampled row is not seen


def test_fingerprint_is_not_a_linear_sketch():
    """C @ v can be had from A @ (B @ v) without C; the fingerprint must not be one of those."""
    seed = _seed()
    c = hw.derive_matrix(seed, "A", 64) @ hw.derive_matrix(seed, "B", 64)
    d = torch.zeros_like(c)
    d[0, 0], d[0, 1] = 1, -1  # the row sum stays the same
    assert hw.row_fingerprints(seed, c)[0] != hw.row_fingerprints(seed, c + d)[0]
    assert hw.row_fingerprints(seed, 2 * c)[0] != 2 * hw.row_fingerprints(seed, c)[0]


def test_lazy_provider_passes_at_the_predicted_rate():
    """A provider that skipped a share f of the rows (garbage fingerprints there) passes k
    sampled rows with probability (1 - f)**k; measured over many independent samplings."""
    size, k, trials = 64, 4, 1500
    seed = _seed()
    rng = random.Random(7)
    honest = hw.compute_fingerprints(seed, size).tolist()
    skipped = set(rng.sample(range(size), size // 4))  # f = 0.25
    lazy = [v + 1 if r in skipped else v for r, v in enumerate(honest)]
    truth = set(hw.wrong_rows(seed, size, lazy, list(range(size))))
    assert truth == skipped
    passed = sum(not (set(rng.sample(range(size), k)) & truth) for _ in range(trials))
    # the validator samples rows without replacement: C(48, 4) / C(64, 4)
    exact = (48 * 47 * 46 * 45) / (64 * 63 * 62 * 61)
    assert exact <= hc.pass_probability(0.25, k)  # the with-replacement bound is the looser one
    assert abs(passed / trials - exact) < 0.04, (passed / trials, exact)
    assert hw.wrong_rows(seed, size, lazy, sorted(skipped)[:2]) == sorted(skipped)[:2]


# -- sizes and the deadline rule ---------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(benchmark=st.integers(1, 10**9), target=st.floats(0.01, 10), slack=st.floats(1, 20),
       allowance=st.floats(0, 5))
def test_plan_fits_the_claimed_benchmark(benchmark, target, slack, allowance):
    plan = hc.plan_challenge(benchmark, target, slack, allowance)
    assert plan.size % hc.SIZE_STEP == 0 and hc.MIN_SIZE <= plan.size <= hc.MAX_SIZE
    assert plan.expected_s == pytest.approx(2 * plan.size**3 / (benchmark * 1e6))
    assert plan.deadline_s == pytest.approx(slack * plan.expected_s + allowance)
    if hc.MIN_SIZE < plan.size < hc.MAX_SIZE:  # not clamped: the largest size within target
        assert plan.expected_s <= target * (1 + 1e-9)
        assert 2 * (plan.size + hc.SIZE_STEP) ** 3 / (benchmark * 1e6) > target


def test_deadline_rule():
    plan = hc.plan_challenge(100_000, 0.5, 4.0, 1.0)
    assert hc.in_time(plan.deadline_s, plan) and hc.in_time(0.1, plan)
    assert not hc.in_time(plan.deadline_s + 1e-6, plan)
    # claiming k times the real throughput makes the product take k times the expected time
    assert not hc.in_time(plan.expected_s * 10, plan)


def test_plan_refuses_bad_inputs():
    for args in ((0, 0.5, 4, 1), (100, 0, 4, 1), (100, 0.5, 0.5, 1), (100, 0.5, 4, -1)):
        with pytest.raises(ValueError):
            hc.plan_challenge(*args)
    with pytest.raises(ValidationError, match="slack"):
        HardwareSection(slack=0.5)


def _signed_request(size: int, signer=None, chain_id=CHAIN_ID) -> hc.HardwareChallengeRequest:
    seed, deadline_ms = _seed(), 10**13
    typed = hc.request_typed_data(chain_id, PROBES, PROVIDER.address, VALIDATOR.address, seed,
                                  size, deadline_ms)
    return hc.HardwareChallengeRequest(
        provider=PROVIDER.address, validator=VALIDATOR.address, seed=seed, size=size,
        deadline_ms=deadline_ms, signature=messages.sign(signer or VALIDATOR, typed))


def test_request_validation_names_the_field():
    ok = _signed_request(128).model_dump()
    for field, bad in (("size", 100), ("size", hc.MAX_SIZE + 64), ("seed", "0x12"),
                       ("deadline_ms", 0), ("validator", "nope"), ("provider", "0x12"),
                       ("signature", "0x00")):
        with pytest.raises(ValidationError, match=field):
            hc.HardwareChallengeRequest.model_validate({**ok, field: bad})


def test_request_signature_names_chain_contract_and_every_field():
    request = _signed_request(128)
    assert hc.request_signer(request, CHAIN_ID, PROBES) == VALIDATOR.address
    assert hc.request_signer(request, CHAIN_ID + 1, PROBES) != VALIDATOR.address
    assert hc.request_signer(request, CHAIN_ID, "0x" + "cd" * 20) != VALIDATOR.address
    for field, other in (("size", 192), ("deadline_ms", 10**13 + 1), ("seed", _seed()),
                         ("provider", OTHER.address)):
        changed = request.model_copy(update={field: other})
        assert hc.request_signer(changed, CHAIN_ID, PROBES) != VALIDATOR.address, field
    assert hc.request_signer(_signed_request(128, signer=OTHER), CHAIN_ID,
                             PROBES) == OTHER.address


# -- judging answers -----------------------------------------------------------------------------


def _answer(request: hc.HardwareChallengeRequest, signer=PROVIDER, chain_id=CHAIN_ID,
            fingerprints: list[int] | None = None) -> dict:
    values = fingerprints or hw.compute_fingerprints(request.seed, request.size).tolist()
    packed = hc.pack_fingerprints(values)
    typed = hc.answer_typed_data(chain_id, PROBES, PROVIDER.address, request.validator,
                                 request.seed, request.size, request.deadline_ms, packed)
    return {"provider": PROVIDER.address, "validator": request.validator, "seed": request.seed,
            "size": request.size, "deadline_ms": request.deadline_ms, "fingerprints": packed,
            "device": "cpu", "compute_ms": 1.0, "signature": messages.sign(signer, typed)}


@pytest.fixture
def challenge():
    plan = hc.plan_challenge(50_000, 0.01, 4.0, 1.0)
    return _signed_request(plan.size), plan


def _judge(challenge, body, elapsed=0.1, rows=None):
    request, plan = challenge
    return judge_answer(request, plan, PROVIDER.address, body, elapsed, CHAIN_ID, PROBES,
                        rows or list(range(request.size)))


def test_judge_accepts_an_honest_answer_in_time(challenge):
    body = _answer(challenge[0])
    outcome, reason, signature = _judge(challenge, body)
    assert (outcome, signature) == ("passed", body["signature"]), reason


def test_judge_fails_late_wrong_and_forged_answers(challenge):
    request, plan = challenge
    body = _answer(request)
    assert _judge(challenge, body, elapsed=plan.deadline_s + 0.01)[0] == "late"
    values = hw.compute_fingerprints(request.seed, request.size).tolist()
    values[5] ^= 1
    outcome, reason, _ = _judge(challenge, _answer(request, fingerprints=values))
    assert (outcome, reason) == ("wrong", "rows [5] of the product are wrong")
    outcome, reason, _ = _judge(challenge, _answer(request, signer=OTHER))
    assert outcome == "wrong" and OTHER.address in reason
    outcome, reason, _ = _judge(challenge, _answer(request, chain_id=CHAIN_ID + 1))
    assert outcome == "wrong" and "not by the provider" in reason
    outcome, reason, _ = _judge(challenge, {**body, "seed": _seed()})
    assert (outcome, reason) == ("wrong", "answer names other fields than the challenge")
    outcome, reason, _ = _judge(challenge, {**body, "fingerprints": body["fingerprints"][:-16]})
    assert outcome == "wrong" and "malformed" in reason
