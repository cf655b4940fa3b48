"""Shipped runs (``sapo-testbed export``): exported from a smoke study's store, they regenerate the
same report, RESULTS.md and figure bytes on an empty store; a changed file is refused in one line;
runs of other settings are not used; the repository's own shipped runs are current and small."""

from __future__ import annotations

import hashlib
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from clirun import run_cli

from testbed.studies import CATALOG, get_study, study_store
from testbed.studies.shipped import BUDGET_MB, DATA, ROW_SIGNALS, read_shipped
from testbed.sweep.experiment import store_for
from testbed.sweep.runner import run_configs
from testbed.sweep.store import FORMAT

ROOT = Path(__file__).resolve().parents[1]
STUDY = "isdd_baselines"


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """The root of a store holding the smoke study ``STUDY`` (trained in this process)."""
    root = tmp_path_factory.mktemp("runs")
    exp = get_study(STUDY)
    configs = [c for spec in exp.at_size(smoke=True).values() for c in spec.configs()]
    with ThreadPoolExecutor(1) as pool:
        run_configs(configs, store_for(study_store(STUDY), root, smoke=True), pool, progress=False)
    return root


@pytest.fixture
def shipped(stored: Path, tmp_path: Path, capsys) -> Path:
    """``STUDY``'s runs exported from ``stored`` to a fresh data folder."""
    data = tmp_path / "data"
    code, out, _ = run_cli(["export", STUDY, "--smoke", "--root", str(stored), "--out", str(data)], capsys)
    assert code == 0 and out.startswith(f"{STUDY}: exported 10 of its 10 runs to {data / STUDY} (")
    return data


def _report(root: Path, data: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return run_cli(["report", "isdd", "--smoke", "--root", str(root), "--shipped", str(data), *extra], capsys)


def _figures(root: Path, data: Path, out: Path, capsys) -> str:
    argv = ["figures", STUDY, "--smoke", "--only-stored", "--root", str(root), "--shipped", str(data)]
    code, said, _ = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 0
    return said


def test_shipped_runs_regenerate_the_report_and_the_figures(
    stored: Path, shipped: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    folder = shipped / STUDY
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    assert (manifest["runs"], manifest["store_format"], manifest["size"]) == (10, FORMAT, "smoke")
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == entry["sha256"]
    assert {arm for arm, _ in manifest["keys"]} == {"grpo", "sapo", "llds", "tis", "grpo_control"}
    rows = pd.read_parquet(folder / "rows.parquet")
    assert list(rows.columns[:2]) == ["run", "update"] and set(rows.columns[2:]) <= set(ROW_SIGNALS)

    empty = tmp_path / "empty"
    code, text, err = _report(empty, shipped, capsys)
    assert code == 0 and text == _report(stored, shipped, capsys)[1]
    assert err == f"sapo-testbed: none stored under {empty}; using the runs shipped in {folder}\n"
    code, text, _ = _report(empty, shipped, capsys, "--seeds", "1")  # fewer seeds: a part of them
    assert code == 0 and text.startswith("isdd: {'grpo': 1, 'sapo': 1,")

    drawn = []  # the frames the figure is drawn from, from the shipped runs, then from the store
    monkeypatch.setattr(
        "testbed.studies.arm_curves", lambda rows, summaries, path: drawn.append((rows, summaries))
    )
    for root, source in ((empty, f", shipped in {folder} (none stored)"), (stored, "")):
        said = _figures(root, shipped, tmp_path / f"figures{len(drawn)}", capsys)
        assert said.startswith(f"{STUDY}: 10 runs{source}\n")
    results = [(tmp_path / f"figures{i}" / "RESULTS.md").read_text() for i in (0, 1)]
    assert results[0] == results[1]
    (rows, summaries), (local_rows, local_summaries) = drawn
    pd.testing.assert_frame_equal(summaries, local_summaries, check_exact=True)
    read = ["arm", "seed", "update", *(c for c in local_rows.columns if c in ROW_SIGNALS)]
    pd.testing.assert_frame_equal(rows[read], local_rows[read], check_exact=True)  # float32 lost no bit

    again = tmp_path / "again"  # the same store exports the same bytes
    assert run_cli(["export", STUDY, "--smoke", "--root", str(stored), "--out", str(again)], capsys)[0] == 0
    assert (again / STUDY / "MANIFEST.json").read_bytes() == (folder / "MANIFEST.json").read_bytes()


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
def test_a_changed_shipped_file_is_refused_in_one_line(shipped: Path, tmp_path: Path, capsys, damage) -> None:
    path = shipped / STUDY / "rows.parquet"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[:-10]))
    else:
        path.unlink()
    code, out, err = _report(tmp_path / "empty", shipped, capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1
    why = "unreadable (No such file" if damage == "remove" else "does not match the sha256 in its MANIFEST"
    assert err.startswith(f"sapo-testbed: output error: {path}: {why}")


@pytest.mark.parametrize("change", ["key", "store_format"])
def test_shipped_runs_of_other_settings_are_not_used(shipped: Path, tmp_path: Path, capsys, change) -> None:
    path = shipped / STUDY / "MANIFEST.json"
    manifest = json.loads(path.read_text())
    if change == "key":  # a run whose config the study no longer names
        manifest["keys"][3][1] = "0123456789ab"
    else:
        manifest["store_format"] = FORMAT - 1
    path.write_text(json.dumps(manifest))
    empty = tmp_path / "empty"
    code, out, err = _report(empty, shipped, capsys)
    assert (code, out) == (2, "")
    warning, error = err.splitlines()
    assert warning.startswith(
        f"sapo-testbed: warning: {shipped / STUDY}: the shipped runs are of other settings ("
    )
    assert warning.endswith("); not used: export the study again")
    assert (
        "1 of 10 keys are not the study's now, e.g. " if change == "key" else f"this version's is {FORMAT}"
    ) in warning
    assert error.startswith("sapo-testbed: config error: scenario='isdd': no stored runs")
    assert _figures(empty, shipped, tmp_path / "figures", capsys).startswith(
        f"{STUDY}: no stored runs, skipped"
    )


def test_the_repositorys_shipped_runs_are_current_verified_and_small() -> None:
    """Every study shipped in paper_figures/data reads without a warning (its keys are the study's
    now, its files match their checksums), and the whole folder stays within its budget."""
    data = ROOT / DATA
    folders = sorted(p.parent for p in data.glob("*/MANIFEST.json"))
    for folder in folders:
        assert folder.name in CATALOG, f"{folder}: not a study of the catalog"
        exp = CATALOG[folder.name](None)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            found = read_shipped(folder, exp, smoke=False, study=CATALOG[folder.name])
        assert found is not None, f"{folder}: not runs of the full-size study: export them again"
    size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) if data.exists() else 0
    assert size <= BUDGET_MB * 2**20


def test_export_with_nothing_stored_writes_nothing(tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(
        ["export", "family", "--smoke", "--root", str(tmp_path), "--out", str(tmp_path / "d")], capsys
    )
    assert (
        code == 0 and out == f"family: no stored runs in {tmp_path / 'smoke' / 'family'}, nothing exported\n"
    )
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_figures_drawn_from_shipped_runs_are_the_same_bytes(
    stored: Path, shipped: Path, tmp_path: Path, capsys
) -> None:
    for root, out in ((tmp_path / "empty", tmp_path / "a"), (stored, tmp_path / "b")):
        _figures(root, shipped, out, capsys)
    for name in ("RESULTS.md", f"{STUDY}.png", f"{STUDY}.pdf"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
