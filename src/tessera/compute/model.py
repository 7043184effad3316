"""A small GPT-style transformer over bytes (vocabulary of 256), after nanoGPT."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tessera.protocol.workload import TrainingWorkload

VOCAB_SIZE = 256


class CausalSelfAttention(nn.Module):
    def __init__(self, w: TrainingWorkload):
        super().__init__()
        self.n_head = w.n_head
        self.qkv = nn.Linear(w.n_embd, 3 * w.n_embd)
        self.proj = nn.Linear(w.n_embd, w.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, w: TrainingWorkload):
        super().__init__()
        self.ln1 = nn.LayerNorm(w.n_embd)
        self.attn = CausalSelfAttention(w)
        self.ln2 = nn.LayerNorm(w.n_embd)
        self.mlp = nn.Sequential(nn.Linear(w.n_embd, 4 * w.n_embd), nn.GELU(),
                                 nn.Linear(4 * w.n_embd, w.n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ByteGPT(nn.Module):
    def __init__(self, w: TrainingWorkload):
        super().__init__()
        self.block_size = w.block_size
        self.tok = nn.Embedding(VOCAB_SIZE, w.n_embd)
        self.pos = nn.Embedding(w.block_size, w.n_embd)
        self.blocks = nn.ModuleList(Block(w) for _ in range(w.n_layer))
        self.ln_f = nn.LayerNorm(w.n_embd)
        self.head = nn.Linear(w.n_embd, VOCAB_SIZE, bias=False)
        self.head.weight = self.tok.weight  # tied embeddings
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(positions)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, VOCAB_SIZE), targets.view(-1))


def parameter_count(workload: TrainingWorkload) -> int:
    """How many parameters `workload`'s model has, counted on the meta device (no memory, no
    random draws)."""
    with torch.device("meta"):
        return sum(p.numel() for p in ByteGPT(workload).parameters())


def training_memory_floor(workload: TrainingWorkload) -> int:
    """Bytes training `workload` holds at the least: fp32 parameters, gradients and the two
    AdamW moments, and one batch's embeddings (batch x block x width in fp32; every other
    activation and the framework come on top). A job over a provider's memory limit by this
    floor alone cannot run there."""
    return 16 * parameter_count(workload) + 4 * workload.batch_size * workload.block_size * \
        workload.n_embd
