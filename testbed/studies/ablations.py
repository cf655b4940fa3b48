"""The ablation studies of the paper figures, declared as data (each an ``Experiment`` with its
table columns and figure), on the ``isdd`` scenario, with paired seeds. The baselines studies
(``NAME_baselines``) come from the scenario registry (``testbed/studies/scenarios.py``).

- ``sapo_grid``: SAPO's tau x w (3 x 3), 16 seeds per cell, GRPO the reference (Holm over cells).
- ``drift_phase``: collapse of GRPO and SAPO over learning rate x optimizer steps per batch.
- ``family``: the clipping family on the scenario.
- ``scenario_search``: GRPO over the drift settings the ``isdd`` scenario was chosen from.
"""

from __future__ import annotations

from typing import Any

from testbed.studies.figures import family_figure, grid_figure, phase_figure, search_figure
from testbed.studies.scenarios import get_scenario
from testbed.sweep.experiment import Experiment
from testbed.sweep.spec import SweepSpec

SCENARIO = dict(get_scenario("isdd").overrides)


def sapo_grid(seeds: int = 16) -> Experiment:
    s = tuple(range(seeds))
    return Experiment(
        name="sapo_grid",
        arms={
            "grpo": SweepSpec(base={**SCENARIO, "objective.name": "grpo"}, seeds=s),
            "sapo": SweepSpec(
                base={**SCENARIO, "objective.name": "sapo"},
                grid={"objective.sapo_tau": [0.5, 0.8, 0.95], "objective.sapo_w": [0.01, 0.1, 1.0]},
                seeds=s,
            ),
        },
        description="SAPO tau x w against GRPO on the isdd scenario",
        columns=("objective.name", "objective.sapo_tau", "objective.sapo_w"),
        reference={"objective.name": "grpo", "objective.sapo_tau": 0.8, "objective.sapo_w": 0.1},
        figure=sapo_grid_figure,
    )


def sapo_grid_figure(rows: Any, summaries: Any, path: Any) -> None:
    """The grid's figure, its cells marked from the study's own table."""
    grid_figure(rows, summaries, path, sapo_grid().numbers(summaries))


def drift_phase(seeds: int = 5) -> Experiment:
    base = {k: v for k, v in SCENARIO.items() if k not in ("trainer.lr", "trainer.minibatches")}
    return Experiment(
        name="drift_phase",
        arms={
            "lr_x_steps": SweepSpec(
                base=base,
                grid={
                    "objective.name": ["grpo", "sapo"],
                    "trainer.lr": [0.001, 0.002, 0.003],
                    "trainer.minibatches": [1, 3, 6],  # 6 and 1 at lr 3e-3: the scenario and its control
                },
                seeds=tuple(range(seeds)),
            )
        },
        description="collapse rate of GRPO and SAPO over learning rate x optimizer steps per batch",
        columns=("objective.name", "trainer.lr", "trainer.minibatches"),
        figure=phase_figure,
    )


# The settings the isdd scenario was chosen from (paper_figures/scenario_search.md): GRPO under
# learning rate x optimizer steps per rollout batch, and the on-policy controls.
SEARCH: dict[str, dict[str, Any]] = {
    "lr3e-3_mb8_u80": {"trainer.lr": 0.003, "trainer.minibatches": 8, "trainer.n_updates": 80},
    "lr2e-3_mb8_u80": {"trainer.lr": 0.002, "trainer.minibatches": 8, "trainer.n_updates": 80},
    "lr3e-3_mb4_u80": {"trainer.lr": 0.003, "trainer.minibatches": 4, "trainer.n_updates": 80},
    "lr3e-3_mb6_u100": {"trainer.lr": 0.003, "trainer.minibatches": 6, "trainer.n_updates": 100},
    "lr4e-3_mb4_u100": {"trainer.lr": 0.004, "trainer.minibatches": 4, "trainer.n_updates": 100},
    "lr3e-3_mb4_u150": {"trainer.lr": 0.003, "trainer.minibatches": 4, "trainer.n_updates": 150},
    "control_lr3e-3_mb1_u80": {"trainer.lr": 0.003, "trainer.minibatches": 1, "trainer.n_updates": 80},
    "control_lr3e-3_mb1_u150": {"trainer.lr": 0.003, "trainer.minibatches": 1, "trainer.n_updates": 150},
}


# Round 2 (5 seeds each; the isdd scenario's settings and evaluation, 512 episodes every 10 updates):
# a rise of +0.15 and a collapse in one trajectory, by a lower lr over longer runs or with more steps.
SEARCH_2: dict[str, dict[str, Any]] = {
    "lr1e-3_mb6_u300": {"trainer.lr": 0.001, "trainer.n_updates": 300},
    "lr2e-3_mb6_u300": {"trainer.lr": 0.002, "trainer.n_updates": 300},
    "lr1e-3_2x6_u150": {"trainer.lr": 0.001, "trainer.epochs": 2, "trainer.n_updates": 150},
    "lr1.5e-3_2x6_u150": {"trainer.lr": 0.0015, "trainer.epochs": 2, "trainer.n_updates": 150},
}


def scenario_search(seeds: int | None = None) -> Experiment:
    """Round 1 at 8 seeds, round 2 at 5 (``seeds``: both at that many)."""
    evals = {"trainer.eval_episodes": 256, "trainer.eval_every": 5, "objective.name": "grpo"}
    one, two = tuple(range(seeds or 8)), tuple(range(seeds or 5))
    arms = {k: SweepSpec(base={**evals, **v}, seeds=one) for k, v in SEARCH.items()}
    for k, v in SEARCH_2.items():
        arms[k] = SweepSpec(base={**SCENARIO, **v, "objective.name": "grpo"}, seeds=two)
    return Experiment(
        name="scenario_search",
        arms=arms,
        description="GRPO over drift settings: rise, collapse and onset (the isdd scenario's search)",
        columns=("arm",),
        figure=search_figure,
    )


FAMILY: dict[str, dict[str, Any]] = {
    "grpo": {"objective.name": "grpo"},
    "clip_higher": {"objective.name": "grpo", "objective.eps_high": 0.28},
    "dual_clip": {"objective.name": "dual_clip"},
    "gspo": {"objective.name": "gspo"},
    "cispo": {"objective.name": "cispo"},
    "gppo": {"objective.name": "gppo"},
    "kl_cov": {"objective.name": "kl_cov"},
    "clip_cov": {"objective.name": "clip_cov"},
    "soft_adaptive_gate": {"objective.name": "soft_adaptive_gate"},
    "sapo": {"objective.name": "sapo"},
}


def family(seeds: int = 8) -> Experiment:
    return Experiment(
        name="family",
        arms={k: SweepSpec(base={**SCENARIO, **v}, seeds=tuple(range(seeds))) for k, v in FAMILY.items()},
        description="the clipping family on the isdd scenario",
        columns=("arm",),
        reference={"arm": "grpo"},
        figure=family_figure,
    )
