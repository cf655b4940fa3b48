"""Named scenarios: a setting of the task and the drift sources, with its control (the same
setting with the drift source removed). ``sapo-testbed compare --scenario NAME`` runs one; the
``isdd`` scenario is the compare job's default and was chosen by the search documented in
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


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "isdd",
            "procedural search task, lr 3e-3, 6 optimizer steps per rollout batch: GRPO collapses "
            "from off-policy minibatch drift (its on-policy control does not)",
            {
                "trainer.lr": 0.003,
                "trainer.minibatches": 6,
                "trainer.n_updates": 100,
                "trainer.eval_every": 10,
            },
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


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ConfigError(f"scenario={name!r}: unknown; known: {sorted(SCENARIOS)}")
    return SCENARIOS[name]
