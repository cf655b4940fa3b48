"""Drift sources: where does GRPO collapse, and where does SAPO stop helping? A phase diagram.

Learning rate x optimizer steps per rollout batch (the phase diagram), then rollout/trainer
mismatch (old log-probs taken from the rollout, perturbed) and stale rollouts, GRPO vs SAPO.

    python experiments/drift_phase.py [--smoke]
"""

from testbed.sweep import SweepSpec
from testbed.sweep.experiment import Experiment, experiment_main

SEEDS = (0, 1)
BASE = {"trainer.n_updates": 40, "trainer.eval_every": 4}
OBJECTIVES = {"objective.name": ["grpo", "sapo"]}

EXPERIMENT = Experiment(
    name="drift_phase",
    description=__doc__.splitlines()[0],
    parts={
        "lr_x_steps": SweepSpec(
            base=BASE,
            grid={**OBJECTIVES, "trainer.lr": [0.002, 0.0035, 0.005], "trainer.minibatches": [4, 8, 16]},
            seeds=SEEDS,
        ),
        "mismatch": SweepSpec(
            base={**BASE, "trainer.old_log_probs": "rollout", "trainer.lr": 0.0035},
            grid={**OBJECTIVES, "trainer.mismatch_std": [0.0, 0.1, 0.3]},
            seeds=SEEDS,
        ),
        "staleness": SweepSpec(
            base={**BASE, "trainer.old_log_probs": "rollout", "trainer.lr": 0.0035},
            grid={**OBJECTIVES, "trainer.staleness": [0, 2]},
            seeds=SEEDS,
        ),
    },
)

COLUMNS = [
    "part",
    "objective.name",
    "trainer.lr",
    "trainer.minibatches",
    "trainer.mismatch_std",
    "trainer.staleness",
]

if __name__ == "__main__":
    experiment_main(EXPERIMENT, COLUMNS)
