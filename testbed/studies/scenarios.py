"""Named scenarios, the one registry of them: a setting of the task and the drift sources, its
control (the same setting with the drift source removed), and the objectives of its baselines
study (``NAME_baselines`` in ``testbed.studies.CATALOG``, which ``sapo-testbed report NAME``
reads). ``sapo-testbed compare --scenario NAME`` runs one, ``DEFAULT_SCENARIO`` when none is
named; the search that chose them is ``paper_figures/scenario_search.md``.

``scenario_experiment`` is the one builder of "objectives on a scenario, plus GRPO on its
control": the compare job, the baselines studies and the scale ladder all build their arms with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from testbed.analysis import ScenarioCriteria
from testbed.config import ConfigError, fail
from testbed.sweep.experiment import Experiment, Figure
from testbed.sweep.spec import SweepSpec

CONTROL = "grpo_control"  # the arm of GRPO on a scenario's control


@dataclasses.dataclass(frozen=True)
class Scenario:
    """``overrides``: dotted config fields on top of RunConfig's defaults; ``control``: what removes
    the drift source (on top of ``overrides``); ``baselines``: the objectives of its baselines
    study (GRPO first: the reference and the arm the criteria score), none for no such study;
    ``store``: that study's store when it is not ``NAME_baselines`` (another study holds the runs);
    ``criteria``: what ``sapo-testbed report NAME`` scores its GRPO arm against."""

    name: str
    description: str
    overrides: Mapping[str, object]
    control: Mapping[str, object]
    baselines: tuple[str, ...] = ()
    store: str | None = None
    criteria: ScenarioCriteria = dataclasses.field(default_factory=ScenarioCriteria)

    def __post_init__(self) -> None:
        if self.baselines and self.baselines[0] != "grpo":
            fail(
                self,
                "baselines",
                self.baselines,
                "must start with grpo (the reference the control pairs with)",
            )


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

BASELINES = ("grpo", "sapo", "llds", "tis")

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "isdd",
            "procedural search task, lr 3e-3, 6 optimizer steps per rollout batch: GRPO collapses "
            "from off-policy minibatch drift (its on-policy control does not)",
            ISDD,
            {"trainer.minibatches": 1},
            baselines=BASELINES,
        ),
        Scenario(
            "isdd_qwen2",
            "isdd with a 0.1 M-parameter Qwen2 policy (language-model pre-training, then imitation) "
            "at RL lr 1e-3: GRPO rises, then collapses in most seeds; its on-policy control does not",
            ISDD_QWEN2,
            {"trainer.minibatches": 1},
            baselines=("grpo", "sapo"),
            store="ladder",  # the scale ladder's 0.1 M rung at RL lr 1e-3: the same runs
        ),
        Scenario(
            "isdd_qwen2_150",
            "isdd_qwen2 over 150 updates instead of 100 (collapses were still arriving at 100)",
            {**ISDD_QWEN2, "trainer.n_updates": 150},
            {"trainer.minibatches": 1},
            baselines=BASELINES,
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
# 32 seeds (paper_figures/scenario_search.md).
DEFAULT_SCENARIO = "isdd_qwen2_150"


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ConfigError(f"scenario={name!r}: unknown; known: {sorted(SCENARIOS)}")
    return SCENARIOS[name]


def scenario_experiment(
    scenario: str,
    objectives: Sequence[str],
    seeds: Sequence[int],
    overrides: Mapping[str, object] | None = None,
    control: bool = True,
    name: str | None = None,
    description: str | None = None,
    figure: Figure | None = None,
) -> Experiment:
    """One arm per objective on ``scenario`` (``overrides`` on top), plus ``grpo_control`` (GRPO on
    the scenario's control) when ``control``; paired seeds, the first objective the reference."""
    sc = get_scenario(scenario)
    base = {**sc.overrides, **(overrides or {})}
    s = tuple(seeds)
    arms = {o: SweepSpec(base={**base, "objective.name": o}, seeds=s) for o in objectives}
    if control:
        arms[CONTROL] = SweepSpec(base={**base, **sc.control, "objective.name": "grpo"}, seeds=s)
    on = f"{', '.join(objectives)} on the {scenario} scenario"
    return Experiment(
        name=name or f"{scenario}_baselines",
        arms=arms,
        description=description or f"{on}{', GRPO on its control' if control else ''}, paired seeds",
        columns=("arm",),
        reference={"arm": objectives[0]},
        figure=figure,
    )
