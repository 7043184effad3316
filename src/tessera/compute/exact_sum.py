"""An exact, order-independent sum of float32 tensors, held in a fixed amount of memory.

Why: the coordinator must get bitwise the same aggregate whatever order the workers' answers
arrive in (a resumed or replayed round must reproduce it), and floating-point addition is not
associative. Sorting each coordinate's values across workers makes the order irrelevant, but
needs every contribution in memory at once: 4 bytes per parameter per worker. Summing exactly
needs neither: the sum of integers does not depend on their order, and every float32 is an
integer multiple of 2^-149.

How: a float32 is m * 2^(p - 149) with a 24-bit integer m and a bit position p in [0, 253]. Its
bits are cut at multiples of 32 into int64 "limbs" (limb k holds the bits at positions
[32k, 32k + 32) above 2^-149), so each float lands in two neighbouring limbs with a magnitude
below 2^32 in each; an int64 limb absorbs 2^31 such additions before it could overflow, and is
carried into the next one long before. Only the limbs some contribution touched are allocated:
pseudo-gradients span a few powers of 2^32, so a sum holds 3-4 limbs (24-32 bytes) per
parameter whatever the number of workers (at most 10 limbs for the full float32 range).

Because the state is the exact sum, contributions can be removed again (`subtract`, bitwise as
if never added) and partial sums merged (`merge`) in any grouping: a tree of aggregators gets
the same bits as one coordinator. `value()` rounds the exact sum once, deterministically.
Pure torch: no I/O.
"""

from __future__ import annotations

import torch

LIMB_BITS = 32
LIMB_MASK = (1 << LIMB_BITS) - 1
LOWEST_EXPONENT = -149          # float32's smallest subnormal is 2^-149
CARRY_EVERY = 1 << 30           # additions between carries: far below an int64 limb's 2^31


def _limbs_of(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(limb index, low part in [0, 2^32), signed high part, nonzero) of every element of `x`:
    element = (high * 2^32 + low) * 2^(32 * index - 149)."""
    if x.dtype != torch.float32:
        raise ValueError(f"exact sums take float32, not {x.dtype}")
    bits = x.detach().contiguous().reshape(-1).view(torch.int32)
    exponent = (bits >> 23) & 0xFF
    if bool((exponent == 0xFF).any()):
        raise ValueError("cannot sum NaN or inf")
    normal = (exponent > 0).to(torch.int32)
    mantissa = ((bits & 0x7FFFFF) | (normal << 23)).to(torch.int64)
    position = exponent - normal                       # of the mantissa's lowest bit; 0 if subnormal
    shifted = mantissa.bitwise_left_shift_((position & (LIMB_BITS - 1)).to(torch.int64))
    signed = torch.where(bits < 0, -shifted, shifted)  # |signed| < 2^56
    return (position >> 5).to(torch.int64), signed & LIMB_MASK, signed >> LIMB_BITS, mantissa != 0


class ExactSum:
    """The exact sum of float32 tensors of one shape, added and removed in any order.

    `table[i]` is limb `lowest + i`; rows are added (zeros) when a contribution needs them."""

    def __init__(self, shape: torch.Size | tuple[int, ...]):
        self.shape = torch.Size(shape)
        self.numel = self.shape.numel()
        self.table: torch.Tensor | None = None
        self.lowest = 0
        self._since_carry = 0

    def _cover(self, lo: int, hi: int) -> torch.Tensor:
        """The table, grown to hold limbs lo..hi."""
        if self.table is None:
            self.table, self.lowest = torch.zeros(hi - lo + 1, self.numel, dtype=torch.int64), lo
            return self.table
        top = self.lowest + self.table.shape[0] - 1
        below, above = max(0, self.lowest - lo), max(0, hi - top)
        if below or above:
            self.table = torch.cat([torch.zeros(below, self.numel, dtype=torch.int64), self.table,
                                    torch.zeros(above, self.numel, dtype=torch.int64)])
            self.lowest -= below
        return self.table

    def add(self, x: torch.Tensor) -> None:
        if x.shape != self.shape:
            raise ValueError(f"expected shape {tuple(self.shape)}, got {tuple(x.shape)}")
        index, low, high, nonzero = _limbs_of(x)
        if not bool(nonzero.any()):
            self._since_carry += 1
            return
        used = index[nonzero]
        table = self._cover(int(used.min()), int(used.max()) + 1)
        row = (index - self.lowest).clamp_(0, table.shape[0] - 2)  # zeros land anywhere: +0
        table.scatter_add_(0, row.unsqueeze(0), low.unsqueeze(0))
        table.scatter_add_(0, row.add_(1).unsqueeze(0), high.unsqueeze(0))
        self._since_carry += 1
        if self._since_carry >= CARRY_EVERY:
            self._carry()

    def subtract(self, x: torch.Tensor) -> None:
        """Remove a contribution added before: the sum is bitwise as if it never was
        (negating a float32 is exact)."""
        self.add(-x)

    def merge(self, other: ExactSum) -> None:
        """Add another exact sum (of the same shape) into this one."""
        if other.shape != self.shape:
            raise ValueError(f"expected shape {tuple(self.shape)}, got {tuple(other.shape)}")
        if other.table is None:
            return
        other._carry()
        self._carry()
        lo = other.lowest
        table = self._cover(lo, lo + other.table.shape[0] - 1)
        table[lo - self.lowest:lo - self.lowest + other.table.shape[0]] += other.table
        self._since_carry += 1

    def _carry(self) -> None:
        """Bring every limb but the top one into [0, 2^32); the top one keeps the sign."""
        if self.table is not None:
            _carry(self.table)
        self._since_carry = 0

    def bytes(self) -> int:
        """Memory held by the sum."""
        return 0 if self.table is None else self.table.numel() * self.table.element_size()

    def value(self, divide_by: int = 1) -> torch.Tensor:
        """The exact sum divided by `divide_by`, rounded to float32: a function of the exact
        value alone, so any order or grouping of the same contributions gives the same bits."""
        if divide_by < 1:
            raise ValueError("divide_by must be a positive count")
        if self.table is None:
            return torch.zeros(self.shape, dtype=torch.float32)
        self._carry()
        negative = self.table[-1] < 0
        magnitude = torch.where(negative, -self.table, self.table)
        _carry(magnitude)                               # every limb now in [0, 2^32)
        total = torch.zeros(self.numel, dtype=torch.float64)
        for i in range(magnitude.shape[0] - 1, -1, -1):  # largest first: a fixed order
            scale = 2.0 ** (LIMB_BITS * (self.lowest + i) + LOWEST_EXPONENT)
            total += magnitude[i].to(torch.float64) * scale
        total = torch.where(negative, -total, total) / divide_by
        return total.to(torch.float32).reshape(self.shape)


def _carry(table: torch.Tensor) -> None:
    for i in range(table.shape[0] - 1):
        carry = table[i] >> LIMB_BITS                   # floor division: right for negatives
        table[i] -= carry << LIMB_BITS
        table[i + 1] += carry
