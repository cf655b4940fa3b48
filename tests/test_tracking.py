"""The tracking seam: streamed CSV/Parquet table, TensorBoard events a reader loads, W&B offline."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from testbed.tracking import TableWriter, Tracker, make_tracker

ROWS = [
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
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
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
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    with make_tracker("wandb", tmp_path, "abc123-s0") as tracker:
        tracker.log_config({"objective": {"name": "sapo"}})
        for row in ROWS:
            tracker.log_row(row["update"], row)
        run = tracker.trackers[1].run
        assert run.name == "abc123-s0" and run.config["objective"] == {"name": "sapo"}
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))


def test_unknown_tracker_kind_is_refused(tmp_path) -> None:
    with pytest.raises(
        ValueError, match=r"track: expected one of \(None, 'tensorboard', 'wandb'\), got 'mlflow'"
    ):
        make_tracker("mlflow", tmp_path, "x")
