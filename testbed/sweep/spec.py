"""Sweep specifications: a base config, axes over any dotted config field, and seeds.

From Python (``SweepSpec(base={...}, grid={...}, seeds=[...])``), from a YAML or JSON file::

    base: {trainer.n_updates: 60}
    grid: {objective.tau: [0.5, 0.8, 1.0], objective.name: [sapo]}
    random: {n: 4, space: {trainer.lr: {loguniform: [0.001, 0.01]}}}
    seeds: [0, 1, 2]

or from command-line overrides (``objective.tau=0.5,0.8`` makes an axis of two values).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from testbed.config import ConfigError, with_overrides
from testbed.trainer import RunConfig

DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint")


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    base: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    grid: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    random: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seeds: Sequence[int] = (0,)

    def __post_init__(self) -> None:
        for field, values in self.grid.items():
            if isinstance(values, str) or not isinstance(values, Sequence) or not values:
                raise ConfigError(f"SweepSpec.grid[{field!r}]={values!r}: must be a non-empty list")
        for field, dist in self.random.get("space", {}).items():
            if not isinstance(dist, Mapping) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
                raise ConfigError(
                    f"SweepSpec.random.space[{field!r}]={dist!r}: must be {{kind: [args]}}, "
                    f"kind one of {list(DISTRIBUTIONS)}"
                )
        if not self.seeds:
            raise ConfigError("SweepSpec.seeds=[]: needs at least one seed")

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
        for _ in range(int(self.random.get("n", 1))):
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
        return [
            with_overrides(base, {**{k: _text_or_value(v) for k, v in p.items()}, "seed": s})
            for p in self.points()
            for s in self.seeds
        ]


def _text_or_value(v: Any) -> Any:
    return v if not isinstance(v, list) else tuple(v)


def load_spec(path: Path | str) -> SweepSpec:
    """A SweepSpec from a .json, .yaml or .yml file."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    unknown = set(data) - {f.name for f in dataclasses.fields(SweepSpec)}
    if unknown:
        raise ConfigError(f"{path}: unknown sweep keys {sorted(unknown)}")
    return SweepSpec(**data)


def spec_from_overrides(pairs: Sequence[str], seeds: Sequence[int]) -> SweepSpec:
    """``field=a,b`` becomes a grid axis; ``field=a`` a base override."""
    base, grid = {}, {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"{p!r}: expected FIELD=VALUE[,VALUE...]")
        k, v = p.split("=", 1)
        values = v.split(",")
        if len(values) > 1:
            grid[k] = values
        else:
            base[k] = v
    return SweepSpec(base=base, grid=grid, seeds=tuple(seeds))
