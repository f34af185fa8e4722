"""The studies' statistics over independent runs: t-intervals, one-sided tests (directional, or non-inferiority
against a declared margin), Holm's correction over a study's claims, and the smallest effect a study could detect."""

from __future__ import annotations

import numpy as np

ALPHA = 0.05


def interval(values) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def one_sided_p(values, direction: int, margin: float = 0.0) -> float:
    """p of the one-sided t-test over runs: H1 mean > 0 (direction +1), mean < 0 (−1), or, for a "no loss" claim
    (direction 0), mean > −margin (non-inferiority: the lower of the two one-sided tests of equivalence)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    shifted = values + margin if direction == 0 else values * (1 if direction > 0 else -1)
    if len(values) < 2 or shifted.std(ddof=1) == 0:  # no spread: the sign decides, an exact 0 decides nothing
        return 0.0 if shifted.mean() > 0 else 1.0 if shifted.mean() < 0 else 0.5
    return float(stats.ttest_1samp(shifted, 0.0, alternative="greater").pvalue)


def holm(pvalues: list[float], alpha: float = ALPHA) -> list[bool]:
    """Which hypotheses Holm's step-down procedure rejects at ``alpha`` (family-wise error over every claim)."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    for rank, index in enumerate(order):
        if pvalues[index] > alpha / (len(pvalues) - rank):
            break
        rejected[index] = True
    return rejected


def detectable_effect(values, power: float = 0.8, alpha: float = ALPHA) -> float:
    """The smallest mean difference a one-sided t-test at ``alpha`` over this many runs detects with ``power``,
    given the runs' observed spread: (t₁₋α + t_power) · sd / √n, with n − 1 degrees of freedom."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n < 2:
        return float("nan")
    return float((stats.t.ppf(1 - alpha, n - 1) + stats.t.ppf(power, n - 1)) * values.std(ddof=1) / np.sqrt(n))
