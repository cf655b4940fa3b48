"""Mutation check: each mutation below breaks one guarded behaviour; the tests named with it must fail.

    python -m testbed.testing.mutants            # every mutation
    python -m testbed.testing.mutants --only verl_dp_size

Copies ``testbed/``, ``tests/`` and ``pyproject.toml`` into a temporary folder, applies one
mutation at a time to the copy (never to the working tree) and runs its tests there, with the copy
first on ``sys.path``. First the unmutated copy must pass them. Prints one line per mutation and
exits 1 if one survives (its tests still pass) or an edit no longer applies.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once
    new: str
    tests: tuple[str, ...]  # pytest node ids or "file -k expression"


EXAMPLES = "tests/test_objective_examples.py"
BOUNDARIES = f"{EXAMPLES}::test_hand_computed_sapo_and_isdd_metrics_at_their_boundaries"
ISDD = "tests/test_mutations.py::test_hand_computed_isdd_signals"
TRL = "tests/test_trl.py::test_trl_settings_change_our_loss_exactly_as_trls"
ORACLE = "tests/test_peer_oracle.py"

MUTATIONS = (
    Mutation(
        "sapo_acts_on_positive_only",
        "testbed/objectives/sapo.py",
        "return advantages >= 0",
        "return advantages > 0",
        (BOUNDARIES,),
    ),
    Mutation(
        "sapo_tau_strict",
        "testbed/objectives/sapo.py",
        "ratio.detach() <= cfg.sapo_tau",
        "ratio.detach() < cfg.sapo_tau",
        (BOUNDARIES,),
    ),
    Mutation(
        "low_ratio_frac_nonneg_counts_positive_only",
        "testbed/objectives/common.py",
        'share(low, splits["all"] & (advantages >= 0))',
        'share(low, splits["all"] & (advantages > 0))',
        (BOUNDARIES,),
    ),
    Mutation(
        "pooled_nonneg_is_positive",
        "testbed/diagnostics.py",
        '("nonneg", valid & (adv >= 0))',
        '("nonneg", valid & (adv > 0))',
        (ISDD,),
    ),
    Mutation(
        "pooled_p05_is_the_minimum",
        "testbed/diagnostics.py",
        "p05, p50 = quantiles(ratio[sel], (0.05, 0.5)).tolist()",
        "p05, p50 = quantiles(ratio[sel], (0.0, 0.5)).tolist()",
        (ISDD,),
    ),
    Mutation(
        "verl_ignores_dp_size",
        "testbed/integrations/verl.py",
        'dp = _get(info, "dp_size", 1)',
        "dp = 1",
        (f"{ORACLE}::test_plugin_scales_by_dp_size_as_verls_agg_loss",),
    ),
    Mutation(
        "trl_window_ignores_steps_per_generation",
        "testbed/integrations/trl.py",
        "normalizer = normalizer * accumulation / self.args.steps_per_generation",
        "normalizer = normalizer * accumulation",
        (f"{TRL} -k steps_per_generation",),
    ),
    # Beyond the seven: what this round fixed must stay fixed.
    Mutation(
        "llds_gates_per_token",
        "testbed/objectives/llds.py",
        'if gate == "token":',
        "if True:",
        ("tests/test_objective_llds.py",),
    ),
    Mutation(
        "llds_normalised_by_eligible_tokens",
        "testbed/objectives/llds.py",
        "n = max(int((mask > 0).sum()), 1)",
        "n = max(int(((mask > 0) & (advantages >= 0)).sum()), 1)",
        ("tests/test_objective_llds.py",),
    ),
    Mutation(
        "mis_sequence_level_is_token_level",
        "testbed/objectives/mismatch.py",
        'if cfg.rollout_is_level == "sequence":',
        "if False:",
        (f"{EXAMPLES}::test_hand_computed_sequence_level_mismatch",),
    ),
    Mutation(
        "trl_rows_mean_over_non_empty_rows",
        "testbed/integrations/trl.py",
        "surrogate = surrogate * (mask.sum(-1) > 0).sum() / mask.size(0)",
        "surrogate = surrogate",
        (f"{TRL} -k 'grpo and not dapo and not bnpo'",),
    ),
    Mutation(
        "trl_k3_clamped",
        "testbed/integrations/trl.py",
        'inputs["ref_per_token_logps"].detach(), "k3", exact=True)',
        'inputs["ref_per_token_logps"].detach(), "k3")',
        (f"{TRL} -k beta",),
    ),
    Mutation(
        "trl_no_entropy_bonus",
        "testbed/integrations/trl.py",
        "loss = loss - self._entropy_bonus(",
        "loss = loss - 0 * self._entropy_bonus(",
        (f"{TRL} -k entropy",),
    ),
    Mutation(
        "trl_gspo_kl_weighted_by_token_ratios",
        "testbed/integrations/trl.py",
        "kl = kl * torch.exp(self._importance_weights(logps - old, mask))",
        "kl = kl * torch.exp(logps - old)",
        (f"{TRL} -k 'gspo and beta'",),
    ),
    Mutation(
        "trl_vllm_sequence_modes_weight_tokens",
        "testbed/integrations/trl.py",
        '"rollout_is_level": level,\n    }',
        '"rollout_is_level": "token",\n    }',
        ("tests/test_trl.py::test_trl_vllm_importance_sampling_reaches_tis_and_mis",),
    ),
    Mutation(
        "trl_gspo_clip_ratios_from_token_ratios",
        "testbed/integrations/trl.py",
        "coef_1 = self._importance_weights(logps.detach() - old, mask)",
        "coef_1 = logps.detach() - old",
        (f"{TRL} -k gspo",),
    ),
    Mutation(
        "verl_gspo_ignores_clip_ratios",
        "testbed/integrations/verl.py",
        '"gspo_eps_low": low,',
        "",
        (f"{ORACLE}::test_plugin_gspo_takes_verls_clip_ratios",),
    ),
    Mutation(
        "verl_soft_gate_aggregates_per_token",
        "testbed/integrations/verl.py",
        '"seq-mean-token-mean" if name == "soft_adaptive_gate" else loss_agg_mode',
        "loss_agg_mode",
        (f"{ORACLE}::test_plugin_soft_gate_aggregates_per_sequence_as_verls_sapo",),
    ),
    Mutation(
        "verl_penalty_normalised_per_micro_batch",
        "testbed/integrations/verl.py",
        "if weight is None:",
        "if True:",
        (f"{ORACLE}::test_plugin_loss_does_not_depend_on_the_split",),
    ),
)


def _copy(into: Path) -> None:
    for name in ("testbed", "tests"):
        shutil.copytree(ROOT / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", into / "pyproject.toml")


def _run_tests(where: Path, tests: Sequence[str]) -> int:
    """pytest's exit code for ``tests`` run in ``where`` (0: all passed, 1: some failed)."""
    codes = []
    env = {**os.environ, "PYTHONPATH": str(where)}
    for spec in tests:
        path, _, expr = spec.partition(" -k ")
        args = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", path]
        if expr:
            args += ["-k", expr.strip("'")]
        done = subprocess.run(args, cwd=where, env=env, capture_output=True, text=True)
        codes.append(done.returncode)
    return max(codes)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if text.count(old) != 1:
        raise ValueError(f"{path}: {old!r} occurs {text.count(old)} times, not once")
    path.write_text(text.replace(old, new))


def check(mutations: Sequence[Mutation]) -> list[str]:
    """Names of the mutations that survive (or no longer apply); prints one line for each."""
    failures = []
    baseline: dict[tuple[str, ...], int] = {}  # each set of tests, run once unmutated
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        _copy(copy)
        for m in mutations:
            target = copy / m.path
            original = target.read_text()
            if m.tests not in baseline:
                baseline[m.tests] = _run_tests(copy, m.tests)
            if baseline[m.tests] != 0:
                print(f"{m.name}: its tests fail without the mutation", flush=True)
                failures.append(m.name)
                continue
            try:
                _edit(target, m.old, m.new)
                code = _run_tests(copy, m.tests)
            except ValueError as err:
                print(f"{m.name}: {err}", flush=True)
                failures.append(m.name)
                continue
            finally:
                target.write_text(original)
            caught = code == 1
            print(f"{m.name}: {'caught' if caught else f'SURVIVED (pytest exit {code})'}", flush=True)
            if not caught:
                failures.append(m.name)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=[m.name for m in MUTATIONS], help="mutations to run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    return 1 if check(chosen) else 0


if __name__ == "__main__":
    raise SystemExit(main())
