"""Sweeps: many run configs, any executor, results stored per run so a killed sweep resumes."""

from testbed.sweep.runner import default_cache_dir, local_executor, run_configs
from testbed.sweep.store import ResultStore

__all__ = ["ResultStore", "default_cache_dir", "local_executor", "run_configs"]
