"""A Qwen2-architecture causal LM in plain PyTorch, for one run or a population of K members.

The architecture of transformers' ``Qwen2ForCausalLM`` (Qwen2 technical report, arXiv 2407.10671):
pre-norm blocks of RMSNorm, grouped-query attention with biases on q, k and v (none on the
output projection) and rotary position embeddings (RoPE, theta 10000), then RMSNorm and a SwiGLU
MLP (down(silu(gate(x)) * up(x)), no biases); a final RMSNorm and an output head tied to the
token embeddings. Same weights, same logits as transformers' model (tested within 1e-5 in fp32);
``hf_state_dict`` / ``save_pretrained`` / ``from_hf_state_dict`` convert one member to and from the
Hugging Face layout, so a member opens with ``Qwen2ForCausalLM.from_pretrained`` (TRL, verl).

Every parameter carries a leading member dimension K, as ``TransformerPolicy``'s does: rows of a
batch are member-major and each member's rows meet only its own weights (batched matmuls). q, k
and v are one fused projection and gate and up another (two matmuls where transformers has five).

Scoring is trimmed: each member's rows are scored up to that member's longest episode (its last
written token), never at the rollout's full capacity. ``member_passes`` says how members are
scored: ``"each"`` (one pass per member at its own width: a member's numbers are then exactly
those of the single run with its seed, whatever runs share its population) or ``"together"`` (one
batched pass at the population's longest episode: fewer, larger kernels, as a GPU wants; members
then agree with their single runs only to float rounding).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from testbed.batch import Batch
from testbed.policies.base import LayerCache, log_probs_and_entropy, member_rows

MEMBER_PASSES = ("each", "together")
# On a CPU, decoding runs members in groups of at most this many rows (one member when it has
# more): past a few thousand rows a step's activations leave the cache (a population's evaluation
# decodes 16 x 512 rows), and a row's numbers do not depend on its group (tested)
DECODE_ROWS = 2048
# On a CPU, a scoring pass without gradients (the diagnostics; the old log-probs where recomputed)
# runs a member's rows in blocks of about this many tokens, for the same reason (1.4x on the
# default scenario's diagnostics pass: 128 rows in blocks of 48 against one pass)
SCORE_TOKENS = 2048


@dataclasses.dataclass(frozen=True)
class Qwen2Shape:
    """The architecture's sizes (transformers' ``Qwen2Config`` names in the comments)."""

    vocab_size: int
    d_model: int  # hidden_size
    n_layers: int  # num_hidden_layers
    n_heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads
    d_ff: int  # intermediate_size
    max_len: int  # max_position_embeddings
    rope_theta: float = 10000.0
    eps: float = 1e-6  # rms_norm_eps

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def hf_config(self) -> dict[str, Any]:
        """The ``Qwen2Config`` fields of this shape."""
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.d_model,
            "intermediate_size": self.d_ff,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.kv_heads,
            "max_position_embeddings": self.max_len,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.eps,
            "tie_word_embeddings": True,
            "hidden_act": "silu",
        }


def qwen2_shape(
    vocab_size: int, d_model: int, n_layers: int, n_heads: int, max_len: int, mlp_ratio: int = 4
) -> Qwen2Shape:
    """The testbed's Qwen2 of this size: half as many KV heads as query heads where ``n_heads`` is
    even (grouped-query attention), an MLP ``mlp_ratio`` times as wide as the model."""
    kv_heads = n_heads // 2 if n_heads % 2 == 0 else n_heads
    return Qwen2Shape(vocab_size, d_model, n_layers, n_heads, kv_heads, mlp_ratio * d_model, max_len)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) * weight, in float32 as transformers' ``Qwen2RMSNorm`` (torch's fused kernel: one
    op where the formula is five; the weight is per member, so it multiplies apart)."""
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE: x * cos + rotate_half(x) * sin, ``rotate_half`` as transformers' (halves, not pairs)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _param(members: int, *shape: int, std: float | None) -> nn.Parameter:
    """A [members, *shape] parameter: N(0, std^2) (transformers' ``initializer_range``), or ones."""
    if std is None:
        return nn.Parameter(torch.ones(members, *shape))
    return nn.Parameter(torch.empty(members, *shape).normal_(0.0, std))


class _Block(nn.Module):
    """One decoder layer for K members: weights [K, d_in, d_out], activations [K, N, d]."""

    def __init__(self, shape: Qwen2Shape, members: int, std: float) -> None:
        super().__init__()
        d, hd = shape.d_model, shape.head_dim
        self.shape = shape
        self.q_dim, self.kv_dim = shape.n_heads * hd, shape.kv_heads * hd
        width = self.q_dim + 2 * self.kv_dim
        self.ln1 = _param(members, 1, d, std=None)
        self.qkv = _param(members, d, width, std=std)
        self.qkv_bias = nn.Parameter(torch.zeros(members, 1, width))
        self.o = _param(members, self.q_dim, d, std=std)
        self.ln2 = _param(members, 1, d, std=None)
        self.gate_up = _param(members, d, 2 * shape.d_ff, std=std)
        self.down = _param(members, shape.d_ff, d, std=std)

    def forward(
        self,
        x: torch.Tensor,
        t: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: LayerCache | None,
        m: slice,
    ) -> torch.Tensor:
        """``x`` [K, rows_k * t, d] for the members ``m``; ``cos``/``sin`` [t, head_dim]; ``cache``:
        the keys and values of earlier positions."""
        s = self.shape
        k_, n, _ = x.shape
        rows, hd = k_ * n // t, s.head_dim
        qkv = torch.baddbmm(self.qkv_bias[m], _rms_norm(x, self.ln1[m], s.eps), self.qkv[m]).view(rows, t, -1)
        heads = s.n_heads + s.kv_heads  # queries and keys rotate together: one rotation, not two
        qk = _rotate(qkv[..., : self.q_dim + self.kv_dim].view(rows, t, heads, hd).transpose(1, 2), cos, sin)
        q, k = qk[:, : s.n_heads], qk[:, s.n_heads :]
        v = qkv[..., self.q_dim + self.kv_dim :].view(rows, t, s.kv_heads, hd).transpose(1, 2)
        if cache is not None:  # decoding: these positions' keys and values join the earlier ones
            past = cache.length
            k, v = cache.append(k, v)
            # one query at a time, each over the keys up to its own position: a block of t known
            # tokens (``Qwen2Policy.feed``) gives the numbers of t decoding steps, bit for bit
            if t == 1:
                attn = self._attend(q, k, v)
            else:
                ends = range(past + 1, past + t + 1)
                attn = torch.cat(
                    [self._attend(q[:, :, e - past - 1 : e - past], k[:, :, :e], v[:, :, :e]) for e in ends],
                    2,
                )
        else:  # each KV head serves n_heads / kv_heads query heads (not copied)
            gqa = s.n_heads != s.kv_heads
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        # the residual adds ride in the matmuls (baddbmm: x + a @ w), two ops fewer per layer
        x = torch.baddbmm(x, attn.transpose(1, 2).reshape(k_, n, self.q_dim), self.o[m])
        gate, up = torch.bmm(_rms_norm(x, self.ln2[m], s.eps), self.gate_up[m]).chunk(2, dim=-1)
        return torch.baddbmm(x, F.silu(gate) * up, self.down[m])

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One query per row (decoding) over the keys and values given: two matmuls cost less
        than the fused kernel here. Grouped-query attention: KV head j serves query heads
        j * groups .. (j + 1) * groups - 1."""
        s = self.shape
        rows, hd = q.shape[0], s.head_dim
        q = q.reshape(rows, s.kv_heads, -1, hd)
        weights = (torch.matmul(q, k.transpose(-1, -2)) * hd**-0.5).softmax(-1)
        return torch.matmul(weights, v).reshape(rows, s.n_heads, 1, hd)


class Qwen2Policy(nn.Module):
    """The Qwen2 architecture as a token-grain ``Policy`` of ``members`` members (see the module)."""

    grain = "token"
    passes = "lean"  # the trainer's passes for this engine (``TrainerConfig.passes``)

    def __init__(
        self, shape: Qwen2Shape, members: int = 1, member_passes: str = "each", std: float = 0.02
    ) -> None:
        super().__init__()
        if shape.d_model % shape.n_heads or shape.n_heads % shape.kv_heads:
            raise ValueError(f"{shape}: n_heads must divide d_model, kv_heads must divide n_heads")
        if member_passes not in MEMBER_PASSES:
            raise ValueError(f"member_passes={member_passes!r}: one of {', '.join(MEMBER_PASSES)}")
        self.shape, self.members, self.member_passes = shape, members, member_passes
        self.embed = _param(members, shape.vocab_size, shape.d_model, std=std)
        self.layers = [_Block(shape, members, std) for _ in range(shape.n_layers)]
        self.blocks = nn.ModuleList(self.layers)  # registered: parameters, state dict, ``to``
        self.norm = _param(members, 1, shape.d_model, std=None)
        hd = shape.head_dim
        inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))
        freqs = torch.arange(shape.max_len, dtype=torch.float)[:, None] * inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)
        self.rope_cos: torch.Tensor
        self.rope_sin: torch.Tensor
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)
        self.compiled = False  # ``compile_forward`` sets it
        self.decode_rows = DECODE_ROWS
        self.score_tokens = SCORE_TOKENS
        self._compiled: Any = None  # this module's compiled forward, made on first use

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def vocab_size(self) -> int:
        return self.shape.vocab_size

    def compile_forward(self) -> None:
        """Run the forward through ``torch.compile`` (widths vary: dynamic shapes)."""
        self.compiled = True

    def __getstate__(self) -> dict[str, Any]:
        # a copy (the trainer's behaviour or reference policy) compiles its own forward
        state = super().__getstate__()
        state["_compiled"] = None
        return state

    def forward_members(
        self,
        tokens: torch.Tensor,
        start: int,
        caches: list[LayerCache] | None,
        members: slice,
        head: bool = True,
    ) -> torch.Tensor:
        """``_forward_members``, compiled when ``compile_forward`` was called."""
        if not self.compiled:
            return self._forward_members(tokens, start, caches, members, head)
        if self._compiled is None:
            self._compiled = torch.compile(self._forward_members, dynamic=True)
        return self._compiled(tokens, start, caches, members, head)

    def _forward_members(
        self,
        tokens: torch.Tensor,
        start: int,
        caches: list[LayerCache] | None,
        members: slice,
        head: bool = True,
    ) -> torch.Tensor:
        """Logits [rows, t, V] of ``tokens`` [rows, t] at positions start .. start + t - 1, the
        rows member-major over the members ``members`` (a slice of the population); with ``head``
        false, the last layer's output instead (the caches filled, no logits computed)."""
        rows, t = tokens.shape
        embed = self.embed[members]
        k, vocab = embed.shape[0], embed.shape[1]
        offset = torch.arange(k, device=tokens.device)[:, None] * vocab
        x = F.embedding(tokens.reshape(k, rows // k * t) + offset, embed.flatten(0, 1))
        cos, sin = self.rope_cos[start : start + t], self.rope_sin[start : start + t]
        for i, block in enumerate(self.layers):
            x = block(x, t, cos, sin, None if caches is None else caches[i], members)
        if not head:
            return x
        x = _rms_norm(x, self.norm[members], self.shape.eps)
        return torch.bmm(x, embed.transpose(1, 2)).view(rows, t, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [rows, T, V] of every member: position t predicts token t + 1."""
        return self.forward_members(tokens, 0, None, slice(None))

    def start(self, batch_size: int, max_len: int | None = None) -> MemberGroups:
        n = member_rows(batch_size, self.members)
        # members per group; a GPU takes the whole population at once
        per = max(1, self.decode_rows // n) if self.device.type == "cpu" else self.members
        groups = [slice(j, min(j + per, self.members)) for j in range(0, self.members, per)]
        capacity = max_len or self.shape.max_len
        return MemberGroups(n, [(m, [LayerCache(capacity) for _ in self.blocks]) for m in groups])

    def _groups(self, tokens: torch.Tensor, state: MemberGroups, head: bool) -> list[torch.Tensor]:
        """``tokens`` [rows, t] through each member group at the state's position."""
        n = state.rows
        return [
            self.forward_members(tokens[m.start * n : m.stop * n], state.position, caches, m, head)
            for m, caches in state.groups
        ]

    def next_logits(self, inputs: torch.Tensor, state: MemberGroups) -> torch.Tensor:
        logits = self._groups(inputs.to(self.device)[:, None], state, head=True)
        state.position += 1
        return logits[0][:, -1] if len(logits) == 1 else torch.cat(logits)[:, -1]

    def feed(self, inputs: torch.Tensor, state: MemberGroups) -> None:
        """Take ``inputs`` [rows, t], tokens known in advance (a prompt, a retrieved block), into
        the cache: the same keys and values as t ``next_logits`` steps (tested equal bit for bit
        on CPU), in one pass per layer and without the logits nobody samples from."""
        self._groups(inputs.to(self.device), state, head=False)
        state.position += inputs.shape[1]

    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropies [B, T] of the written tokens, each member scored up to its
        longest episode (see ``member_passes``); zero elsewhere."""
        tokens, mask = batch.tokens.to(self.device), batch.mask.to(self.device)
        n = member_rows(len(tokens), self.members)
        ends = written_widths(mask, self.members)  # per member: positions 0 .. end - 1 hold its tokens
        if self.member_passes == "together" or self.members == 1:
            spans = [(slice(None), slice(0, len(tokens)), max(ends))]
        else:
            spans = [(slice(j, j + 1), slice(j * n, (j + 1) * n), ends[j]) for j in range(self.members)]
        if not torch.is_grad_enabled() and self.device.type == "cpu" and len(spans) == self.members:
            spans = [block for span in spans for block in self._row_blocks(*span)]
        logp, entropy = [], []
        for members, rows, end in spans:
            part = tokens[rows, :end]
            lp, ent = log_probs_and_entropy(self.forward_members(part[:, :-1], 0, None, members), part[:, 1:])
            pad = (1, tokens.shape[1] - end)  # position 0 is never written; nor is anything past ``end``
            logp.append(F.pad(lp, pad))
            entropy.append(F.pad(ent, pad))
        out = batch.mask.device  # the caller's (the trainer's device, or the CPU)
        return (torch.cat(logp) * mask).to(out), (torch.cat(entropy) * mask).to(out)

    def _row_blocks(self, members: slice, rows: slice, end: int) -> list[tuple[slice, slice, int]]:
        """One member's rows in blocks of about ``score_tokens`` tokens, for a pass without
        gradients (no sum over rows): its activations stay in cache, and a row's numbers do not
        depend on its block (tested)."""
        step = max(4, self.score_tokens // end)
        return [
            (members, slice(i, min(i + step, rows.stop)), end) for i in range(rows.start, rows.stop, step)
        ]

    # -- the Hugging Face layout ----------------------------------------------------------------------
    def hf_state_dict(self, member: int = 0) -> dict[str, torch.Tensor]:
        """Member ``member``'s weights under transformers' ``Qwen2ForCausalLM`` names and layouts."""
        q, kv = self.layers[0].q_dim, self.layers[0].kv_dim
        out = {"model.embed_tokens.weight": self.embed[member], "model.norm.weight": self.norm[member, 0]}
        for i, b in enumerate(self.layers):
            p = f"model.layers.{i}."
            w, bias = b.qkv[member].T, b.qkv_bias[member, 0]
            gate, up = b.gate_up[member].T.chunk(2)
            out |= {
                p + "input_layernorm.weight": b.ln1[member, 0],
                p + "self_attn.q_proj.weight": w[:q],
                p + "self_attn.q_proj.bias": bias[:q],
                p + "self_attn.k_proj.weight": w[q : q + kv],
                p + "self_attn.k_proj.bias": bias[q : q + kv],
                p + "self_attn.v_proj.weight": w[q + kv :],
                p + "self_attn.v_proj.bias": bias[q + kv :],
                p + "self_attn.o_proj.weight": b.o[member].T,
                p + "post_attention_layernorm.weight": b.ln2[member, 0],
                p + "mlp.gate_proj.weight": gate,
                p + "mlp.up_proj.weight": up,
                p + "mlp.down_proj.weight": b.down[member].T,
            }
        return {k: v.detach().clone().contiguous() for k, v in out.items()}

    @torch.no_grad()
    def load_hf_state_dict(self, state: dict[str, torch.Tensor], member: int = 0) -> None:
        """Set member ``member``'s weights from a ``Qwen2ForCausalLM`` state dict (its tied
        ``lm_head.weight``, if present, is the embedding)."""
        get = state.__getitem__
        self.embed[member].copy_(get("model.embed_tokens.weight"))
        self.norm[member, 0].copy_(get("model.norm.weight"))
        for i, b in enumerate(self.layers):
            p = f"model.layers.{i}."
            attn = [get(p + f"self_attn.{n}_proj.weight") for n in "qkv"]
            b.qkv[member].copy_(torch.cat(attn).T)
            b.qkv_bias[member, 0].copy_(torch.cat([get(p + f"self_attn.{n}_proj.bias") for n in "qkv"]))
            b.o[member].copy_(get(p + "self_attn.o_proj.weight").T)
            b.ln1[member, 0].copy_(get(p + "input_layernorm.weight"))
            b.ln2[member, 0].copy_(get(p + "post_attention_layernorm.weight"))
            b.gate_up[member].copy_(
                torch.cat([get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")]).T
            )
            b.down[member].copy_(get(p + "mlp.down_proj.weight").T)

    def save_pretrained(self, path: Path | str, member: int = 0) -> None:
        """Member ``member`` as a Hugging Face model directory (``config.json`` and
        ``model.safetensors``) that ``Qwen2ForCausalLM.from_pretrained`` opens."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **self.shape.hf_config()}
        (path / "config.json").write_text(json.dumps(config, indent=2))
        save_file(self.hf_state_dict(member), str(path / "model.safetensors"), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, path: Path | str, **kwargs: Any) -> Qwen2Policy:
        """A one-member policy from a Hugging Face Qwen2 directory (``save_pretrained``'s, or any
        ``Qwen2ForCausalLM`` with tied embeddings and default RoPE)."""
        from safetensors.torch import load_file

        path = Path(path)
        c = json.loads((path / "config.json").read_text())
        if c.get("model_type") != "qwen2" or not c.get("tie_word_embeddings", False):
            raise ValueError(f"{path}: not a Qwen2 model with tied embeddings")
        rope = c.get("rope_parameters") or {}
        shape = Qwen2Shape(
            c["vocab_size"],
            c["hidden_size"],
            c["num_hidden_layers"],
            c["num_attention_heads"],
            c.get("num_key_value_heads", c["num_attention_heads"]),
            c["intermediate_size"],
            c["max_position_embeddings"],
            float(rope.get("rope_theta", c.get("rope_theta", 10000.0))),
            float(c.get("rms_norm_eps", 1e-6)),
        )
        policy = cls(shape, **kwargs)
        policy.load_hf_state_dict(load_file(str(path / "model.safetensors")))
        return policy


@dataclasses.dataclass
class MemberGroups:
    """A decoding state: ``rows`` per member, and per group of members (a slice of the
    population) one ``LayerCache`` per layer; every group at ``position``."""

    rows: int
    groups: list[tuple[slice, list[LayerCache]]]
    position: int = 0


def written_widths(mask: torch.Tensor, members: int) -> list[int]:
    """Per member, one past the last position any of its rows wrote (at least 2: position 0 is
    never written, and a pass needs one input position)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = ((mask > 0) * positions).amax(1).view(members, -1).amax(1)
    return [max(2, int(e) + 1) for e in last.tolist()]
