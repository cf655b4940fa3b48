"""SAPO ablation: tau, w, advantage condition, token selection, KL estimator, normalisation.

One knob at a time around the default SAPO (tau 0.8, w 0.1, A >= 0, r <= tau, k1, paper norm),
with GRPO as the reference, on the default task and drift setting.

    python experiments/sapo_ablation.py [--smoke]
"""

from testbed.sweep import SweepSpec
from testbed.sweep.experiment import Experiment, experiment_main

SEEDS = (0, 1, 2)
BASE = {"trainer.n_updates": 40, "trainer.eval_every": 4}
SAPO = {**BASE, "objective.name": "sapo"}

EXPERIMENT = Experiment(
    name="sapo_ablation",
    description=__doc__.splitlines()[0],
    parts={
        "grpo": SweepSpec(base={**BASE, "objective.name": "grpo"}, seeds=SEEDS),
        "tau": SweepSpec(base=SAPO, grid={"objective.sapo_tau": [0.5, 0.8, 0.95]}, seeds=SEEDS),
        "w": SweepSpec(base=SAPO, grid={"objective.sapo_w": [0.01, 0.1, 1.0]}, seeds=SEEDS),
        "adv_condition": SweepSpec(
            base=SAPO, grid={"objective.sapo_adv_condition": ["nonneg", "pos", "any"]}, seeds=SEEDS
        ),
        "token_selection": SweepSpec(
            base=SAPO, grid={"objective.sapo_token_selection": ["below_tau", "all"]}, seeds=SEEDS
        ),
        "kl": SweepSpec(base=SAPO, grid={"objective.sapo_kl": ["k1", "k2", "k3"]}, seeds=SEEDS),
        "norm": SweepSpec(base=SAPO, grid={"objective.sapo_norm": ["paper", "penalized"]}, seeds=SEEDS),
    },
)

if __name__ == "__main__":
    experiment_main(
        EXPERIMENT,
        [
            "part",
            "objective.sapo_tau",
            "objective.sapo_w",
            "objective.sapo_adv_condition",
            "objective.sapo_token_selection",
            "objective.sapo_kl",
            "objective.sapo_norm",
        ],
    )
