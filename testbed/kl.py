"""KL estimators from sampled log-probabilities (Schulman, "Approximating KL Divergence", 2020).

With samples x ~ p and ``log_ratio = log p(x) - log q(x)``, each estimator's expectation is
KL(p || q):

- ``k1 = log_ratio``: unbiased, high variance, can be negative per token.
- ``k2 = log_ratio**2 / 2``: biased, low variance, always >= 0.
- ``k3 = exp(-log_ratio) - 1 + log_ratio``: unbiased, low variance, always >= 0 ("low_var_kl").

Only k3 is clamped (log-ratio to [-20, 20] before ``exp``, the estimate to [-10, 10]), as verl's
``low_var_kl`` does, because its exponential overflows; k1 and k2 stay exact so that their
gradients never vanish. That clamp zeroes k3's gradient once log p - log q > about 11 (for SAPO's
penalty, KL(pi_old || pi_theta): r = pi_theta / pi_old below about 1.7e-5, exactly the collapsed
tokens it targets), so ``exact=True`` guards only the overflowing side (log_ratio < -20) and keeps
the linear side, where the estimate grows like log_ratio and its gradient stays near 1.
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")
_K3_LOG_RATIO_CLAMP = 20.0
_K3_VALUE_CLAMP = 10.0


def kl_estimate(
    sample_log_probs: torch.Tensor, other_log_probs: torch.Tensor, kind: str, exact: bool = False
) -> torch.Tensor:
    """Per-token estimate of KL(p || q) from log p (the sampling policy) and log q."""
    log_ratio = sample_log_probs - other_log_probs
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.square()
    if kind == "k3" and exact:
        lr = log_ratio.clamp(min=-_K3_LOG_RATIO_CLAMP)
        return torch.exp(-lr) - 1.0 + lr
    if kind == "k3":
        lr = log_ratio.clamp(-_K3_LOG_RATIO_CLAMP, _K3_LOG_RATIO_CLAMP)
        return (torch.exp(-lr) - 1.0 + lr).clamp(-_K3_VALUE_CLAMP, _K3_VALUE_CLAMP)
    raise ValueError(f"kl estimator={kind!r}: must be one of {list(KL_ESTIMATORS)}")
