"""Sweeps: many run configs, any executor, results stored per run so a killed sweep resumes."""

from testbed.sweep.executors import BACKENDS, RayExecutor, SubmititExecutor, make_executor
from testbed.sweep.runner import default_cache_dir, local_executor, run_configs, train_one
from testbed.sweep.spec import SweepSpec, load_spec, spec_from_overrides
from testbed.sweep.store import ResultStore

__all__ = [
    "BACKENDS",
    "RayExecutor",
    "ResultStore",
    "SubmititExecutor",
    "SweepSpec",
    "default_cache_dir",
    "load_spec",
    "local_executor",
    "make_executor",
    "run_configs",
    "spec_from_overrides",
    "train_one",
]
