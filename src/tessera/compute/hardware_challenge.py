"""The arithmetic of a hardware challenge on a device: derive A and B, multiply, fingerprint rows.

The rules (the integer hash, the seed's keys, sizes, deadlines, the signed messages) are pure and
live in `protocol/hardware_challenge.py`; this module runs them on int64/float32 tensors: the
provider's timed product on its own device (`compute_fingerprints`) and the validator's exact
recomputation of a few sampled rows on its CPU (`expected_rows`, `wrong_rows`).
"""

from __future__ import annotations

import torch

from tessera.errors import DeadlinePassed
from tessera.protocol.hardware_challenge import MASK32, column_key, fmix32, matrix_key

BLOCK_ROWS = 256   # rows derived or multiplied at once (bounds the int64 temporaries)


# -- derivation --------------------------------------------------------------------------------
def derive_rows(seed: str, which: str, size: int, start: int, stop: int,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Rows [start, stop) of matrix `which` ("A" or "B") as float32 on `device`.

    Word k = fmix32(fmix32(k ^ w0) ^ w1), with (w0, w1) = `matrix_key(seed, which)`, gives the
    8 entries 8k .. 8k + 7 of the row-major matrix: nibble m of the word, minus 8 (so entries lie
    in [-8, 7]). n is a multiple of 8, so a row is whole words."""
    if which not in ("A", "B"):
        raise ValueError(f"matrix must be 'A' or 'B', not {which!r}")
    if not 0 <= start <= stop <= size or size % 8:
        raise ValueError(f"rows [{start}, {stop}) are outside 0..{size} (or n is not a multiple "
                         "of 8)")
    w0, w1 = matrix_key(seed, which)
    idx = torch.arange(start * size // 8, stop * size // 8, dtype=torch.int64, device=device)
    h = fmix32(fmix32(idx ^ w0) ^ w1)
    shifts = torch.arange(0, 32, 4, dtype=torch.int64, device=device)
    nibbles = (h.unsqueeze(1) >> shifts) & 15
    return (nibbles - 8).to(torch.float32).reshape(stop - start, size)


def derive_matrix(seed: str, which: str, size: int,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    out = torch.empty(size, size, dtype=torch.float32, device=device)
    for start in range(0, size, BLOCK_ROWS):
        stop = min(size, start + BLOCK_ROWS)
        out[start:stop] = derive_rows(seed, which, size, start, stop, device)
    return out


def row_fingerprints(seed: str, rows: torch.Tensor) -> torch.Tensor:
    """One int64 per row of C: the sum over j of fmix32((c_ij mod 2**32) ^ col_j), with col_j a
    per-column hash of (seed, j). Nonlinear in every entry, so it cannot be had from a few
    products with C (as C @ v = A @ (B @ v) could); below 2**50 for n <= 2**18, so the int64
    sum is exact."""
    size = rows.shape[1]
    cols = fmix32(torch.arange(size, dtype=torch.int64, device=rows.device) ^ column_key(seed))
    values = torch.round(rows).to(torch.int64) & MASK32
    return fmix32(values ^ cols).sum(dim=1)


# -- the provider's side -----------------------------------------------------------------------


def compute_fingerprints(seed: str, size: int, device: str | torch.device = "cpu",
                         give_up_at=None) -> torch.Tensor:
    """The honest answer: derive A and B on `device`, multiply, fingerprint every row of C.
    `give_up_at()` (optional) is asked between row blocks; True stops with DeadlinePassed."""
    a = derive_matrix(seed, "A", size, device)
    b = derive_matrix(seed, "B", size, device)
    out = torch.empty(size, dtype=torch.int64, device=device)
    for start in range(0, size, BLOCK_ROWS):
        if give_up_at is not None and give_up_at():
            raise DeadlinePassed(f"stopped at row {start} of {size}")
        stop = min(size, start + BLOCK_ROWS)
        out[start:stop] = row_fingerprints(seed, a[start:stop] @ b)
    return out.cpu()


# -- the validator's side ----------------------------------------------------------------------
def expected_rows(seed: str, size: int, rows: list[int]) -> torch.Tensor:
    """Rows `rows` of C = A @ B on the CPU, exactly (float64), streaming B in row blocks so that
    memory stays O(len(rows) * n + BLOCK_ROWS * n): cost len(rows) * n**2 multiply-adds."""
    if not rows or any(not 0 <= r < size for r in rows):
        raise ValueError(f"rows must be a non-empty list within 0..{size - 1}")
    a_rows = torch.cat([derive_rows(seed, "A", size, r, r + 1) for r in rows]).to(torch.float64)
    out = torch.zeros(len(rows), size, dtype=torch.float64)
    for start in range(0, size, BLOCK_ROWS):
        stop = min(size, start + BLOCK_ROWS)
        out += a_rows[:, start:stop] @ derive_rows(seed, "B", size, start, stop).to(torch.float64)
    return out


def wrong_rows(seed: str, size: int, fingerprints: list[int], rows: list[int]) -> list[int]:
    """The sampled rows whose claimed fingerprint differs from the true one (empty: it holds)."""
    if len(fingerprints) != size:
        raise ValueError(f"{len(fingerprints)} fingerprints for {size} rows")
    truth = row_fingerprints(seed, expected_rows(seed, size, rows)).tolist()
    return [r for r, t in zip(rows, truth, strict=True) if fingerprints[r] != t]
