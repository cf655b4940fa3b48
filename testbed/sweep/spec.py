"""Sweep specifications: a base config, axes over any dotted config field, and seeds.

From Python (``SweepSpec(base={...}, grid={...}, seeds=[...])``), from a YAML or JSON file::

    base: {trainer.n_updates: 60}
    grid: {objective.sapo_tau: [0.5, 0.8, 1.0], objective.name: [sapo]}
    random: {n: 4, space: {trainer.lr: {loguniform: [0.001, 0.01]}}}
    seeds: [0, 1, 2]

or from command-line overrides (``objective.sapo_tau=0.5,0.8`` makes an axis of two values).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from testbed.config import ConfigError, load_yaml, parse_overrides, read_text, shown, with_overrides
from testbed.run import RunConfig

DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint")
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def _is_list(v: Any) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, str)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_distribution(field: str, dist: Any) -> None:
    """A random-space entry is ``{kind: [args]}`` with arguments that kind can sample from."""
    where = f"SweepSpec.random.space[{field!r}]={shown(dist)}"
    if not isinstance(dist, Mapping) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: must be {{kind: [args]}}, kind one of {list(DISTRIBUTIONS)}")
    ((kind, args),) = dist.items()
    if kind == "choice":
        if not _is_list(args) or not args:
            raise ConfigError(f"{where}: choice needs a non-empty list of values")
        return
    bounds = _is_list(args) and len(args) == 2
    if kind == "randint" and not (bounds and all(_is_int(a) for a in args) and args[0] <= args[1]):
        raise ConfigError(f"{where}: randint needs two integers [low, high], low <= high")
    if kind != "randint" and not (bounds and all(_is_number(a) for a in args) and args[0] <= args[1]):
        raise ConfigError(f"{where}: {kind} needs two finite numbers [low, high], low <= high")
    if kind == "loguniform" and args[0] <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0")


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    base: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    grid: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    random: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seeds: Sequence[int] = (0,)

    def __post_init__(self) -> None:
        for name in ("base", "grid", "random"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"SweepSpec.{name}={shown(getattr(self, name))}: must be a mapping")
        for field, values in self.grid.items():
            if not _is_list(values) or not values:
                raise ConfigError(f"SweepSpec.grid[{field!r}]={shown(values)}: must be a non-empty list")
        self._check_random()
        for name in ("base", "grid"):
            if "seed" in getattr(self, name):
                raise ConfigError(
                    f"SweepSpec.{name}['seed']: seeds are named by seeds (a file's seeds: [1000, 1001], "
                    "the command line's --seeds 1000-1001), not as a config field"
                )
        if not _is_list(self.seeds) or not self.seeds or not all(_is_int(s) for s in self.seeds):
            raise ConfigError(f"SweepSpec.seeds={shown(self.seeds)}: must be a non-empty list of integers")

    def _check_random(self) -> None:
        unknown = set(self.random) - {"n", "seed", "space"}
        if unknown:
            raise ConfigError(f"SweepSpec.random: unknown key(s) {sorted(unknown)}; known: n, seed, space")
        n, seed = self.random.get("n", 1), self.random.get("seed", 0)
        if not _is_int(n) or n < 1:
            raise ConfigError(f"SweepSpec.random.n={shown(n)}: must be an integer >= 1")
        if not _is_int(seed) or seed < 0:
            raise ConfigError(f"SweepSpec.random.seed={shown(seed)}: must be an integer >= 0")
        space = self.random.get("space", {})
        if not isinstance(space, Mapping):
            raise ConfigError(
                f"SweepSpec.random.space={shown(space)}: must be a mapping of field to {{kind: [args]}}"
            )
        for field, dist in space.items():
            _check_distribution(field, dist)

    def points(self) -> list[dict[str, Any]]:
        """The override dicts of every point (grid x random samples), without seeds."""
        names = list(self.grid)
        grid = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*self.grid.values())]
        samples = self._random_samples()
        return [{**self.base, **g, **r} for g in grid for r in samples]

    def _random_samples(self) -> list[dict[str, Any]]:
        space = self.random.get("space", {})
        if not space:
            return [{}]
        rng = np.random.default_rng(self.random.get("seed", 0))
        out = []
        for _ in range(self.random.get("n", 1)):
            point = {}
            for field, dist in space.items():
                ((kind, args),) = dist.items()
                if kind == "uniform":
                    point[field] = float(rng.uniform(*args))
                elif kind == "loguniform":
                    point[field] = float(np.exp(rng.uniform(np.log(args[0]), np.log(args[1]))))
                elif kind == "randint":
                    point[field] = int(rng.integers(args[0], args[1] + 1))
                else:
                    point[field] = args[int(rng.integers(len(args)))]
            out.append(point)
        return out

    def configs(self, base: RunConfig | None = None) -> list[RunConfig]:
        """Every run: each point times each seed; bad fields fail here, before any work."""
        base = base or RunConfig()
        return [with_overrides(base, {**p, "seed": s}) for p in self.points() for s in self.seeds]


def _read(path: Path) -> Any:
    """The parsed content of a YAML or JSON sweep file; one-line errors for anything else."""
    if path.suffix not in SPEC_SUFFIXES:
        raise ConfigError(f"{path}: a sweep file must end in {', '.join(SPEC_SUFFIXES)}")
    if path.suffix != ".json":
        return load_yaml(path)
    text = read_text(path)
    try:
        return json.loads(text, object_pairs_hook=functools.partial(_unique, path)) if text.strip() else None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err


def _unique(path: Path, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each written once (else the last one would win)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f"{path}: not valid JSON (key {key!r} written twice)")
        out[key] = value
    return out


def load_spec(path: Path | str) -> SweepSpec:
    """A SweepSpec from a .json, .yaml or .yml file."""
    path = Path(path)
    data = _read(path)
    keys = [f.name for f in dataclasses.fields(SweepSpec)]
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{path}: empty, or not a mapping; expected keys among {keys}")
    unknown = set(data) - set(keys)
    if unknown:
        raise ConfigError(f"{path}: unknown sweep keys {sorted(unknown, key=str)}; known: {keys}")
    try:
        return SweepSpec(**data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def spec_from_overrides(pairs: Sequence[str], seeds: Sequence[int]) -> SweepSpec:
    """``field=a,b`` becomes a grid axis; ``field=a`` a base override."""
    base, grid = {}, {}
    for k, v in parse_overrides(pairs, "--grid").items():
        values = v.split(",")
        if len(values) > 1:
            grid[k] = values
        else:
            base[k] = v
    return SweepSpec(base=base, grid=grid, seeds=tuple(seeds))


MAX_SEEDS = 100_000  # a range past this is a typo, not a study


def parse_seeds(text: str) -> tuple[int, ...]:
    """Seeds named on the command line: ``16`` is 0..15, ``1000-1015`` a range (both ends in),
    ``3,7,9`` a list."""
    try:
        if "," in text:
            seeds = [int(t) for t in text.split(",")]
        elif "-" in text.strip()[1:]:
            low, high = (int(t) for t in text.split("-", 1))
            seeds = list(range(low, high + 1)) if high - low < MAX_SEEDS else []
        else:
            seeds = list(range(int(text))) if int(text) <= MAX_SEEDS else []
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or not all(0 <= s < 2**63 for s in seeds):
        raise ConfigError(
            f"seeds {text!r}: expected a count N (seeds 0..N-1), a range A-B or a list A,B,C of distinct "
            f"seeds in [0, 2**63), at most {MAX_SEEDS}"
        )
    return tuple(seeds)
