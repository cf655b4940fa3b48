"""Policies: one interface (``base.Policy``) for the tabular and the token grain.

Add a policy: a module here implementing ``Policy`` (``grain``, ``members``, ``start``,
``next_logits``, ``score``), a ``kind`` in ``PolicyConfig`` and a branch in ``build_policy``. The
Hugging Face policy (``kind="hf"``: a model on the text task, ``hf.py``) is built with its task by
``hf_run.py``, which ``testbed.run`` calls; ``kind="qwen2"`` is a Qwen2-architecture causal LM of shape
(``n_layers``, ``d_model``, ``n_heads``) over the simulated task's own words (the scale ladder's and
the default scenario's policies): the testbed's own (``qwen2.py``, with a member dimension), or
transformers' through the Hugging Face adapter with ``engine="hf"``.
"""

from __future__ import annotations

import dataclasses
from typing import cast

import torch

from testbed.config import added_field, check_at_most, check_choice, check_positive, fail, field
from testbed.envs import TabularSearchBatch, TokenSearchBatch
from testbed.policies.base import Policy, population_state
from testbed.policies.qwen2 import MEMBER_PASSES, Qwen2Policy, qwen2_shape
from testbed.policies.tabular import TabularPolicy
from testbed.policies.transformer import TransformerPolicy

POLICY_KINDS = ("transformer", "tabular", "hf", "qwen2")
# Kinds with a member dimension: a population of K runs trains as one policy (the others: K = 1).
POPULATION_KINDS = ("transformer", "tabular", "qwen2")
ENGINES = ("testbed", "hf")


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """``transformer`` and ``tabular`` are built here; ``hf`` loads ``model_path`` (a local Hugging
    Face model directory; None builds a tiny offline Qwen2), optionally with LoRA adapters."""

    kind: str = field(
        "transformer",
        help="Which policy: transformer (a small causal transformer, trained as populations), tabular "
        "(one softmax table per state of the tabular task), qwen2 (a Qwen2-architecture causal LM over "
        "the simulated task's words), hf (a Hugging Face model on the text task).",
    )
    n_layers: int = field(2, help="Transformer blocks (kinds transformer and qwen2); > 0.")
    d_model: int = field(
        64, help="Width of the residual stream (kinds transformer and qwen2); > 0, divisible by n_heads."
    )
    n_heads: int = field(4, help="Attention heads per block (kinds transformer and qwen2); > 0.")
    model_path: str | None = field(
        None,
        keyed_by_content=True,
        help="kind hf only: a local Hugging Face model directory; None builds a tiny offline Qwen2.",
        verl="actor_rollout_ref.model.path",
    )
    lora: bool = field(
        False,
        help="kind hf only: train LoRA adapters instead of every weight.",
        verl="actor_rollout_ref.model.lora_rank",
    )
    device: str = field(
        "auto",
        help="Torch device the policy samples and trains on: auto (a CUDA GPU when there is one, else the "
        "CPU; the tabular policy always the CPU), cpu, cuda or cuda:N. A device this machine lacks is "
        "refused before any work. Keyed as written, auto as cpu (the runs stored before auto was the "
        "default ran there): ask cuda explicitly for GPU runs of their own.",
    )
    engine: str = added_field(
        "testbed",
        help="kind qwen2 only: testbed (the testbed's own Qwen2, plain PyTorch with a member dimension: "
        "trains as populations) or hf (transformers' Qwen2ForCausalLM through the Hugging Face adapter, "
        "one run per process: the engine of the Qwen2 runs stored before the testbed's, same keys).",
    )
    member_passes: str = added_field(
        "auto",
        help="kind qwen2, populations: how the members' rows are scored. each (one pass per member, "
        "trimmed to its own longest episode: a member's numbers are those of its single run, whatever "
        "runs share the population), together (one batched pass at the population's longest episode: "
        "fewer, larger kernels; members agree with their single runs to float rounding), auto (each on "
        "the CPU, together on a GPU).",
    )
    compile: bool = added_field(
        False,
        help="kind qwen2: compile the model's forward with torch.compile (dynamic shapes); a first "
        "compile costs tens of seconds, and the numbers change by float rounding.",
    )

    def __post_init__(self) -> None:
        check_choice(self, "kind", POLICY_KINDS)
        check_positive(self, "n_layers", "d_model", "n_heads")
        check_at_most(self, 1024, "n_layers", "n_heads")
        check_at_most(self, 65536, "d_model")
        if self.d_model % self.n_heads:
            fail(self, "d_model", self.d_model, f"must be divisible by n_heads={self.n_heads}")
        if self.kind != "hf" and (self.model_path is not None or self.lora):
            fail(self, "kind", self.kind, "model_path and lora need kind='hf'")
        check_device(self)
        check_choice(self, "engine", ENGINES)
        if self.engine != "testbed" and self.kind != "qwen2":
            fail(self, "engine", self.engine, "only kind='qwen2' has a choice of engine")
        check_choice(self, "member_passes", ("auto", *MEMBER_PASSES))

    def storage_key(self, plain: dict[str, object]) -> dict[str, object]:
        """What ``config_hash`` keys: device auto as cpu (every run stored before auto was the default
        ran on the CPU, keyed cpu); a qwen2 policy keys its engine when it is the testbed's (new
        numbers, new keys), while engine hf keeps the key of the runs it made before."""
        if self.device == "auto":
            plain["device"] = "cpu"
        if self.kind == "qwen2":
            plain.pop("engine", None)
            if self.engine == "testbed":
                plain["engine"] = self.engine
        return plain


def check_device(cfg: PolicyConfig) -> None:
    """ConfigError unless ``cfg.device`` is auto or names a CPU or CUDA device (whether this machine
    has it is ``resolve_device``'s check, made before a run does any work)."""
    if cfg.device == "auto":
        return
    try:
        device = torch.device(cfg.device)
    except (RuntimeError, TypeError):
        fail(cfg, "device", cfg.device, "not a device; use auto, cpu, cuda or cuda:N")
    if device.type not in ("cpu", "cuda"):
        fail(cfg, "device", cfg.device, "use auto, cpu, cuda or cuda:N")


def resolve_device(cfg: PolicyConfig) -> torch.device:
    """The device a run of ``cfg`` computes on: auto is the first CUDA GPU when there is one (the
    tabular policy: the CPU, where its table lookups belong), else the CPU. ConfigError for a CUDA
    device this machine does not have: never a silent fall-back to the CPU."""
    if cfg.device == "auto":
        cuda = cfg.kind != "tabular" and torch.cuda.is_available()
        return torch.device("cuda" if cuda else "cpu")
    device = torch.device(cfg.device)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            fail(cfg, "device", cfg.device, "this machine has no CUDA device; use auto or cpu")
        if device.index is not None and device.index >= count:
            fail(cfg, "device", cfg.device, f"this machine has {count} CUDA device(s)")
    return device


def has_members(cfg: PolicyConfig) -> bool:
    """Whether ``cfg``'s policy has a member dimension (its runs train as populations)."""
    return cfg.kind in POPULATION_KINDS and cfg.engine != "hf"


def build_policy(cfg: PolicyConfig, core: TokenSearchBatch | TabularSearchBatch, members: int = 1) -> Policy:
    """A freshly initialised policy of ``members`` members for the task ``core`` (grain from ``cfg.kind``)."""
    # the policy's kind names the grain of its task, so of ``core``
    if cfg.kind == "tabular":
        tabular = cast(TabularSearchBatch, core)
        return TabularPolicy(tabular.n_states, tabular.n_actions, members)
    if cfg.kind == "transformer":
        tokens = cast(TokenSearchBatch, core)
        return TransformerPolicy(
            tokens.vocab.size, tokens.capacity, cfg.n_layers, cfg.d_model, cfg.n_heads, members
        ).to(resolve_device(cfg))
    if cfg.kind == "qwen2":
        tokens = cast(TokenSearchBatch, core)
        device = resolve_device(cfg)
        if cfg.engine == "hf":
            if members != 1:
                raise ValueError(f"policy.engine='hf' has no member dimension; asked for {members} members")
            from testbed.policies.hf import HFPolicy
            from testbed.policies.hf_tiny import qwen2_model

            model = qwen2_model(
                tokens.vocab.size,
                cfg.d_model,
                cfg.n_layers,
                cfg.n_heads,
                tokens.capacity,
                seed=None,
                mlp_ratio=4,
            )
            return cast(Policy, HFPolicy(model.to(device)))
        shape = qwen2_shape(tokens.vocab.size, cfg.d_model, cfg.n_layers, cfg.n_heads, tokens.capacity)
        passes = cfg.member_passes
        if passes == "auto":
            passes = "together" if device.type == "cuda" else "each"
        policy = Qwen2Policy(shape, members, passes).to(device)
        if cfg.compile:
            policy.compile_forward()
        return policy
    raise ValueError(f"policy.kind={cfg.kind!r}: built by testbed.run, not build_policy")


__all__ = [
    "POLICY_KINDS",
    "POPULATION_KINDS",
    "Policy",
    "PolicyConfig",
    "Qwen2Policy",
    "TabularPolicy",
    "TransformerPolicy",
    "build_policy",
    "has_members",
    "population_state",
    "resolve_device",
]
