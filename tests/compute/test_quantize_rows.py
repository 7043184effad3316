"""compress.quantize / dequantize_int8 work chunk by chunk on a zero-padded (chunks, chunk) view
(2-4x faster on 10.8 M parameters than gathering each element's scale: the tenant recomputes
every worker's payload every round). The result must be bitwise the gathered formulation's,
which payloads already committed were made with: the same float32 division and product per
element. Checked here against that formulation, kept as the reference."""

from __future__ import annotations

import math

import pytest
import torch

from tessera.compute import compress


def reference(x: torch.Tensor, chunk: int, levels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    flat = x.reshape(-1).to(torch.float32)
    n = flat.numel()
    n_chunks = max(1, math.ceil(n / chunk))
    padded = torch.zeros(n_chunks * chunk)
    padded[:n] = flat
    scales = padded.view(n_chunks, chunk).abs().amax(dim=1) / float(levels)
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    idx = torch.arange(n) // chunk
    q = torch.round(flat / safe[idx]).clamp_(-levels, levels).to(torch.int8)
    return q.view(x.shape), scales, (q.to(torch.float32) * scales[idx]).view(x.shape)


@pytest.mark.parametrize("shape", [(1,), (7,), (4096,), (4097,), (3, 5000), (64, 257), (0,)])
@pytest.mark.parametrize("levels", [127, 7])
def test_chunk_rows_give_the_gathered_bits(shape, levels):
    torch.manual_seed(sum(shape) + levels)
    x = torch.randn(shape) * 0.02
    if x.numel() > 10:
        x.view(-1)[5] = 0.0
        x.view(-1)[:3] = torch.tensor([3.0, -3.0, 1e-30])   # one dominant chunk, tiny values
    q, scales, back = reference(x, 4096, levels)
    got = compress.quantize(x, 4096, levels)
    assert torch.equal(got.q, q) and torch.equal(got.scales, scales)
    assert torch.equal(compress.dequantize_int8(got), back)


def test_scales_that_do_not_fit_the_chunks_are_refused_not_broadcast():
    qt = compress.quantize(torch.randn(10_000), 4096)
    bad = compress.Quantized(qt.q, qt.scales[:1], qt.chunk)
    with pytest.raises(ValueError, match="scales for 3 chunks"):
        compress.dequantize_int8(bad)
