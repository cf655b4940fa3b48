"""The package's import graph (files as rooms, imports as arrows, lazy imports included): no
circle between modules, and no import from a room to a room of the floor above it."""

from __future__ import annotations

import ast
from pathlib import Path

import testbed

ROOT = Path(testbed.__file__).parent

# Floors, lowest first: a module may import from its own floor or those below, never above.
FLOORS = (
    (
        "testbed.config",
        "testbed.io",
        "testbed.batch",
        "testbed.kl",
        "testbed.aggregation",
        "testbed.advantages",
    ),
    ("testbed.envs", "testbed.objectives", "testbed.metrics"),
    ("testbed.policies", "testbed.diagnostics", "testbed.rollout", "testbed.analysis"),
    ("testbed.trainer", "testbed.warmstart", "testbed.tracking", "testbed.testing"),
    ("testbed.run", "testbed.sweep", "testbed.config_doc"),
    ("testbed.studies", "testbed.integrations"),
    ("testbed.cli",),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every ``testbed`` module that ``path`` imports at run time, at any depth of its code
    (imports for type checkers only are not arrows)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("testbed"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("testbed"))
    return found


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {m: {i for i in imports(p) if i in mods and i != m} for m, p in mods.items()}


def floor(module: str) -> int | None:
    for level, rooms in enumerate(FLOORS):
        if any(module == r or module.startswith(r + ".") for r in rooms):
            return level
    return None


def test_every_module_has_a_floor() -> None:
    assert [m for m in graph() if floor(m) is None and m != "testbed"] == []


def test_no_import_runs_up_a_floor() -> None:
    up = [
        f"{m} -> {i}"
        for m, deps in graph().items()
        for i in deps
        if m != "testbed" and floor(i) is not None and floor(i) > floor(m)  # type: ignore[operator]
    ]
    assert up == []


def test_no_import_circle() -> None:
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for i in sorted(g[m]):
            if state.get(i) == 1:
                cycles.append([*path[path.index(i) :], i] if i in path else [m, i])
            elif i not in state:
                visit(i, [*path, i])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_every_study_has_its_alias_script() -> None:
    from testbed.studies import CATALOG

    aliases = ROOT.parent / "experiments"
    assert sorted(p.stem for p in aliases.glob("*.py")) == sorted(CATALOG)
    for name in CATALOG:
        assert f'main(["experiment", "{name}", *sys.argv[1:]])' in (aliases / f"{name}.py").read_text()
