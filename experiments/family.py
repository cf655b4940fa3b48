"""The clipping family on the same task, drift setting and seeds: peak EM, final EM, collapse rate.

python experiments/family.py [--smoke]
"""

from testbed.sweep import SweepSpec
from testbed.sweep.experiment import Experiment, experiment_main

SEEDS = (0, 1, 2)
BASE = {"trainer.n_updates": 40, "trainer.eval_every": 4}
MEMBERS = {
    "grpo": {"objective.name": "grpo"},
    "clip_higher": {"objective.name": "grpo", "objective.eps_high": 0.28},
    "dual_clip": {"objective.name": "dual_clip"},
    "gspo": {"objective.name": "gspo", "objective.loss_agg_mode": "seq-mean-token-mean"},
    "cispo": {"objective.name": "cispo"},
    "gppo": {"objective.name": "gppo"},
    "kl_cov": {"objective.name": "kl_cov"},
    "clip_cov": {"objective.name": "clip_cov"},
    "soft_adaptive_gate": {"objective.name": "soft_adaptive_gate"},
    "sapo": {"objective.name": "sapo"},
}

EXPERIMENT = Experiment(
    name="family",
    description=__doc__.splitlines()[0],
    parts={label: SweepSpec(base={**BASE, **over}, seeds=SEEDS) for label, over in MEMBERS.items()},
)

if __name__ == "__main__":
    experiment_main(EXPERIMENT, ["part"])
