"""Sweeps: many run configs, any executor, results stored per run so a killed sweep resumes."""

from testbed.sweep.executors import (
    BACKENDS,
    RayExecutor,
    SubmititExecutor,
    make_executor,
    submitit_parameters,
)
from testbed.sweep.runner import (
    LocalExecutor,
    RunOutput,
    RunsFailed,
    default_cache_dir,
    local_executor,
    provenance,
    run_configs,
    train_members,
)
from testbed.sweep.spec import SweepSpec, load_spec, spec_from_overrides
from testbed.sweep.store import BrokenRun, ResultStore, StoreError

__all__ = [
    "BACKENDS",
    "BrokenRun",
    "LocalExecutor",
    "RayExecutor",
    "ResultStore",
    "RunOutput",
    "RunsFailed",
    "StoreError",
    "SubmititExecutor",
    "SweepSpec",
    "default_cache_dir",
    "load_spec",
    "local_executor",
    "make_executor",
    "provenance",
    "run_configs",
    "spec_from_overrides",
    "submitit_parameters",
    "train_members",
]
