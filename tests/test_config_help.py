"""Every config field is explained where it is defined: help on each field of every config class
(found by walking ``RunConfig``), ``docs/CONFIG.md`` generated from it, ``config --explain``, and
the names the doc gives for TRL's and verl's knobs exist in those frameworks."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from testbed import cli
from testbed.config import (
    config_fields,
    config_sections,
    explained_yaml,
    field_type,
    from_dict,
    with_overrides,
)
from testbed.config_doc import COMMAND, markdown
from testbed.run import RunConfig, config_yaml

FIELDS = dict(config_fields(RunConfig))


CLASSES = sorted({cls for _, cls in config_sections(RunConfig)}, key=lambda c: c.__name__)


def test_the_walk_finds_every_config_class() -> None:
    names = {c.__name__ for c in CLASSES}
    assert names >= {
        "RunConfig",
        "TaskConfig",
        "WorldConfig",
        "RetrieverConfig",
        "PolicyConfig",
        "ObjectiveConfig",
        "TrainerConfig",
        "WarmStartConfig",
    }
    for name in ("task.world.kind", "task.retriever.top_k", "objective.sapo_tau", "warm_start.steps", "seed"):
        assert name in FIELDS


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_field_has_help(name: str) -> None:
    text = FIELDS[name].metadata.get("help", "")
    assert len(text.split()) >= 3, f"{name}: give it testbed.config.field(default, help='...')"


@pytest.mark.parametrize("cls", CLASSES)
def test_every_config_class_has_a_docstring(cls: type) -> None:
    doc = cls.__doc__ or ""
    assert doc and not doc.startswith(f"{cls.__name__}("), f"{cls.__name__} has no docstring"


def test_config_doc_is_generated_from_the_code() -> None:
    path = Path(__file__).parent.parent / "docs" / "CONFIG.md"
    assert path.read_text() == markdown(), f"run: {COMMAND}"


def test_config_doc_names_every_field() -> None:
    doc = markdown()
    missing = [name for name in FIELDS if f"| `{name}` |" not in doc]
    assert not missing


def test_explained_yaml_reads_back_as_the_same_config() -> None:
    cfg = with_overrides(
        RunConfig(),
        {
            "task.world.hop_weights": "0.5+0.5",
            "objective.name": "sapo",
            "objective.loss_agg_mode": "token-mean",
        },
    )
    text = explained_yaml(cfg)
    assert from_dict(RunConfig, yaml.safe_load(text)) == cfg
    assert yaml.safe_load(text) == yaml.safe_load(config_yaml(cfg))
    help_line = "# " + " ".join(FIELDS["objective.sapo_tau"].metadata["help"].split()[:4])
    assert help_line in text


def test_config_explain_prints_help_as_comments(capsys: pytest.CaptureFixture[str]) -> None:
    with contextlib.suppress(SystemExit):
        cli.main(["config", "--explain", "--set", "objective.sapo_tau=0.5"])
    out = capsys.readouterr().out
    assert "  sapo_tau: 0.5" in out
    assert sum(line.lstrip().startswith("#") for line in out.splitlines()) >= len(FIELDS)


def _names(text: str, pattern: str) -> list[str]:
    return re.findall(pattern, text)


def test_trl_names_are_grpo_config_fields() -> None:
    trl = pytest.importorskip("trl")
    known = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    named = {
        (name, word)
        for name, f in FIELDS.items()
        for word in _names(f.metadata.get("trl", "").split("(")[0], r"[a-z][a-z_]*")
        if word != "x"
    }
    assert named, "no field names a TRL knob"
    assert not {(name, word) for name, word in named if word not in known}


def test_verl_names_are_keys_of_its_config() -> None:
    verl = pytest.importorskip("verl")
    tree = yaml.safe_load(
        (Path(verl.__file__).parent / "trainer/config/_generated_ppo_trainer.yaml").read_text()
    )

    def has(key: str) -> bool:
        node = tree
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    named = {
        (name, key)
        for name, f in FIELDS.items()
        for key in _names(f.metadata.get("verl", ""), r"[a-z_]+(?:\.[a-z_]+)+")
    }
    assert named, "no field names a verl key"
    assert not {(name, key) for name, key in named if not has(key)}


def test_the_sweep_examples_in_specs_docstring_are_real(tmp_path: Path) -> None:
    from testbed.sweep import spec

    doc = spec.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(block))
    configs = spec.load_spec(path).configs()
    assert {c.objective.sapo_tau for c in configs} == {0.5, 0.8, 1.0}
    (override,) = re.findall(r"``([a-z_.]+=[^`]+)``", doc)
    assert len(spec.spec_from_overrides([override], seeds=(0,)).configs()) == 2


def test_dotted_field_examples_in_config_docstrings_name_real_fields() -> None:
    import testbed.config

    docs = [obj.__doc__ or "" for obj in vars(testbed.config).values() if callable(obj)]
    names = {
        n
        for doc in docs
        for n in re.findall(r"``((?:task|policy|objective|trainer|warm_start)\.[a-z_.]+)", doc)
    }
    assert names
    for name in names:
        field_type(RunConfig, name)  # an unknown name fails here
