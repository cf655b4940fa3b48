"""Policy objectives behind one registry. Importing this package registers the built-ins.

Add one: write ``body(log_probs, old_log_probs, advantages, mask, cfg) -> (loss, metrics)`` in a
module here, decorate it with ``@register_objective("name")``, import the module below, and test it
with ``testbed.testing.check_objective("name")``.
"""

from testbed.objectives import clip, covariance, gates, sapo, sequence  # noqa: F401  (registration)
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
