"""The tiny run every test builds on: the experiments' smoke size (``testbed.sweep.experiment.SMOKE``)."""

from __future__ import annotations

from testbed.config import with_overrides
from testbed.run import RunConfig
from testbed.sweep.experiment import SMOKE

TINY = {k: str(v) for k, v in SMOKE.items()}


def tiny(**extra: str) -> RunConfig:
    """The smoke-size config with ``extra`` dotted overrides on top."""
    return with_overrides(RunConfig(), {**TINY, **extra})
