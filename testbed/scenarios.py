"""Named scenarios: a setting of the task and the drift sources, with its control (the same
setting with the drift source removed). ``sapo-testbed compare --scenario NAME`` runs one,
``DEFAULT_SCENARIO`` when none is named; the search that chose them is documented in
``paper_figures/scenario_search.md`` (``experiments/scenario_search.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from testbed.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    overrides: Mapping[str, object]  # dotted config fields on top of RunConfig's defaults
    control: Mapping[str, object]  # what removes the drift source (on top of ``overrides``)


# A Qwen2 policy's base recipe (the scale ladder's, testbed/studies/ladder.py): language-model
# pre-training on the task's transcripts, then imitation, at an Adam lr scaled as 1 / width from
# 1e-3 at d_model 64. Measured at 0.1 M on CPU (one base each, 256 fresh episodes): 1e-3 with
# pre-training gave EM 0.11 (the transformer's base: 0.12), without it 0.08; the transformer's
# 3e-3 left the 1 M to 80 M bases at chance (on GPU).
QWEN2_PRETRAIN_STEPS = 300
QWEN2_BASE_LR_AT_64 = 1e-3


def qwen2_policy(n_layers: int, d_model: int, n_heads: int) -> dict[str, object]:
    """The overrides for a Qwen2 policy of this shape, with its base recipe."""
    return {
        "policy.kind": "qwen2",
        "policy.n_layers": n_layers,
        "policy.d_model": d_model,
        "policy.n_heads": n_heads,
        "warm_start.pretrain_steps": QWEN2_PRETRAIN_STEPS,
        "warm_start.lr": QWEN2_BASE_LR_AT_64 * 64 / d_model,
    }


ISDD = {
    "trainer.lr": 0.003,
    "trainer.minibatches": 6,
    "trainer.n_updates": 100,
    "trainer.eval_every": 10,
}

# The scale ladder's 0.1 M rung (testbed/studies/ladder.py) at RL lr 1e-3: the same configs, so the
# same stored runs. A Qwen2 policy has no member dimension: its runs are populations of one.
ISDD_QWEN2 = {**ISDD, **qwen2_policy(2, 64, 4), "trainer.lr": 0.001}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "isdd",
            "procedural search task, lr 3e-3, 6 optimizer steps per rollout batch: GRPO collapses "
            "from off-policy minibatch drift (its on-policy control does not)",
            ISDD,
            {"trainer.minibatches": 1},
        ),
        Scenario(
            "isdd_qwen2",
            "isdd with a 0.1 M-parameter Qwen2 policy (language-model pre-training, then imitation) "
            "at RL lr 1e-3: GRPO rises, then collapses in most seeds; its on-policy control does not",
            ISDD_QWEN2,
            {"trainer.minibatches": 1},
        ),
        Scenario(
            "isdd_qwen2_150",
            "isdd_qwen2 over 150 updates instead of 100 (collapses were still arriving at 100)",
            {**ISDD_QWEN2, "trainer.n_updates": 150},
            {"trainer.minibatches": 1},
        ),
        Scenario(
            "defaults",
            "RunConfig's defaults as they stand (lr 5e-3, 8 minibatch steps per rollout batch)",
            {},
            {"trainer.minibatches": 1},
        ),
    )
}


# The compare job's default: the one scenario that meets every criterion of an ISDD scenario over
# 32 seeds (README, "The scenario criteria, measured"; paper_figures/scenario_search.md).
DEFAULT_SCENARIO = "isdd_qwen2_150"


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ConfigError(f"scenario={name!r}: unknown; known: {sorted(SCENARIOS)}")
    return SCENARIOS[name]
