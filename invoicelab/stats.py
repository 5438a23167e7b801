"""Paired statistics as pure functions over numpy arrays: tests, intervals, corrections and power.

Two systems (prompts, variants) are compared on the same documents: an exact McNemar test on the
discordant pairs, paired bootstrap intervals of an accuracy or micro-F1 difference, a paired
permutation test of a mean difference, multiple-comparison correction, and the power of the exact
McNemar test for planning how many documents an A/B test needs. scipy and statsmodels do the
work; this module shapes their inputs and outputs and handles the degenerate cases they reject.

It never reads or writes files, prints, or imports pandas or Ray. scipy and statsmodels are
imported inside the functions (seconds each), so importing this module stays instant.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

METHOD_NAMES = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg"}
"""Multiple-comparison corrections ``adjust`` accepts, with the names a report shows."""

_NAN = float("nan")
_CELLS = 1_000_000
"""Numbers per vectorised batch when resampling: bounds memory to a few MB whatever the sample size."""
_TAIL = 1e-12
"""Binomial mass left out on each side when summing power over the number of discordant pairs."""


def _paired(a: ArrayLike, b: ArrayLike, dtype: type, ndim: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=dtype), np.asarray(b, dtype=dtype)
    if a.shape != b.shape or a.ndim != ndim:
        raise ValueError(f"paired arrays must have the same {ndim}-d shape: {a.shape} vs {b.shape}")
    return a, b


def mcnemar_exact(a: ArrayLike, b: ArrayLike) -> dict[str, float]:
    """Exact (binomial) McNemar test of paired correctness, by statsmodels.

    Args:
        a: Booleans, whether system A got each item right.
        b: Booleans for system B on the same items, in the same order.

    Returns:
        ``{"a_only": n, "b_only": n, "p_value": p}``, two-sided; p is 1.0 when no pair disagrees.

    Raises:
        ValueError: the arrays differ in shape.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = _paired(a, b, bool)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    # Rows: A right, A wrong; columns: B right, B wrong. The test uses only the off-diagonal cells.
    table = np.array([[np.sum(a & b), a_only], [b_only, np.sum(~a & ~b)]])
    return {"a_only": a_only, "b_only": b_only, "p_value": float(mcnemar(table, exact=True).pvalue)}


def _mean_diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(b, axis=axis) - np.mean(a, axis=axis)


def _interval(samples: tuple[np.ndarray, ...], statistic, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over documents (one index resamples every sample)."""
    n = samples[0].size
    if n < 2:  # one document says nothing about spread; scipy refuses it too
        return _NAN, _NAN
    from scipy.stats import bootstrap

    # Percentile, not scipy's default BCa: BCa's bias correction and jackknife acceleration are
    # undefined when every resample gives the same value (identical arrays, all discordant pairs one
    # way, a few documents), and scipy then returns NaN and warns, test after test. The percentile
    # interval is always defined ([0, 0] for identical arrays), and for a difference of means its
    # coverage is close to nominal at our sample sizes (tests/test_stats.py checks 90-99% for 95%).
    res = bootstrap(samples, statistic, n_resamples=n_boot, paired=True, vectorized=True,
                    confidence_level=level, method="percentile", batch=max(1, _CELLS // n),
                    rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_bootstrap(a: ArrayLike, b: ArrayLike, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Bootstrap interval of mean(b) - mean(a), resampling items with their pairs kept together.

    Args:
        a: Per-item values of system A (booleans or numbers).
        b: System B's values on the same items, in the same order.
        n_boot: Bootstrap resamples.
        seed: Seed of the resampling, so a report is reproducible.
        level: Confidence level of the two-sided percentile interval.

    Returns:
        ``{"diff": d, "low": lo, "high": hi}``; all NaN for no items, NaN interval for one item.

    Raises:
        ValueError: the arrays differ in shape.
    """
    a, b = _paired(a, b, float)
    diff = float(_mean_diff(a, b)) if a.size else _NAN
    low, high = _interval((a, b), _mean_diff, n_boot, seed, level)
    return {"diff": diff, "low": low, "high": high}


def _micro_f1(right: np.ndarray, truth: np.ndarray, predicted: np.ndarray, axis: int = -1) -> np.ndarray:
    r, t, p = (np.sum(x, axis=axis) for x in (right, truth, predicted))
    # 2PR/(P+R) with P = r/p and R = r/t is 2r/(t+p); so written it is 0, not 0/0, when nothing
    # was predicted or nothing is right.
    return np.divide(2 * r, t + p, out=np.zeros(np.shape(r)), where=r > 0)


def _f1_diff(ra, ta, pa, rb, tb, pb, axis: int = -1) -> np.ndarray:
    return _micro_f1(rb, tb, pb, axis) - _micro_f1(ra, ta, pa, axis)


def bootstrap_f1_diff(counts_a: ArrayLike, counts_b: ArrayLike, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> dict[str, float]:
    """Bootstrap interval of micro-F1(b) - micro-F1(a), resampling documents with their pairs.

    Micro-F1 pools the counts of all documents: P = sum right / sum predicted, R = sum right /
    sum truth, F1 = 2PR / (P + R), 0 when nothing is right.

    Args:
        counts_a: ``(n_docs, 3)`` per-document (right, truth, predicted) value counts of system A.
        counts_b: The same for system B, row for row the same documents.
        n_boot: Bootstrap resamples.
        seed: Seed of the resampling.
        level: Confidence level of the two-sided percentile interval.

    Returns:
        ``{"diff": d, "low": lo, "high": hi}``; all NaN for no documents, NaN interval for one.

    Raises:
        ValueError: the arrays are not both ``(n_docs, 3)``.
    """
    ca, cb = _paired(counts_a, counts_b, float, ndim=2)
    if ca.shape[1] != 3:
        raise ValueError(f"counts must be (n_docs, 3) right, truth, predicted; got {ca.shape}")
    # Six paired samples (three columns per system): scipy's paired=True draws one set of document
    # indices per resample and applies it to all six, so each document's counts stay together.
    columns = (*ca.T, *cb.T)
    diff = float(_f1_diff(*columns)) if len(ca) else _NAN
    low, high = _interval(columns, _f1_diff, n_boot, seed, level)
    return {"diff": diff, "low": low, "high": high}


def paired_permutation(a: ArrayLike, b: ArrayLike, n_resamples: int = 9999, seed: int = 0) -> dict[str, float]:
    """Two-sided paired permutation (randomisation) test of mean(b) - mean(a), by scipy.

    Under the null hypothesis A and B are exchangeable within each pair, so each difference is as
    likely to have either sign. All ``2**n`` sign patterns are used (an exact test) when there are
    no more than ``n_resamples`` of them, else ``n_resamples`` random ones.

    Args:
        a: Per-item values of system A.
        b: System B's values on the same items.
        n_resamples: Most sign patterns to draw.
        seed: Seed of the random patterns.

    Returns:
        ``{"diff": mean(b) - mean(a), "p_value": p}``; NaNs for no items, p 1.0 for one item.

    Raises:
        ValueError: the arrays differ in shape.
    """
    a, b = _paired(a, b, float)
    if a.size == 0:
        return {"diff": _NAN, "p_value": _NAN}
    d = b - a
    if d.size == 1:  # the two arrangements (+d, -d) are equally extreme; scipy refuses n = 1
        return {"diff": float(d[0]), "p_value": 1.0}
    from scipy.stats import permutation_test

    # One sample with permutation_type="samples": scipy flips the sign of each difference, i.e.
    # swaps A and B within a pair, which is the paired test (Fisher's randomisation test).
    res = permutation_test((d,), np.mean, permutation_type="samples", vectorized=True,
                           n_resamples=n_resamples, alternative="two-sided",
                           batch=max(1, _CELLS // d.size), rng=np.random.default_rng(seed))
    return {"diff": float(d.mean()), "p_value": float(res.pvalue)}


def adjust(p_values: ArrayLike, method: str = "holm") -> list[float]:
    """p-values adjusted for multiple comparisons by statsmodels, in input order.

    Args:
        p_values: Raw p-values; NaNs (tests that could not be run) stay NaN and are not counted.
        method: ``"holm"`` (family-wise error) or ``"fdr_bh"`` (false discovery rate).

    Returns:
        Adjusted p-values, one per input.

    Raises:
        ValueError: an unknown method.
    """
    if method not in METHOD_NAMES:
        raise ValueError(f"unknown correction {method!r}; available: {', '.join(METHOD_NAMES)}")
    p = np.asarray(list(p_values), dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        from statsmodels.stats.multitest import multipletests

        out[ok] = multipletests(p[ok], method=method)[1]
    return [float(x) for x in out]


def pilot_rates(a: ArrayLike, b: ArrayLike) -> tuple[float, float, int]:
    """Discordance rates of a pilot: shares of documents only A, and only B, got right.

    Returns:
        ``(p_a_only, p_b_only, n)``.

    Raises:
        ValueError: the arrays differ in shape or are empty.
    """
    a, b = _paired(a, b, bool)
    if a.size == 0:
        raise ValueError("the pilot has no paired documents")
    return float(np.mean(a & ~b)), float(np.mean(~a & b)), int(a.size)


def _check_rates(p_a_only: float, p_b_only: float, alpha: float) -> None:
    rates = (p_a_only, p_b_only)
    if not all(0 <= p <= 1 for p in rates) or p_a_only + p_b_only > 1 + 1e-12:
        raise ValueError(f"discordance rates must be in [0, 1] and sum to at most 1; got {rates}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")


def _conditional_power(d: np.ndarray, q: float, alpha: float) -> np.ndarray:
    """P(the exact McNemar test rejects | d discordant pairs) when b_only ~ Binomial(d, q)."""
    from scipy.stats import binom

    # statsmodels' p is 2 * cdf(min(k, d - k)) under Binomial(d, 1/2): it rejects (p <= alpha) for
    # k <= c or k >= d - c, c the largest count with cdf(c) <= alpha / 2 (c = -1: never).
    k = binom.ppf(alpha / 2, d, 0.5)
    c = np.where(binom.cdf(k, d, 0.5) <= alpha / 2, k, k - 1)
    return binom.cdf(c, d, q) + binom.sf(d - c - 1, d, q)


def _powers(ns: np.ndarray, p_a_only: float, p_b_only: float, alpha: float) -> np.ndarray:
    """Exact power for each document count in ``ns`` (a short run of consecutive counts)."""
    from scipy.stats import binom

    psi = p_a_only + p_b_only
    if psi == 0:
        return np.zeros(len(ns))
    out = []
    for chunk in np.array_split(ns, max(1, len(ns) // 256)):
        d = np.arange(int(binom.ppf(_TAIL, chunk.min(), psi)), int(binom.isf(_TAIL, chunk.max(), psi)) + 1)
        weights = binom.pmf(d[None, :], chunk[:, None], psi)  # P(d discordant pairs | n documents)
        out.append(weights @ _conditional_power(d, p_b_only / psi, alpha))
    return np.minimum(np.concatenate(out), 1.0)


def mcnemar_power(n: int, p_a_only: float, p_b_only: float, alpha: float = 0.05) -> float:
    """Exact power of the two-sided exact McNemar test with ``n`` documents.

    A document is "A right, B wrong" with probability ``p_a_only`` and "B right, A wrong" with
    ``p_b_only``. The power sums, over d ~ Binomial(n, p_a_only + p_b_only) discordant pairs, the
    probability that b_only ~ Binomial(d, p_b_only / (p_a_only + p_b_only)) falls in the test's
    rejection region (SAS PROC POWER's DIST=EXACT_COND definition). With equal rates it is the
    test's actual size, at most alpha.

    Args:
        n: Documents.
        p_a_only: Share of documents only A gets right.
        p_b_only: Share of documents only B gets right.
        alpha: Significance level (reject when p <= alpha).

    Returns:
        The probability of p <= alpha.

    Raises:
        ValueError: a rate or alpha out of range, or a negative n.
    """
    _check_rates(p_a_only, p_b_only, alpha)
    if n < 0:
        raise ValueError(f"n must be at least 0; got {n}")
    return float(_powers(np.array([int(n)]), p_a_only, p_b_only, alpha)[0]) if n else 0.0


def documents_needed(p_a_only: float, p_b_only: float, power: float = 0.8, alpha: float = 0.05,
                     max_n: int = 100_000) -> int:
    """Documents an exact McNemar test needs to detect the difference between the two rates.

    An exact test's power is a sawtooth in n, so it can reach the target and dip below it again
    (markedly when nearly every document is discordant). The answer is the smallest n from which
    the power stays at or above the target: after the first crossing, found by doubling and
    bisection, the next 64 + 4 * sqrt(n) counts are checked, restarting after any that falls short.
    (In a survey of rates and levels the last shortfall came within 1.0 * sqrt(n) of the crossing.)

    Args:
        p_a_only: Share of documents only A gets right (a pilot's, see ``pilot_rates``).
        p_b_only: Share of documents only B gets right.
        power: Target power.
        alpha: Significance level of the test (already divided by the number of tests, if any).
        max_n: Largest answer to look for.

    Returns:
        The number of documents.

    Raises:
        ValueError: equal rates (nothing to detect), values out of range, or more than ``max_n``
            documents needed.
    """
    _check_rates(p_a_only, p_b_only, alpha)
    if p_a_only == p_b_only:
        raise ValueError(f"A and B have the same discordance rate ({p_a_only}): there is no difference to detect")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1); got {power}")
    too_many = ValueError(f"more than max_n={max_n} documents needed for power {power} at alpha {alpha:.4g}")

    def reaches(n: int) -> bool:
        return mcnemar_power(n, p_a_only, p_b_only, alpha) >= power

    lo, hi = 0, 1
    while not reaches(hi):
        if hi >= max_n:
            raise too_many
        lo, hi = hi, min(2 * hi, max_n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
    while True:
        ns = np.arange(hi, min(hi + 64 + 4 * math.isqrt(hi), max_n) + 1)
        short = np.nonzero(_powers(ns, p_a_only, p_b_only, alpha) < power)[0]
        if short.size == 0:
            return int(hi)
        hi = int(ns[short[-1]]) + 1
        if hi > max_n:
            raise too_many
