"""Policy scale: the tabular policy and transformers of three sizes, GRPO vs SAPO.

python experiments/policy_scale.py [--smoke]
"""

from testbed.sweep import SweepSpec
from testbed.sweep.experiment import Experiment, experiment_main

SEEDS = (0, 1)
BASE = {"trainer.n_updates": 40, "trainer.eval_every": 4}
OBJECTIVES = {"objective.name": ["grpo", "sapo"]}
SIZES = {
    "tabular": {"policy.kind": "tabular"},
    "transformer_1x32": {"policy.n_layers": 1, "policy.d_model": 32},
    "transformer_2x64": {"policy.n_layers": 2, "policy.d_model": 64},
    "transformer_3x128": {"policy.n_layers": 3, "policy.d_model": 128},
}

EXPERIMENT = Experiment(
    name="policy_scale",
    description=__doc__.splitlines()[0],
    parts={
        label: SweepSpec(base={**BASE, **size}, grid=OBJECTIVES, seeds=SEEDS) for label, size in SIZES.items()
    },
)

if __name__ == "__main__":
    experiment_main(EXPERIMENT, ["part", "objective.name"])
