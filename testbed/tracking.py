"""Experiment tracking behind one small seam, CleanRL-style.

A ``Tracker`` takes the resolved config once (``log_config``), one row of metrics per update
(``log_row``) and ``close()``. ``make_tracker`` always streams the run's table to disk
(``rows.csv`` appended row by row as the run goes, ``rows.parquet`` written at close) and adds
TensorBoard or Weights & Biases on request:

    name, group = run_names(config_dict)       # e.g. "sapo-1a2b3c4d5e6f-s3", "sapo-1a2b3c4d5e6f"
    tracker = make_tracker("tensorboard", run_dir, name, group=group, tensorboard_dir=logdir)
    tracker.log_config(config_dict)
    for row in rows:
        tracker.log_row(row["update"], row)
    tracker.close()

A run's name is ``<objective>-<setting>-s<seed>``, ``<setting>`` being the hash of its config
without the seed: the seeds of one setting sort together in TensorBoard's run list and form one
W&B group. Files under ``run_dir``: ``rows.csv``, ``rows.parquet`` and ``wandb/`` (W&B's run
folders); TensorBoard's events go to ``tensorboard_dir/<name>/`` (default ``run_dir/tensorboard``),
so that ``tensorboard --logdir tensorboard_dir`` lists the runs by name (``testbed.run`` uses one
``tensorboard/`` folder beside the run folders). W&B runs offline unless ``WANDB_MODE`` says
otherwise (upload later with ``wandb sync run_dir/wandb/offline-run-*``); its project and entity
come from the arguments, else ``WANDB_PROJECT`` (default ``sapo-testbed``) and ``WANDB_ENTITY``;
its group is ``WANDB_RUN_GROUP`` if set, else the one given (``testbed.run``: the run's setting).
"""

from __future__ import annotations

import csv
import math
import numbers
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

import pandas as pd

from testbed.config import config_hash
from testbed.io import atomic_path

KINDS = (None, "tensorboard", "wandb")


@runtime_checkable
class Tracker(Protocol):
    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log_row(self, step: int, row: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (``objective.sapo_tau``), the way hyperparameter tables show them."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def run_names(config: Mapping[str, Any]) -> tuple[str, str]:
    """(run name, group) of a run's resolved config (nested dict): ``<objective>-<setting>-s<seed>``
    and ``<objective>-<setting>``, ``<setting>`` the hash of every field but the seed."""
    setting = config_hash({k: v for k, v in config.items() if k != "seed"})
    group = f"{config['objective']['name']}-{setting}"
    return f"{group}-s{config['seed']}", group


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite real numbers of a row: what a scalar dashboard can plot (NaN means 'not measured')."""
    out = {}
    for key, value in row.items():
        if isinstance(value, numbers.Real) and math.isfinite(value):
            out[key] = float(value)
    return out


class TableWriter:
    """The run's table on disk as it grows: ``rows.csv`` appended per row, ``rows.parquet`` at close.

    Rows may gain columns (evaluation metrics appear only at evaluation steps): the CSV is then
    rewritten once with the wider header, so it always parses as one table. Rows stay in memory
    (a run has at most thousands), which also gives the Parquet file its one schema at close.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path, self.parquet_path = self.dir / "rows.csv", self.dir / "rows.parquet"
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        self._file: TextIO | None = None
        self._writer: csv.DictWriter | None = None

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Nothing to do: the table holds rows; the caller stores the config (or puts it in rows)."""

    def log_row(self, step: int, row: Mapping[str, Any]) -> None:
        row = dict(row)
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        if new or self._writer is None:
            self.columns += new
            self._rewrite()
        else:
            self._writer.writerow(row)
        assert self._file is not None  # opened by _rewrite with the writer
        self._file.flush()

    def _rewrite(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = open(self.csv_path, "w", newline="")  # noqa: SIM115 (held open while the run goes)
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        self._writer.writeheader()
        self._writer.writerows(self.rows)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)

    def close(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        with atomic_path(self.parquet_path) as tmp:
            self.frame().to_parquet(tmp, index=False)


class TensorBoardTracker:
    """Scalars per row under their own names; the config as a Markdown table of hyperparameters.
    ``log_dir`` is the run's own folder of events (TensorBoard names the run by it); a rerun
    replaces its events rather than adding a second curve to each chart."""

    def __init__(self, log_dir: Path | str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch's writer needs the tensorboard package
            raise ImportError(
                "track=tensorboard needs the tensorboard package: pip install 'sapo-testbed[track]'"
            ) from e
        shutil.rmtree(log_dir, ignore_errors=True)
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_config(self, config: Mapping[str, Any]) -> None:
        lines = "\n".join(f"|{k}|{v}|" for k, v in flatten(config).items())
        self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{lines}")

    def log_row(self, step: int, row: Mapping[str, Any]) -> None:
        for key, value in scalars(row).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run named ``run_name``; offline unless ``mode`` or ``WANDB_MODE`` says otherwise.
    ``project`` and ``entity``: given, else ``WANDB_PROJECT`` (default ``sapo-testbed``) and
    ``WANDB_ENTITY`` (W&B's default); ``group``: ``WANDB_RUN_GROUP`` if set, else as given."""

    def __init__(
        self,
        run_dir: Path | str,
        run_name: str,
        project: str | None = None,
        mode: str | None = None,
        entity: str | None = None,
        group: str | None = None,
    ) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError("track=wandb needs the wandb package: pip install 'sapo-testbed[track]'") from e
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        env = os.environ.get
        self.run = wandb.init(
            project=project or env("WANDB_PROJECT") or "sapo-testbed",
            entity=entity or env("WANDB_ENTITY"),
            group=env("WANDB_RUN_GROUP") or group,
            name=run_name,
            dir=str(run_dir),
            # a mode of the user's (or WANDB_MODE), which wandb itself checks against its Literal
            mode=mode or os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
            reinit="create_new",  # several runs in one process (sweeps) each get their own
        )

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def log_row(self, step: int, row: Mapping[str, Any]) -> None:
        self.run.log(scalars(row), step=step)

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """Several trackers as one; also a context manager that closes them all."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def log_config(self, config: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.log_config(config)

    def log_row(self, step: int, row: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.log_row(step, row)

    def close(self) -> None:
        for t in self.trackers:
            t.close()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_tracker(
    kind: str | None,
    run_dir: Path | str,
    run_name: str,
    project: str | None = None,
    *,
    entity: str | None = None,
    group: str | None = None,
    tensorboard_dir: Path | str | None = None,
) -> Trackers:
    """The streamed table under ``run_dir``, plus TensorBoard (events in
    ``tensorboard_dir/run_name``, default ``run_dir/tensorboard``) or W&B (``project``, ``entity``,
    ``group``: see ``WandbTracker``) when ``kind`` names one."""
    if kind not in KINDS:
        raise ValueError(f"track: expected one of {KINDS}, got {kind!r}")
    run_dir = Path(run_dir)
    trackers: list[Tracker] = [TableWriter(run_dir)]
    if kind == "tensorboard":
        trackers.append(TensorBoardTracker(Path(tensorboard_dir or run_dir / "tensorboard") / run_name))
    elif kind == "wandb":
        trackers.append(WandbTracker(run_dir, run_name, project, entity=entity, group=group))
    return Trackers(trackers)
