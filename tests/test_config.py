"""Config parsing and validation: every value is read as its field's type or fails with one line
naming the field; NaN, inf and non-numbers never pass the shared checks."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.config import (
    ConfigError,
    check_finite,
    check_positive,
    check_range,
    config_hash,
    parse_overrides,
    with_overrides,
)
from testbed.run import RunConfig


def _leaf_fields(cls: type, prefix: str = "") -> dict[str, object]:
    """Every leaf field of a config, dotted, with its declared type."""
    out: dict[str, object] = {}
    for name, tp in typing.get_type_hints(cls).items():
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out.update(_leaf_fields(tp, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = tp
    return out


FIELDS = sorted(_leaf_fields(RunConfig))
FLOAT_FIELDS = sorted(f for f, tp in _leaf_fields(RunConfig).items() if tp in (float, float | None))
NOT_FINITE = [math.nan, math.inf, -math.inf, "1.0", None, True]


@dataclasses.dataclass(frozen=True)
class Probe:
    positive: float = 1.0
    ranged: float = 0.5
    finite: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self, "positive")
        check_range(self, "ranged", 0.0, 1.0)
        check_finite(self, "finite")


@pytest.mark.parametrize("field", ["positive", "ranged", "finite"])
@pytest.mark.parametrize("value", NOT_FINITE, ids=repr)
def test_shared_checks_reject_nan_inf_and_non_numbers(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^Probe\.{field}=") as err:
        Probe(**{field: value})  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_shared_checks_accept_finite_numbers() -> None:
    assert Probe(positive=10**400, ranged=1, finite=-3.5).positive == 10**400


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400"])
def test_no_float_field_takes_nan_or_inf(field: str, text: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}='{text}': must be a finite number$"):
        with_overrides(RunConfig(), {field: text})


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"trainer.n_updates": "abc"}, r"^trainer\.n_updates='abc': cannot read it as an integer$"),
        ({"trainer.n_updates": 3.5}, r"^trainer\.n_updates=3\.5: expected an integer$"),
        ({"trainer.lr": "fast"}, r"^trainer\.lr='fast': cannot read it as a number$"),
        ({"task.require_search": "maybe"}, r"^task\.require_search='maybe': expected true or false$"),
        ({"objective.name": 3}, r"^objective\.name=3: expected text$"),
        ({"objective": "sapo"}, r"^objective='sapo': objective is a section, not a value"),
        ({"objective.name.x": "1"}, r"objective\.name is a value, not a section"),
        ({"objective.tua": "1"}, r"ObjectiveConfig has no field 'tua'"),
        ({"task.world.hop_weights": "0.5+x"}, r"^task\.world\.hop_weights\[1\]='x'"),
    ],
)
def test_type_errors_name_the_field(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        with_overrides(RunConfig(), overrides)


def test_values_are_read_as_their_fields_types() -> None:
    cfg = with_overrides(
        RunConfig(),
        {
            "trainer.n_updates": 3.0,  # a float from YAML/JSON for an int field
            "trainer.eval_every": "1e1",
            "trainer.lr": 1,  # an int for a float field
            "task.require_search": "yes",
            "objective.agg_norm_const": "none",
            "task.world.hop_weights": [0.5, 0.5],
            "policy": {"kind": "tabular"},  # a section updated by a mapping
        },
    )
    assert type(cfg.trainer.n_updates) is int and cfg.trainer.n_updates == 3
    assert cfg.trainer.eval_every == 10
    assert type(cfg.trainer.lr) is float
    assert cfg.task.require_search is True and cfg.objective.agg_norm_const is None
    assert cfg.task.world.hop_weights == (0.5, 0.5)
    assert cfg.policy.kind == "tabular" and cfg.policy.d_model == RunConfig().policy.d_model


def test_parsing_keeps_the_hash_of_an_unchanged_config() -> None:
    assert config_hash(with_overrides(RunConfig(), {})) == config_hash(RunConfig())


def test_one_override_parser() -> None:
    assert parse_overrides([" trainer.lr =0.5", "objective.name=a=b"]) == {
        "trainer.lr": "0.5",
        "objective.name": "a=b",
    }
    assert parse_overrides(["trainer.lr=0.5", "x="]) == {"trainer.lr": "0.5", "x": ""}
    for bad, match in [("lr", "expected NAME=VALUE"), ("=1", "expected NAME=VALUE")]:
        with pytest.raises(ConfigError, match=rf"^--slurm '{bad}': {match}"):
            parse_overrides([bad], "--slurm")
    with pytest.raises(ConfigError, match="given twice"):
        parse_overrides(["a=1", "a=2"])


SPECIAL = ["nan", "inf", "-inf", "1e400", "-1", "0", "1", "3.0", "0.5", "true", "none", "", " ", "+", "1+2"]
TEXT = st.one_of(
    st.sampled_from(SPECIAL), st.text(max_size=12), st.from_regex(r"-?\d{1,3}(\.\d{0,3})?", fullmatch=True)
)
YAML_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    TEXT,
    st.lists(st.floats(allow_nan=True), max_size=3),
)


def _valid_or_names_field(field: str, value: object) -> None:
    try:
        cfg = with_overrides(RunConfig(), {field: value})
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message, message
        assert field.rsplit(".", 1)[-1] in message, message
    else:
        config_hash(cfg)  # a valid config: hashable, so storable


@settings(max_examples=400, deadline=None)
@given(field=st.sampled_from(FIELDS), text=TEXT)
def test_any_text_for_any_field_gives_a_config_or_one_line_naming_it(field: str, text: str) -> None:
    _valid_or_names_field(field, text)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), value=YAML_VALUES)
def test_any_yaml_value_for_any_field_gives_a_config_or_one_line_naming_it(field: str, value: object) -> None:
    _valid_or_names_field(field, value)
