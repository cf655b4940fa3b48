"""A small causal transformer (GPT-style, pre-norm) with a KV cache, for one run or a population.

Every parameter carries a leading member dimension K: a population of K runs is one module whose
forward serves all members with batched matmuls (``baddbmm``), and a single run is K = 1 of the same
code. Rows of a batch are member-major: rows ``k * B .. (k + 1) * B - 1`` belong to member k.
Members never mix: each member's rows meet only that member's weights, and attention runs within
a row.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from testbed.batch import Batch
from testbed.policies.base import KVCache, LayerCache, log_probs_and_entropy, member_rows


class _Linear(nn.Module):
    """K independent affine maps, initialised as ``nn.Linear``: U(-1/sqrt(d_in), 1/sqrt(d_in))."""

    def __init__(self, members: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(members, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [K, N, d_in] -> [K, N, d_out]
        return torch.baddbmm(self.bias, x, self.weight)


class _LayerNorm(nn.Module):
    def __init__(self, members: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, 1, d))
        self.bias = nn.Parameter(torch.zeros(members, 1, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:]), self.weight)


class _Block(nn.Module):
    def __init__(self, members: int, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = _LayerNorm(members, d_model)
        self.qkv = _Linear(members, d_model, 3 * d_model)
        self.proj = _Linear(members, d_model, d_model)
        self.ln2 = _LayerNorm(members, d_model)
        self.fc1 = _Linear(members, d_model, 4 * d_model)
        self.fc2 = _Linear(members, 4 * d_model, d_model)

    def forward(self, x: torch.Tensor, t: int, cache: LayerCache | None) -> torch.Tensor:
        """``x`` [K, B * t, d] (t positions per row); ``cache``: keys and values of earlier positions."""
        k_, n, d = x.shape
        rows, h = k_ * n // t, self.n_heads
        qkv = self.qkv(self.ln1(x)).view(rows, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if cache is None:
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # incremental: these positions' keys and values go into preallocated buffers
            past = cache.length
            k, v = cache.append(k, v)
            # one query at a time over the keys up to its own position: a block of known tokens
            # (``feed``) gives the numbers of as many decoding steps
            ends = range(past + 1, past + t + 1)
            attn = torch.cat(
                [
                    F.scaled_dot_product_attention(q[:, :, e - past - 1 : e - past], k[:, :, :e], v[:, :, :e])
                    for e in ends
                ],
                2,
            )
        x = x + self.proj(attn.transpose(1, 2).reshape(k_, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TransformerPolicy(nn.Module):
    grain = "token"

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        n_layers: int = 2,
        d_model: int = 64,
        n_heads: int = 4,
        members: int = 1,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.members, self.max_len = members, max_len
        self.embed = nn.Parameter(torch.randn(members, vocab_size, d_model))
        self.pos = nn.Parameter(torch.randn(members, max_len, d_model))
        self.blocks = nn.ModuleList(_Block(members, d_model, n_heads) for _ in range(n_layers))
        self.ln = _LayerNorm(members, d_model)
        self.head = _Linear(members, d_model, vocab_size)

    def _run(
        self, tokens: torch.Tensor, start: int, caches: list[LayerCache] | None, head: bool = True
    ) -> torch.Tensor:
        """Logits [rows, t, V] of ``tokens`` [rows, t] at positions start .. start + t - 1 (with
        ``head`` false: the last block's output, the caches filled)."""
        rows, t = tokens.shape
        k = self.members
        offset = torch.arange(k, device=tokens.device)[:, None] * self.embed.shape[1]
        tok = tokens.reshape(k, rows // k * t) + offset  # row of the stacked [K * V, d] table
        positions = torch.arange(start, start + t, device=tokens.device).repeat(rows // k)
        x = F.embedding(tok, self.embed.flatten(0, 1)) + self.pos[:, positions]
        for i, block in enumerate(self.blocks):
            x = block(x, t, None if caches is None else caches[i])
        return self.head(self.ln(x)).view(rows, t, -1) if head else x

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [rows, T, V]: position t predicts token t + 1."""
        return self._run(tokens, 0, None)

    def start(self, batch_size: int, max_len: int | None = None) -> KVCache:
        member_rows(batch_size, self.members)
        return KVCache([LayerCache(self.max_len) for _ in self.blocks])

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def vocab_size(self) -> int:
        return self.embed.shape[1]

    def next_logits(self, inputs: torch.Tensor, state: KVCache) -> torch.Tensor:
        logits = self._run(inputs.to(self.device)[:, None], state.position, state.layers)
        state.position += 1
        return logits[:, -1]

    def feed(self, inputs: torch.Tensor, state: KVCache) -> None:
        """Take ``inputs`` [rows, t], known tokens, into the cache: the keys and values of t
        ``next_logits`` steps (tested equal bit for bit on CPU), one pass per block, no logits."""
        self._run(inputs.to(self.device), state.position, state.layers, head=False)
        state.position += inputs.shape[1]

    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropies [B, T] of the written tokens, on the batch's device."""
        tokens = batch.tokens.to(self.device)
        logp, entropy = log_probs_and_entropy(self(tokens[:, :-1]), tokens[:, 1:])
        pad = torch.zeros_like(logp[:, :1])
        logp, entropy = torch.cat([pad, logp], 1), torch.cat([pad, entropy], 1)
        out = batch.mask.device
        return logp.to(out) * batch.mask, entropy.to(out) * batch.mask
