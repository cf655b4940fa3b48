"""Every column a run logs, documented once: the table in ``docs/METRICS.md`` is generated from
``METRICS`` (``python -m testbed.metrics``), and a test checks that every logged column is here.

Scopes: ``minibatch`` (computed by each objective call and averaged over the update's optimizer
steps), ``pooled`` (computed once per update over every token of the rollout batch), ``rollout``
(of the update's rollout batch), ``eval`` (evaluation points only; NaN or absent in between),
``run`` (bookkeeping). ``{s}`` is ``all``, ``pos`` (A > 0 tokens) or ``neg`` (A < 0 tokens).
"""

from __future__ import annotations

import re
import sys

EMPTY = "NaN when the set is empty (e.g. no A > 0 token in the batch)"

# name (may hold {s}) -> (scope, meaning, when NaN)
METRICS: dict[str, tuple[str, str, str]] = {
    "update": ("run", "update index (0 = before training)", ""),
    "optimizer_steps": ("run", "optimizer steps taken so far (epochs x minibatches per update)", ""),
    "wall_time": ("run", "seconds since the run started (excludes the base policy)", ""),
    "loss": (
        "minibatch",
        "the objective's total loss (surrogate + penalties + reference KL - entropy bonus)",
        "",
    ),
    "pg_loss": ("minibatch", "the policy-gradient surrogate alone, without penalties", ""),
    "entropy": ("minibatch", "token-mean entropy of the policy on written tokens (nats)", ""),
    "grad_norm": ("minibatch", "gradient norm before clipping, mean over the update's steps", ""),
    "grad_norm_max": ("minibatch", "largest gradient norm among the update's steps", ""),
    "ratio_{stat}_{s}": (
        "minibatch",
        "statistic (mean, min, p05, p50, p95) of r = pi_theta / pi_old over the set's tokens",
        EMPTY,
    ),
    "low_ratio_frac_pos": (
        "minibatch",
        "share of A > 0 tokens with r <= trainer.diag_ratio_threshold (the ISDD signal)",
        EMPTY,
    ),
    "low_ratio_frac_nonneg": (
        "minibatch",
        "share of A >= 0 tokens with r <= trainer.diag_ratio_threshold (what SAPO acts on at that tau)",
        EMPTY,
    ),
    "clip_frac_upper": ("minibatch", "share of tokens with A > 0 and r > 1 + eps_high (PPO clip active)", ""),
    "clip_frac_lower": ("minibatch", "share of tokens with A < 0 and r < 1 - eps_low (PPO clip active)", ""),
    "zero_grad_frac_{s}": ("minibatch", "share of the set's tokens whose loss gradient is exactly 0", EMPTY),
    "approx_kl": ("minibatch", "k3 estimate of KL(pi_old || pi_theta) per token", ""),
    "approx_kl_k1": ("minibatch", "k1 estimate of KL(pi_old || pi_theta) per token", ""),
    "ref_kl": ("minibatch", "KL to the reference policy (0 without ref_kl_coef)", ""),
    "sapo_penalty": ("minibatch", "SAPO's conditional KL term before its weight w", ""),
    "sapo_penalized_frac": ("minibatch", "share of tokens SAPO's penalty acts on", ""),
    "llds_penalty": ("minibatch", "LLDS's likelihood-preserving term before its coefficient", ""),
    "llds_active_frac": (
        "minibatch",
        "share of all masked tokens that LLDS's hinge acts on (gated A >= 0 tokens whose likelihood fell)",
        "0 with no masked token",
    ),
    "tis_truncated_frac": ("minibatch", "share of tokens whose TIS weight hit the cap", EMPTY),
    "mis_masked_frac": (
        "minibatch",
        "share of tokens MIS dropped (rollout/trainer ratio out of range)",
        EMPTY,
    ),
    "rollout_weight_mean": ("minibatch", "mean TIS/MIS weight pi_old / pi_rollout", ""),
    "rollout_ratio_min": ("minibatch", "smallest pi_old / pi_rollout", ""),
    "rollout_ratio_max": ("minibatch", "largest pi_old / pi_rollout", ""),
    "cov_selected_frac": ("minibatch", "share of tokens Clip-Cov / KL-Cov selected", ""),
    "opsm_masked_seq_frac": ("minibatch", "share of sequences OPSM masked", ""),
    "adv_zero_frac": ("rollout", "share of responses with advantage exactly 0 (groups of equal rewards)", ""),
    "train_reward": ("rollout", "mean reward of the update's rollout batch", ""),
    "searches_per_episode": ("rollout", "search calls per episode of the rollout batch", ""),
    "response_length": ("rollout", "written (policy) tokens per episode", ""),
    "pooled_ratio_{q}_{set}": (
        "pooled",
        "p05 / p50 of r = pi_after / pi_old over all A > 0 (pos) or A >= 0 (nonneg) tokens of the update",
        EMPTY,
    ),
    "pooled_low_ratio_frac_{set}": (
        "pooled",
        "share of those tokens with r <= trainer.diag_ratio_threshold",
        EMPTY,
    ),
    "collapsed_search_frac": (
        "pooled",
        "of the A > 0 tokens with r <= tau, the share in search calls",
        EMPTY,
    ),
    "collapsed_answer_frac": ("pooled", "of the A > 0 tokens with r <= tau, the share in answers", EMPTY),
    "lld_mean_nonneg": (
        "pooled",
        "mean change of log-likelihood of A >= 0 responses over the update (LLD)",
        EMPTY,
    ),
    "lld_down_frac_nonneg": (
        "pooled",
        "share of A >= 0 responses whose likelihood fell over the update",
        EMPTY,
    ),
    "isdd_alarm": ("pooled", "the early-warning alarm has fired by this update (see diagnostics.ALARM)", ""),
    "eval_em_{mode}": (
        "eval",
        "EM on the evaluation episodes: greedy, sampled, or sampled closed-book (random documents)",
        "absent between evaluation points",
    ),
    "eval_em_{mode}_se": (
        "eval",
        "standard error of that EM, sqrt(p (1 - p) / episodes)",
        "absent between points",
    ),
}

# The record of a finished run (``testbed.run.summarise``; ``ResultStore.summaries()`` adds
# ``PROVENANCE``), beside its config columns: name -> (meaning, TRL's equivalent, verl's).
# EM is the sampled evaluation's (``eval_em_sampled``) unless the name says greedy or closed-book.
SUMMARY: dict[str, tuple[str, str, str]] = {
    "run": ("the run's key: the hash of its config (`testbed.config.config_hash`)", "", ""),
    "warm_em": (
        "EM of the base policy, at update 0",
        "`eval_reward` before training (TRL does not evaluate at step 0 by itself)",
        "`val-core/<source>/reward/mean@1` at step 0 (`trainer.val_before_train`)",
    ),
    "peak_em": (
        "highest EM of the run's evaluations",
        "max of `eval_reward`",
        "max of `val-core/.../mean@1`",
    ),
    "peak_update": ("update of that highest EM (the first, on ties)", "", ""),
    "final_em": ("EM at the last update", "last `eval_reward`", "last `val-core/.../mean@1`"),
    "warm_em_greedy": (
        "greedy EM at update 0",
        "",
        "`val-core/.../mean@1` with `val_kwargs.do_sample=False`",
    ),
    "final_em_greedy": ("greedy EM at the last update", "", "the same, at the last step"),
    "final_em_closed_book": ("closed-book EM (random documents) at the last update", "", ""),
    "max_em_closed_book": (
        "highest closed-book EM of the run (stays near chance: retrieval matters)",
        "",
        "",
    ),
    "collapsed": (
        "EM fell below trainer.collapse_frac x its running peak (a peak >= trainer.collapse_min_peak) "
        "and stayed there to the end (`diagnostics.detect_collapse`)",
        "",
        "",
    ),
    "collapse_step": ("first evaluation update of that final stretch; empty unless collapsed", "", ""),
    "alarm_update": ("update at which `isdd_alarm` first fired; empty if it never did", "", ""),
}
PROVENANCE: dict[str, str] = {
    "package_version": "sapo-testbed's version",
    "git_commit": "the checkout's commit (empty outside git)",
    "git_dirty": "tracked files differed from that commit",
    "torch_version": "torch's version",
    "torch_threads": "torch threads the run used (results depend on it)",
    "cpu_capability": "torch's CPU kernel path (e.g. AVX2; results depend on it)",
    "population_size": "runs trained together with it in one process, as one population",
}

_FILL = {
    "{s}": "(all|pos|neg)",
    "{stat}": "(mean|min|p05|p50|p95)",
    "{q}": "(p05|p50)",
    "{set}": "(pos|nonneg)",
    "{mode}": "(greedy|sampled|closed_book)",
}


def documented(name: str) -> bool:
    """Whether a logged column is documented in ``METRICS``."""
    for pattern in METRICS:
        regex = re.escape(pattern)
        for key, alt in _FILL.items():
            regex = regex.replace(re.escape(key), alt)
        if re.fullmatch(regex, name):
            return True
    return False


def markdown() -> str:
    lines = [
        "# Logged metrics",
        "",
        "Generated from `testbed/metrics.py` by `python -m testbed.metrics > docs/METRICS.md`.",
        "",
        __doc__.split("\n\n", 1)[1].strip(),
        "",
        "| column | scope | meaning | NaN when |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| `{name}` | {scope} | {meaning} | {nan} |" for name, (scope, meaning, nan) in METRICS.items()
    ]
    lines += [
        "",
        "## Run summaries",
        "",
        "One record per finished run (`ResultStore(out).summaries()`, the `train` command's output), "
        "beside its config columns. EM is the sampled evaluation's (`eval_em_sampled`) unless the "
        "name says greedy or closed-book. TRL and verl have no run summary: their equivalents are "
        "the series a summary is read from.",
        "",
        "| column | meaning | TRL | verl |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| `{name}` | {meaning} | {trl} | {verl} |" for name, (meaning, trl, verl) in SUMMARY.items()]
    lines += [f"| `{name}` | provenance: {meaning} |  |  |" for name, meaning in PROVENANCE.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
