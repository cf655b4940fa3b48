"""Every config field, documented once where it is defined: ``docs/CONFIG.md`` is generated from the
fields' help by ``python -m testbed.config_doc > docs/CONFIG.md``, and a test checks it is current.

A run is one ``RunConfig``: sections (``task``, ``policy``, ``objective``, ``trainer``,
``warm_start``) of validated fields, plus the run's seed. Set any field with ``--set
section.field=value`` (``--set task.world.n_entities=32 objective.sapo_tau=0.5``) or with
``--config FILE.yaml`` (nested fields, as ``sapo-testbed config`` prints them; ``sapo-testbed
config --explain`` prints each field's help above it). A bad value fails in one line naming the
field. A run's key is the hash of its config's values; a field added after runs were stored is left
out of the key while it holds its default, so those runs keep their keys.

The defaults below are ``RunConfig``'s. The command line's ``compare``, ``train``, ``sweep`` and
``config`` start from a scenario instead (``--scenario NAME``, ``testbed/studies/scenarios.py``;
by default ``DEFAULT_SCENARIO`` there, the headline's setting, which sets the policy, the learning
rates, the minibatches and the updates); ``--scenario defaults`` runs these defaults.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from testbed.config import config_fields, config_sections

COMMAND = "python -m testbed.config_doc > docs/CONFIG.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is dataclasses.MISSING:
        return ""
    return f"`{json.dumps(f.default)}`"


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split("\n\n")[0].split())


def markdown(root: type | None = None) -> str:
    """The reference of every field of ``root`` (``RunConfig`` by default) and its sections."""
    if root is None:
        from testbed.run import RunConfig

        root = RunConfig
    lines = ["# Configuration", "", f"Generated from the config classes by `{COMMAND}`.", ""]
    lines += [" ".join(p.split()).replace("``", "`") + "\n" for p in (__doc__ or "").split("\n\n")[1:]]
    for prefix, cls in config_sections(root):
        lines += [f"## `{prefix.rstrip('.') or 'run'}` ({cls.__name__})", "", _doc(cls), ""]
        lines += ["| field | default | meaning | source |", "| --- | --- | --- | --- |"]
        for f in dataclasses.fields(cls):
            meta = f.metadata
            lines.append(
                f"| `{prefix}{f.name}` | {_default(f)} | {_cell(meta.get('help', ''))} "
                f"| {_cell(meta.get('source', ''))} |"
            )
        lines.append("")
    lines += [
        "## The same knobs in TRL and verl",
        "",
        "Our field, TRL's `GRPOConfig` field and verl's config key (`actor_rollout_ref.actor` written",
        "`actor`), where they have one. The TRL and verl plug-ins (`testbed.integrations`) read",
        "these from the framework's own config.",
        "",
        "| field | TRL `GRPOConfig` | verl |",
        "| --- | --- | --- |",
    ]
    for name, f in config_fields(root):
        trl, verl = f.metadata.get("trl"), f.metadata.get("verl")
        if trl or verl:
            verl = (verl or "").replace("actor_rollout_ref.actor.", "actor.")
            lines.append(f"| `{name}` | {_cell(trl or '')} | {_cell(verl)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
