"""Paired statistics of a comparison over seeds: the distilled − scratch difference and its t-interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

NO_DIFFERENCE = "no significant difference"


def paired_difference(scratch: Sequence[float], distilled: Sequence[float]) -> dict[str, Any]:
    """The per-seed differences `d_i = distilled_i − scratch_i` (same seed, same data) and their 95% t-interval.

    `mean ± t_{0.975, n−1} · sd / √n`, with `sd` the sample standard deviation (ddof=1) of the `n` differences:
    Student's t-interval of the mean paired difference. The difference is `significant` only when the interval
    excludes 0; with a single seed there is no interval and nothing is significant.

    Args:
        scratch, distilled: one value per seed, in the same seed order, shape (n,).

    Returns:
        `n`, `differences` (n,), `mean`, `sd` (None for n=1), `t_critical` (None for n=1), `ci95` (`[low, high]`,
        None for n=1), `significant` (bool) and `verdict` ("significant: distilled better", "significant: distilled
        worse" or "no significant difference").
    """
    a, b = np.asarray(scratch, dtype=np.float64), np.asarray(distilled, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"Need one scratch and one distilled value per seed; got shapes {a.shape} and {b.shape}.")
    differences = b - a
    n, mean = len(differences), float(differences.mean())
    result: dict[str, Any] = {"n": n, "differences": differences.tolist(), "mean": mean}
    if n < 2:
        return {**result, "sd": None, "t_critical": None, "ci95": None, "significant": False, "verdict": NO_DIFFERENCE}
    sd = float(differences.std(ddof=1))
    t_critical = float(stats.t.ppf(0.975, n - 1))
    half_width = t_critical * sd / math.sqrt(n)
    low, high = mean - half_width, mean + half_width
    significant = bool(low > 0 or high < 0)
    verdict = NO_DIFFERENCE if not significant else f"significant: distilled {'better' if mean > 0 else 'worse'}"
    return {
        **result,
        "sd": sd,
        "t_critical": t_critical,
        "ci95": [low, high],
        "significant": significant,
        "verdict": verdict,
    }


def paired_entry(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Report fields of one setting from its runs (role → one dict with `seed` and `accuracy` per seed).

    Per role: the mean, the sample std (ddof=1, None for one seed) and the per-seed accuracies; then the paired
    difference (`difference_mean`, `difference_sd`, `difference_ci95`, `significant`, `verdict`, `differences`).

    Raises:
        ValueError: the two roles were not run on the same seeds in the same order.
    """
    scratch, distilled = runs["student_scratch"], runs["student_distilled"]
    seeds = [run["seed"] for run in scratch]
    if seeds != [run["seed"] for run in distilled]:
        raise ValueError(f"Scratch seeds {seeds} and distilled seeds {[r['seed'] for r in distilled]} differ.")
    entry: dict[str, Any] = {"seeds": seeds}
    for role, role_runs in runs.items():
        accuracies = [float(run["accuracy"]) for run in role_runs]
        entry[role] = float(np.mean(accuracies))
        entry[f"{role}_std"] = float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None
        entry[f"{role}_accuracies"] = accuracies
    paired = paired_difference(entry["student_scratch_accuracies"], entry["student_distilled_accuracies"])
    entry.update(
        differences=paired["differences"],
        difference_mean=paired["mean"],
        difference_sd=paired["sd"],
        difference_ci95=paired["ci95"],
        t_critical=paired["t_critical"],
        significant=paired["significant"],
        verdict=paired["verdict"],
    )
    return entry
