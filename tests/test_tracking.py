"""The tracking seam: streamed CSV/Parquet table, TensorBoard events a reader loads, W&B offline."""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest
from tiny import tiny

from testbed.config import to_dict, with_overrides
from testbed.metrics import PROVENANCE, SUMMARY
from testbed.run import flat_config, train_population
from testbed.sweep import ResultStore, run_configs
from testbed.tracking import TableWriter, Tracker, WandbTracker, make_tracker, run_names

ROWS: list[dict[str, Any]] = [
    {"update": 1, "loss": 0.5, "objective": "sapo", "ratio_p05": float("nan")},
    {"update": 2, "loss": 0.25, "objective": "sapo", "ratio_p05": 0.9, "eval_em_sampled": 0.125},
    {"update": 3, "loss": 0.125, "objective": "sapo", "ratio_p05": 0.8},
]


def test_table_is_streamed_row_by_row_and_widens_when_rows_gain_columns(tmp_path) -> None:
    table = TableWriter(tmp_path)
    assert isinstance(table, Tracker)
    table.log_row(1, ROWS[0])
    assert pd.read_csv(tmp_path / "rows.csv")["loss"].tolist() == [0.5]  # on disk before close
    table.log_row(2, ROWS[1])  # a new column: the header widens, earlier rows get NaN
    table.log_row(3, ROWS[2])
    mid = pd.read_csv(tmp_path / "rows.csv")
    assert list(mid.columns) == ["update", "loss", "objective", "ratio_p05", "eval_em_sampled"]
    assert mid["update"].tolist() == [1, 2, 3]
    assert mid["eval_em_sampled"].isna().tolist() == [True, False, True]
    assert not (tmp_path / "rows.parquet").exists()
    table.close()
    parquet = pd.read_parquet(tmp_path / "rows.parquet")
    pd.testing.assert_frame_equal(parquet, pd.read_csv(tmp_path / "rows.csv"))
    assert parquet["objective"].tolist() == ["sapo"] * 3


def test_tensorboard_events_load_in_tensorboards_reader(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with make_tracker("tensorboard", tmp_path, "abc123-s0") as tracker:
        tracker.log_config({"objective": {"name": "sapo", "tau": 0.8}, "seed": 0})
        for row in ROWS:
            tracker.log_row(row["update"], row)
    events = EventAccumulator(str(tmp_path / "tensorboard" / "abc123-s0"), size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss", "ratio_p05", "eval_em_sampled", "update"} <= set(tags["scalars"])
    assert "objective" not in tags["scalars"]  # text is not a scalar
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 0.5), (2, 0.25), (3, 0.125)]
    assert [e.step for e in events.Scalars("ratio_p05")] == [2, 3]  # NaN means not measured: skipped
    assert math.isclose(events.Scalars("eval_em_sampled")[0].value, 0.125)
    config = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|objective.tau|0.8|" in config and "|seed|0|" in config
    assert (tmp_path / "rows.parquet").exists()  # the table is always written


def test_wandb_offline_writes_a_run_dir(tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(var, raising=False)  # offline is the default
    with make_tracker("wandb", tmp_path, "abc123-s0", group="sapo-abc123") as tracker:
        tracker.log_config({"objective": {"name": "sapo"}})
        for row in ROWS:
            tracker.log_row(row["update"], row)
        run = cast(WandbTracker, tracker.trackers[1]).run
        assert run.name == "abc123-s0" and run.config["objective"] == {"name": "sapo"}
        assert (run.project, run.group) == ("sapo-testbed", "sapo-abc123")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))


def test_wandb_takes_project_entity_and_group_from_arguments_or_its_environment(
    tmp_path, monkeypatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    monkeypatch.setenv("WANDB_RUN_GROUP", "group-from-env")
    with make_tracker("wandb", tmp_path / "a", "x-s0", group="sapo-abc") as tracker:
        run = cast(WandbTracker, tracker.trackers[1]).run
        assert (run.project, run.group) == ("from-env", "group-from-env")
    monkeypatch.delenv("WANDB_RUN_GROUP")
    with make_tracker("wandb", tmp_path / "b", "x-s0", "mine", entity="lab", group="sapo-abc") as tracker:
        run = cast(WandbTracker, tracker.trackers[1]).run
        assert (run.project, run.entity, run.group) == ("mine", "lab", "sapo-abc")


def _two_seeds() -> list:
    base = tiny(**{"trainer.n_updates": "3", "trainer.eval_every": "3"})
    return [with_overrides(base, {"seed": s}) for s in (0, 1)]


def test_tensorboard_lists_runs_by_readable_names_with_the_live_alarm_and_a_rerun_replaces_them(
    tmp_path,
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    cfgs = _two_seeds()
    results = train_population(cfgs, runs_dir=tmp_path, track="tensorboard")
    name, group = run_names(to_dict(cfgs[0]))
    assert name == f"{group}-s0" and group.startswith("grpo-") and run_names(to_dict(cfgs[1]))[1] == group

    def board() -> EventMultiplexer:  # what ``tensorboard --logdir <runs>/tensorboard`` shows
        mux = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "tensorboard"))
        mux.Reload()
        return mux

    assert sorted(board().Runs()) == [f"{group}-s0", f"{group}-s1"]
    stored = [bool(r["isdd_alarm"]) for r in results[0][0]]
    live = board().Scalars(name, "isdd_alarm")
    assert [bool(e.value) for e in live] == stored and [e.step for e in live] == [0, 1, 2, 3]
    train_population(cfgs[:1], runs_dir=tmp_path, track="tensorboard")  # rerun: one curve, not two
    assert [e.step for e in board().Scalars(name, "loss")] == [1, 2, 3]


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> tuple[Path, list]:
    """A store holding one finished tiny run."""
    root, cfgs = tmp_path_factory.mktemp("store"), _two_seeds()[:1]
    run_configs(cfgs, ResultStore(root), ThreadPoolExecutor(1), progress=False)
    return root, cfgs


def test_track_on_runs_already_stored_says_so_in_one_line(stored) -> None:
    root, cfgs = stored
    for track, save, what in ((None, True, "saved"), ("tensorboard", True, "tracked or saved")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store = ResultStore(root, track=track, save_policy=save)
            run_configs(cfgs, store, ThreadPoolExecutor(1), progress=False)
        assert [str(w.message) for w in caught] == [
            f"1 of 1 runs already stored: not trained again, so not {what} (--force reruns them)"
        ]


def test_every_column_of_a_run_summary_is_documented(stored) -> None:
    root, cfgs = stored
    summary = ResultStore(root).summaries().iloc[0].to_dict()
    columns = set(summary) - set(flat_config(cfgs[0]))
    assert columns == set(SUMMARY) | set(PROVENANCE), "document them in testbed/metrics.py SUMMARY"
    assert "| `collapse_step` |" in (Path(__file__).parent.parent / "docs" / "METRICS.md").read_text()


def test_unknown_tracker_kind_is_refused(tmp_path) -> None:
    with pytest.raises(
        ValueError, match=r"track: expected one of \(None, 'tensorboard', 'wandb'\), got 'mlflow'"
    ):
        make_tracker("mlflow", tmp_path, "x")
