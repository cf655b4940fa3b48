"""A Hugging Face causal LM behind the project's Policy interface (CPU or CUDA, bf16 on GPU).

Sampling feeds one token per step and samples on the model's device; ``score`` runs the whole
sequence. Log-probs come back on the batch's device (differentiably), where the objectives run on
[B, T] tensors; the model's own work stays on its device.

The rollout advances every row in lockstep (one position per step, nothing padded on the left),
so all rows always sit at the same position. The decode modes (``HFPolicy(model, decode=...)``):

- ``"dynamic"``: the model's own ``DynamicCache``, grown by one position per call. On a GPU this
  is launch bound: hundreds of small kernels per token, each issued from Python.
- ``"static"``: a ``StaticCache`` of [batch, max_len] allocated once per (batch, max_len), with the
  position ids and a 4D additive attention mask [1, 1, 1, max_len] (positions up to the current
  one visible) that this policy owns and computes on the device: every step has the same shapes
  and buffers. Same logits as "dynamic", to float rounding.
- ``"graph"`` (CUDA only): the static step captured once per (batch, max_len) into a CUDA graph,
  then replayed with the token ids copied into its input buffer: one launch per token. If the
  capture fails, the policy warns once and decodes with "static".
- ``"auto"`` (the default): "graph" on CUDA, "dynamic" elsewhere (and wherever the model's
  attention cannot take a 4D mask).

The static modes need the longest rollout: ``start(batch, max_len=...)`` (the rollout passes its
capacity) or ``HFPolicy(..., max_len=...)``. One rollout at a time per (batch, max_len): its
cache and graph are reused by the next ``start`` of the same size.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import nn

from testbed.batch import Batch
from testbed.policies.base import log_probs_and_entropy

DECODES = ("auto", "dynamic", "static", "graph")
# attention implementations that take a 4D additive mask as given (transformers returns a 4D mask as-is)
MASKABLE = ("sdpa", "eager")


class _StaticDecoder:
    """The static-cache decode step for one (batch, max_len): the fed tokens, the position and the
    KV cache live in fixed device buffers, so the step can be captured into a CUDA graph.

    transformers 5.2x's ``StaticLayer`` writes each step at its own device counter
    (``cumulative_length``, advanced in place), which stays in step with ``pos`` from one ``reset``
    to the next; neither needs the host during the step."""

    def __init__(self, model: nn.Module, cache_arg: str, batch_size: int, max_len: int) -> None:
        from transformers import StaticCache

        device = next(model.parameters()).device
        self.model, self.cache_arg, self.max_len = model, cache_arg, max_len
        self.dtype = model.get_input_embeddings().weight.dtype  # type: ignore[operator]
        config: Any = model.config  # an HF config, which nn.Module's stub types as a Tensor or Module
        self.cache = StaticCache(config=config, max_cache_len=max_len)
        self.ids = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self.slots = torch.arange(max_len, device=device)
        self.steps = 0  # the host's count of ``pos``, to refuse a step past the cache
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits = torch.empty(0)  # the graph's output buffer

    def reset(self) -> None:
        self.cache.reset()
        self.pos.zero_()
        self.steps = 0

    @torch.no_grad()
    def _forward(self) -> torch.Tensor:
        # built from ``pos`` on the device (no host value), so a captured graph replays it correctly
        mask = torch.zeros(self.max_len, dtype=self.dtype, device=self.slots.device)
        mask = mask.masked_fill(self.slots > self.pos, torch.finfo(self.dtype).min)
        out = self.model(
            input_ids=self.ids[:, None],
            position_ids=self.pos.view(1, 1),
            attention_mask=mask.view(1, 1, 1, -1),
            use_cache=True,
            **{self.cache_arg: self.cache},
        )
        self.pos.add_(1)
        return out.logits[:, -1]

    def capture(self) -> None:
        """Record one step into a CUDA graph (after a warm-up on a side stream, as PyTorch's CUDA
        graphs notes prescribe: it allocates the cache and settles cuBLAS' workspaces); on
        failure, warn and keep decoding eagerly."""
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(min(3, self.max_len)):
                    self._forward()
            torch.cuda.current_stream().wait_stream(side)
            self.reset()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.logits = self._forward()
            self.graph = graph
        except Exception as err:  # a run must never die of the capture: static decode is exact
            reason = (str(err).splitlines() or [""])[0]
            warnings.warn(
                f"decode='graph': CUDA graph capture failed ({type(err).__name__}: {reason}); "
                "decoding with 'static'",
                stacklevel=3,
            )
            self.graph, self.logits = None, torch.empty(0)

    def step(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.steps >= self.max_len:
            raise ValueError(f"max_len={self.max_len}: the static cache is full; the rollout is longer")
        self.steps += 1
        self.ids.copy_(inputs)
        if self.graph is None:
            return self._forward()
        self.graph.replay()
        return self.logits.clone()  # the next replay overwrites the graph's buffer


class HFPolicy(nn.Module):
    """A causal LM as a token-grain policy; ``decode`` picks how sampling runs the model (see the
    module's docstring), ``max_len`` sizes the static cache when ``start`` is not told."""

    grain = "token"
    members = 1

    def __init__(self, model: nn.Module, decode: str = "auto", max_len: int | None = None) -> None:
        super().__init__()
        if decode not in DECODES:
            raise ValueError(f"decode={decode!r}: one of {', '.join(DECODES)}")
        self.model = model
        # transformers 5.2x renamed past_key_values to cache (argument and output); accept both
        # a peft model's method, which nn.Module.__getattr__'s stub types as a Tensor or Module
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # type: ignore[operator]
        self._cache = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        attention = getattr(base.config, "_attn_implementation", None)
        self._maskable = attention in MASKABLE
        if decode in ("static", "graph") and not self._maskable:
            raise ValueError(
                f"decode={decode!r}: needs sdpa or eager attention (a 4D mask), the model has {attention!r}"
            )
        self.decode, self.max_len = decode, max_len
        self._decoders: dict[tuple[int, int], _StaticDecoder] = {}
        self._weights: tuple[int, ...] = ()  # the parameters' addresses the decoders were built on

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __getstate__(self) -> dict[str, Any]:
        # a copy (the trainer's behaviour policy) holds weights of its own: it builds its own decoders
        state = super().__getstate__()
        state["_decoders"], state["_weights"] = {}, ()
        return state

    def _mode(self) -> str:
        if self.decode != "auto":
            return self.decode
        return "graph" if self.device.type == "cuda" and self._maskable else "dynamic"

    def start(self, batch_size: int, max_len: int | None = None) -> dict[str, Any]:
        """A fresh sampling state; ``max_len`` (the rollout's capacity, else the constructor's)
        sizes the static modes' cache and is ignored by "dynamic"."""
        mode = self._mode()
        if mode == "dynamic":
            return {"past": None}
        if mode == "graph" and self.device.type != "cuda":
            raise ValueError(f"decode='graph': CUDA graphs need the model on CUDA, it is on {self.device}")
        length = max_len if max_len is not None else self.max_len
        if length is None:
            raise ValueError(f"max_len: decode={mode!r} needs it, in HFPolicy(...) or start(...)")
        weights = tuple(p.data_ptr() for p in self.model.parameters())
        if weights != self._weights:  # moved, cast or loaded with assign: old buffers and graphs are stale
            self._decoders.clear()
            self._weights = weights
        decoder = self._decoders.get((batch_size, length))
        if decoder is None:
            decoder = _StaticDecoder(self.model, self._cache, batch_size, length)
            if mode == "graph":
                decoder.capture()
            self._decoders[batch_size, length] = decoder
        decoder.reset()
        return {"decoder": decoder}

    def next_logits(self, inputs: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        if "decoder" in state:
            return state["decoder"].step(inputs)
        kwargs = {self._cache: state["past"]}
        out = self.model(input_ids=inputs[:, None].to(self.device), use_cache=True, **kwargs)
        state["past"] = out[self._cache]
        return out.logits[:, -1]  # sampled on the model's device: a full vocabulary is large

    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = batch.tokens.to(self.device)
        logits = self.model(input_ids=tokens[:, :-1]).logits
        logp, entropy = log_probs_and_entropy(logits, tokens[:, 1:])
        pad = torch.zeros_like(logp[:, :1])
        out = batch.mask.device  # the caller's (the trainer's device, or the CPU)
        logp, entropy = torch.cat([pad, logp], 1).to(out), torch.cat([pad, entropy], 1).to(out)
        return logp * batch.mask, entropy * batch.mask


def load_model(path: str, device: str | torch.device = "cpu"):
    """A local model directory (no hub access): model in bf16 on CUDA, fp32 on CPU, and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    # transformers' stub of the model's .to (a decorated method) takes the model as the argument
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True).to(device)  # type: ignore[arg-type]
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def add_lora(model, r: int = 8, alpha: int = 16):
    """Wrap ``model`` with LoRA adapters on its attention projections (peft)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        model, LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
