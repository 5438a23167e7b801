"""Paired statistics as pure functions over arrays; no I/O, no Ray, no pandas.

Used to tell whether two prompts (or two variants) differ on the same documents by more than
chance: an exact McNemar test on the discordant pairs, and a paired bootstrap interval of the
difference in accuracy.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Exact (binomial) McNemar test of paired correctness.

    Args:
        a: Booleans, whether system A got each item right.
        b: Booleans for system B on the same items, in the same order.

    Returns:
        ``{"a_only": n, "b_only": n, "p_value": p}``; p is 1.0 when no pair disagrees.

    Raises:
        ValueError: the arrays differ in length.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(min(a_only, b_only), n, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Bootstrap interval of mean(b) - mean(a), resampling items (pairs kept together).

    Returns:
        ``{"diff": d, "low": lo, "high": hi}``; NaNs for empty input.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan")}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    diffs = b[idx].mean(axis=1) - a[idx].mean(axis=1)
    tail = (1 - level) / 2
    return {"diff": float(b.mean() - a.mean()), "low": float(np.quantile(diffs, tail)),
            "high": float(np.quantile(diffs, 1 - tail))}
