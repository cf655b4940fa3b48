"""A small causal transformer (GPT-style, pre-norm) with a KV cache for incremental sampling."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from testbed.batch import Batch
from testbed.policies.base import log_probs_and_entropy


class _Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if cache is not None:  # incremental: append this step's keys and values
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


@dataclasses.dataclass
class _Cache:
    layers: list[list[torch.Tensor]]
    position: int = 0


class TransformerPolicy(nn.Module):
    grain = "token"

    def __init__(
        self, vocab_size: int, max_len: int, n_layers: int = 2, d_model: int = 64, n_heads: int = 4
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def _run(self, tokens: torch.Tensor, start: int, caches: list[list[torch.Tensor]] | None) -> torch.Tensor:
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) + self.pos(positions)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.head(self.ln(x))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V]: position t predicts token t + 1."""
        return self._run(tokens, 0, None)

    def start(self, batch_size: int) -> _Cache:
        return _Cache([[] for _ in self.blocks])

    def next_logits(self, inputs: torch.Tensor, state: _Cache) -> torch.Tensor:
        logits = self._run(inputs[:, None], state.position, state.layers)
        state.position += 1
        return logits[:, -1]

    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch.tokens[:, :-1])
        logp, entropy = log_probs_and_entropy(logits, batch.tokens[:, 1:])
        pad = torch.zeros_like(logp[:, :1])
        return torch.cat([pad, logp], 1) * batch.mask, torch.cat([pad, entropy], 1) * batch.mask
