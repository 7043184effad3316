"""Hardware challenges: a timed matrix product that only the claimed device class finishes in time.

Pure (no I/O, no torch): the messages, the integer hash both sides derive the matrices and the
fingerprints from, the size and deadline rules. The arithmetic itself runs on a device in
`compute/hardware_challenge.py`. A validator sends a fresh random 32-byte `seed` and a size `n`;
from the seed both sides derive two n x n matrices A and B whose entries are small integers in
[-8, 7] (a counter-based hash, the same bits on every device). The provider computes C = A @ B
in float32 on its device: every product is at most 64 and every partial sum at most 64 n < 2**24,
so float32 (and TF32, and any summation order) is exact and a GPU and a CPU produce the same
integers bit for bit; no rounding tolerance is needed.

The provider answers with one fingerprint per row of C, a sum over the row of a nonlinear hash of
(column, value): it needs every entry of the row, so it needs the whole product. The validator
recomputes `k` random rows itself (k * n**2 multiply-adds, k/n of the provider's work, on a CPU)
and compares fingerprints; a provider that skipped a share f of the rows passes with probability
(1 - f)**k. Timing: the validator picks n so that the provider's registered benchmark (MFLOP/s)
finishes in about `target_s`, and requires the answer within

    deadline_s = slack * expected_s + allowance_s,   expected_s = 2 n**3 / (benchmark * 1e6)

measured by its own clock from sending to receiving (docs/hardware.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tessera.protocol import messages

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
BYTES32 = r"^0x[0-9a-f]{64}$"
SIGNATURE = r"^0x[0-9a-fA-F]{130}$"

MIN_SIZE = 64
MAX_SIZE = 16384   # 1 GiB per float32 matrix; above that the O(n**2) parts dominate anyway
SIZE_STEP = 64
FINGERPRINT_BYTES = 8

MASK32 = 0xFFFFFFFF
_SALT_A, _SALT_B, _SALT_F = 0x243F6A88, 0x85A308D3, 0x13198A2E  # digits of pi: lanes of the seed


class HardwareChallengeRequest(BaseModel):
    """What a validator POSTs to a provider's /hardware-challenge, signed by the validator."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(pattern=ADDRESS)
    validator: str = Field(pattern=ADDRESS)
    seed: str = Field(pattern=BYTES32, description="32 fresh random bytes, 0x + lowercase hex")
    size: int = Field(ge=MIN_SIZE, le=MAX_SIZE, multiple_of=SIZE_STEP,
                      description="n: the matrices are n x n")
    deadline_ms: int = Field(gt=0, description="unix milliseconds after which the provider "
                                               "must not sign")
    signature: str = Field(pattern=SIGNATURE, description="the validator's EIP-712 signature")


class HardwareChallengeAnswer(BaseModel):
    """A provider's signed answer: the row fingerprints of C = A @ B."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(pattern=ADDRESS)
    validator: str = Field(pattern=ADDRESS)
    seed: str = Field(pattern=BYTES32)
    size: int = Field(ge=MIN_SIZE, le=MAX_SIZE, multiple_of=SIZE_STEP)
    deadline_ms: int = Field(gt=0)
    fingerprints: str = Field(pattern=r"^0x[0-9a-f]*$",
                              description="n big-endian uint64 row fingerprints, hex")
    device: str = Field(max_length=64, description="what computed it (the provider's note)")
    compute_ms: float = Field(ge=0, description="the provider's own timing (its note)")
    signature: str = Field(pattern=SIGNATURE)

    @model_validator(mode="after")
    def _one_fingerprint_per_row(self):
        if len(self.fingerprints) != 2 + 2 * FINGERPRINT_BYTES * self.size:
            raise ValueError(f"fingerprints must hold {self.size} values of "
                             f"{FINGERPRINT_BYTES} bytes")
        return self

    def fingerprint_values(self) -> list[int]:
        raw = bytes.fromhex(self.fingerprints[2:])
        return [int.from_bytes(raw[i:i + FINGERPRINT_BYTES], "big")
                for i in range(0, len(raw), FINGERPRINT_BYTES)]


# -- sizes and deadlines -----------------------------------------------------------------------
@dataclass(frozen=True)
class ChallengePlan:
    size: int
    expected_s: float   # at the registered benchmark
    deadline_s: float   # slack * expected_s + allowance_s


def matmul_flops(size: int) -> int:
    return 2 * size**3


def plan_challenge(benchmark_mflops: int, target_s: float, slack: float,
                   allowance_s: float) -> ChallengePlan:
    """The size whose product takes about `target_s` at the claimed throughput (a multiple of
    SIZE_STEP within [MIN_SIZE, MAX_SIZE]) and the deadline for it."""
    if benchmark_mflops <= 0:
        raise ValueError(f"benchmark must be positive MFLOP/s, got {benchmark_mflops}")
    if target_s <= 0 or slack < 1 or allowance_s < 0:
        raise ValueError("need target_s > 0, slack >= 1 and allowance_s >= 0")
    raw = (target_s * benchmark_mflops * 1e6 / 2) ** (1 / 3)
    size = min(MAX_SIZE, max(MIN_SIZE, SIZE_STEP * math.floor(raw / SIZE_STEP)))
    expected = matmul_flops(size) / (benchmark_mflops * 1e6)
    return ChallengePlan(size, expected, slack * expected + allowance_s)


def in_time(elapsed_s: float, plan: ChallengePlan) -> bool:
    """The deadline rule: the answer counts only if it arrived within the plan's deadline."""
    return elapsed_s <= plan.deadline_s


def pass_probability(skipped_share: float, checked_rows: int) -> float:
    """Chance that a provider which left a share of rows wrong passes `checked_rows` checks."""
    return (1 - skipped_share) ** checked_rows


# -- derivation: the integer hash ----------------------------------------------------------------
# Written with operators only, so the same functions run on a Python int and, elementwise, on an
# int64 tensor holding values in [0, 2**32) (compute/hardware_challenge.py): one definition.
Word = TypeVar("Word")


def mul32(x: Word, c: int) -> Word:
    """(x * c) mod 2**32 for 0 <= x < 2**32 in int64 without overflow (split c in 16-bit halves)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & MASK32


def fmix32(x: Word) -> Word:
    """MurmurHash3's 32-bit finalizer: a bijection on [0, 2**32) that mixes every bit."""
    x = x ^ (x >> 16)
    x = mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def _seed_words(seed: str) -> list[int]:
    raw = bytes.fromhex(seed.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError("seed must be 32 bytes")
    return [int.from_bytes(raw[i:i + 4], "big") for i in range(0, 32, 4)]


def matrix_key(seed: str, which: Literal["A", "B"]) -> tuple[int, int]:
    """(w0, w1): the two 32-bit words of the seed for matrix `which`. Word k of the row-major
    matrix is fmix32(fmix32(k ^ w0) ^ w1); its nibble m, minus 8, is entry 8k + m."""
    if which not in ("A", "B"):
        raise ValueError(f"matrix must be 'A' or 'B', not {which!r}")
    words = _seed_words(seed)
    return (words[0] ^ _SALT_A, words[1]) if which == "A" else (words[2] ^ _SALT_B, words[3])


def column_key(seed: str) -> int:
    """The word a column index is xored with before hashing: col_j = fmix32(j ^ column_key)."""
    return _seed_words(seed)[4] ^ _SALT_F


def pack_fingerprints(values: Iterable[int]) -> str:
    """Row fingerprints as the answer's hex string (n big-endian uint64). `values`: ints, or an
    array of them (a tensor: converted with its `tolist()`, not element by element)."""
    ints = values.tolist() if hasattr(values, "tolist") else values
    return "0x" + b"".join(int(v).to_bytes(FINGERPRINT_BYTES, "big") for v in ints).hex()


# -- the signed answer -------------------------------------------------------------------------
def fingerprints_hash(fingerprints: str) -> bytes:
    return keccak(bytes.fromhex(fingerprints.removeprefix("0x")))


def request_typed_data(chain_id: int, probes: str, provider: str, validator: str, seed: str,
                       size: int, deadline_ms: int) -> dict:
    return messages.hardware_challenge_typed_data(
        chain_id, to_checksum_address(probes), to_checksum_address(provider),
        to_checksum_address(validator), bytes.fromhex(seed.removeprefix("0x")), size, deadline_ms)


def request_signer(request: HardwareChallengeRequest, chain_id: int, probes: str) -> str | None:
    """The address that signed `request`, or None when the signature is unusable."""
    typed = request_typed_data(chain_id, probes, request.provider, request.validator,
                               request.seed, request.size, request.deadline_ms)
    return messages.signer_or_none(typed, request.signature)


def answer_typed_data(chain_id: int, probes: str, provider: str, validator: str, seed: str,
                      size: int, deadline_ms: int, fingerprints: str) -> dict:
    return messages.hardware_answer_typed_data(
        chain_id, to_checksum_address(probes), to_checksum_address(provider),
        to_checksum_address(validator), bytes.fromhex(seed.removeprefix("0x")), size, deadline_ms,
        fingerprints_hash(fingerprints))


def answer_signer(answer: HardwareChallengeAnswer, chain_id: int, probes: str) -> str | None:
    """The address that signed `answer`, or None when the signature is unusable."""
    typed = answer_typed_data(chain_id, probes, answer.provider, answer.validator, answer.seed,
                              answer.size, answer.deadline_ms, answer.fingerprints)
    return messages.signer_or_none(typed, answer.signature)
