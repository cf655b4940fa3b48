"""Policy objectives behind one registry. Importing this package registers the built-ins.

Add one: write ``body(log_probs, old_log_probs, advantages, mask, cfg) -> (loss, metrics)`` in a
module here, decorate it with ``@register_objective("name", default_agg=...)`` (its paper's
aggregation; ``uses_rollout_log_probs=True`` to receive the rollout engine's log-probs as a sixth
argument), import the module below, and test it with ``testbed.testing.check_objective("name")``.
"""

from testbed.objectives import (  # noqa: F401  (registration)
    clip,
    covariance,
    gates,
    llds,
    mismatch,
    sapo,
    sequence,
)
from testbed.objectives.registry import (
    Metrics,
    Objective,
    ObjectiveConfig,
    get_objective,
    list_objectives,
    register_objective,
    unregister_objective,
)

__all__ = [
    "Metrics",
    "Objective",
    "ObjectiveConfig",
    "get_objective",
    "list_objectives",
    "register_objective",
    "unregister_objective",
]
