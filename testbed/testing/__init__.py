"""Property-based testing of policy objectives, shipped with the package for users' own objectives."""

from testbed.testing.properties import PROPERTIES, check_objective, evaluate
from testbed.testing.strategies import ObjectiveBatch, objective_batches

__all__ = ["PROPERTIES", "ObjectiveBatch", "check_objective", "evaluate", "objective_batches"]
