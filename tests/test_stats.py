"""Paired statistics against worked examples with published numbers (each cited where it is used)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import binomtest, multinomial, norm, t
from statsmodels.stats.contingency_tables import mcnemar

from invoicelab.stats import (
    METHOD_NAMES,
    adjust,
    bootstrap_f1_diff,
    documents_needed,
    mcnemar_exact,
    mcnemar_power,
    paired_bootstrap,
    paired_permutation,
    pilot_rates,
)


def paired_from_table(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean arrays (A right, B right) with the given 2x2 paired counts."""
    a = np.repeat([True, True, False, False], [both, a_only, b_only, neither])
    b = np.repeat([True, False, True, False], [both, a_only, b_only, neither])
    return a, b


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---------------------------------------------------------------- McNemar


def test_mcnemar_on_agrestis_approval_table():
    # Agresti, Categorical Data Analysis (2nd ed., 2002), Table 10.1 (An Introduction to CDA, 2nd ed.,
    # Table 8.1): approval of the Prime Minister by 1600 people in two surveys a month apart;
    # 794 approve both times, 150 approve then disapprove, 86 disapprove then approve, 570 neither.
    # Agresti reports z = (86 - 150) / sqrt(86 + 150) = -4.17, z^2 = 17.36.
    first, second = paired_from_table(794, 150, 86, 570)
    result = mcnemar_exact(first, second)
    assert (result["a_only"], result["b_only"]) == (150, 86)
    # the exact p is the two-sided binomial test of 86 of 236 discordant pairs against 1/2
    assert result["p_value"] == pytest.approx(binomtest(86, 236, 0.5).pvalue, rel=1e-9)
    assert result["p_value"] < 1e-4
    # the counts we report, put back into the table, give Agresti's chi-square
    table = [[794, result["a_only"]], [result["b_only"], 570]]
    assert mcnemar(table, exact=False, correction=False).statistic == pytest.approx(17.36, abs=0.005)


def test_mcnemar_by_hand_and_edge_cases():
    # 5 discordant pairs all one way: p = 2 * 0.5**5 = 0.0625, whichever side wins
    a, b = paired_from_table(3, 0, 5, 2)
    assert mcnemar_exact(a, b) == {"a_only": 0, "b_only": 5, "p_value": 0.0625}
    assert mcnemar_exact(b, a)["p_value"] == 0.0625
    # 1 against 4: p = 2 * (1 + 5) / 32 = 0.375
    a, b = paired_from_table(0, 1, 4, 0)
    assert mcnemar_exact(a, b)["p_value"] == pytest.approx(0.375)
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0  # no pair disagrees
    with pytest.raises(ValueError, match=r"\(3,\) vs \(4,\)"):
        mcnemar_exact([True] * 3, [True] * 4)


# ---------------------------------------------------------------- multiple comparisons

# Benjamini & Hochberg (1995), "Controlling the false discovery rate", JRSS B 57:289-300, section 4:
# the 15 p-values of Neuhaus et al.'s thrombolysis trial. BH at 0.05 rejects the 4 smallest; Bonferroni
# (0.05/15) rejects 3, and so does Holm (0.0095 > 0.05/12).
BH_1995 = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262,
           0.5719, 0.6528, 0.7590, 1.000]


def test_benjamini_hochberg_example():
    bh, holm = np.array(adjust(BH_1995, "fdr_bh")), np.array(adjust(BH_1995, "holm"))
    assert np.sum(bh <= 0.05) == 4
    assert np.sum(holm <= 0.05) == 3
    assert sum(min(1.0, 15 * p) <= 0.05 for p in BH_1995) == 3  # Bonferroni, by hand
    assert holm[0] == pytest.approx(15 * 0.0001)  # the smallest: times the 15 tests
    assert holm[3] == pytest.approx(12 * 0.0095)  # the fourth: times the 12 left
    assert bh[3] == pytest.approx(0.0095 * 15 / 4)


def test_adjust_keeps_input_order_and_passes_nan_through():
    order = np.random.default_rng(1).permutation(15)
    shuffled = [BH_1995[i] for i in order]
    assert adjust(shuffled, "holm") == pytest.approx([adjust(BH_1995, "holm")[i] for i in order])
    with_nan = adjust([float("nan"), *BH_1995], "holm")
    assert math.isnan(with_nan[0])
    assert with_nan[1] == pytest.approx(15 * 0.0001)  # 15 tests counted, not 16
    assert adjust([], "holm") == []
    assert set(METHOD_NAMES) == {"holm", "fdr_bh"}
    with pytest.raises(ValueError, match="holm, fdr_bh"):
        adjust(BH_1995, "bonferroni")


# ---------------------------------------------------------------- permutation test


def test_darwins_zea_mays_randomisation_p():
    # Fisher, The Design of Experiments (1935), section 21: Darwin's 15 pairs of crossed and
    # self-fertilised Zea mays, height differences in eighths of an inch. Of the 2**15 = 32768 sign
    # patterns, 1726 give a total at least as far from 0 as the observed 314: p = 0.0527.
    diffs = np.array([49, -67, 8, 16, 6, 23, 28, 41, 14, 29, 56, 24, 75, 60, -48], dtype=float)
    exact = paired_permutation(np.zeros(15), diffs, n_resamples=2**15)
    assert exact["diff"] == pytest.approx(314 / 15)
    assert exact["p_value"] == pytest.approx(1726 / 32768, rel=1e-12)
    sampled = paired_permutation(np.zeros(15), diffs)  # 9999 < 32768 patterns: Monte Carlo
    assert sampled["p_value"] == pytest.approx(1726 / 32768, abs=0.01)


def test_permutation_by_hand_and_edge_cases(no_warnings):
    # 5 positive differences: only "all +" and "all -" are as extreme, p = 2/32
    assert paired_permutation(np.zeros(5), [1, 2, 3, 4, 5])["p_value"] == pytest.approx(2 / 32)
    assert paired_permutation([0.2, 0.5, 0.9], [0.2, 0.5, 0.9]) == {"diff": 0.0, "p_value": 1.0}
    assert paired_permutation([0.0], [1.0]) == {"diff": 1.0, "p_value": 1.0}
    assert all(math.isnan(v) for v in paired_permutation([], []).values())


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_of_a_large_paired_sample_matches_the_normal_theory_interval():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, 3000)
    b = a + 0.1 + rng.normal(0, 0.3, 3000)  # strongly paired: A's spread cancels in the difference
    d = b - a
    half = t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    ci = paired_bootstrap(a, b, n_boot=4000, seed=0)
    assert ci["diff"] == pytest.approx(d.mean())
    assert ci["low"] == pytest.approx(d.mean() - half, abs=0.1 * half)
    assert ci["high"] == pytest.approx(d.mean() + half, abs=0.1 * half)
    # resampling a and b apart would carry A's spread (sd 1, not 0.3): over three times wider
    assert ci["high"] - ci["low"] < 1.2 * (2 * half)


def test_bootstrap_degenerate_inputs(no_warnings):
    same = np.array([True, False, True, True])
    assert paired_bootstrap(same, same) == {"diff": 0.0, "low": 0.0, "high": 0.0}
    assert paired_bootstrap(np.zeros(20), np.ones(20)) == {"diff": 1.0, "low": 1.0, "high": 1.0}
    one = paired_bootstrap([0.0], [1.0])
    assert one["diff"] == 1.0 and math.isnan(one["low"]) and math.isnan(one["high"])
    assert all(math.isnan(v) for v in paired_bootstrap([], []).values())


def test_bootstrap_interval_covers_the_true_difference_about_95_percent_of_the_time():
    # documents: both right 0.6, only A 0.1, only B 0.2, neither 0.1 -> true accuracy difference 0.1
    rng = np.random.default_rng(7)
    covered = 0
    for seed in range(200):
        cells = rng.multinomial(100, [0.6, 0.1, 0.2, 0.1])
        a, b = paired_from_table(*cells)
        ci = paired_bootstrap(a, b, n_boot=500, seed=seed)
        covered += ci["low"] <= 0.1 <= ci["high"]
    assert 0.90 <= covered / 200 <= 0.99


# ---------------------------------------------------------------- micro-F1 bootstrap


def test_f1_difference_by_hand():
    # per document (right, truth, predicted)
    counts_a = np.array([[1, 2, 2], [0, 1, 1], [2, 2, 3]])  # right 3, truth 5, predicted 6
    counts_b = np.array([[2, 2, 2], [1, 1, 1], [1, 2, 2]])  # right 4, truth 5, predicted 5
    p_a, r_a = 3 / 6, 3 / 5
    f1_a = 2 * p_a * r_a / (p_a + r_a)  # 6/11
    f1_b = 2 * 0.8 * 0.8 / 1.6
    res = bootstrap_f1_diff(np.tile(counts_a, (10, 1)), np.tile(counts_b, (10, 1)), n_boot=1000)
    assert res["diff"] == pytest.approx(f1_b - f1_a)
    assert res["low"] < res["diff"] < res["high"]
    # documents are resampled in pairs: identical systems give exactly [0, 0]
    assert bootstrap_f1_diff(counts_a, counts_a) == {"diff": 0.0, "low": 0.0, "high": 0.0}


def test_f1_with_nothing_predicted_is_zero_not_nan(no_warnings):
    silent = np.array([[0, 2, 0], [0, 1, 0]])  # A predicts nothing: P undefined, F1 0
    answers = np.array([[2, 2, 2], [1, 1, 1]])
    assert bootstrap_f1_diff(silent, answers)["diff"] == 1.0
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        bootstrap_f1_diff(np.zeros((2, 2)), np.zeros((2, 2)))


# ---------------------------------------------------------------- power and planning


def connor_n(p_a_only: float, p_b_only: float, power: float = 0.8, alpha: float = 0.05) -> float:
    """Connor (1987), Biometrics 43:207-211, normal-approximation documents for McNemar's test."""
    psi, delta = p_a_only + p_b_only, p_b_only - p_a_only
    z_a, z_b = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return (z_a * math.sqrt(psi) + z_b * math.sqrt(psi - delta**2)) ** 2 / delta**2


def test_power_under_no_difference_is_the_size_at_most_alpha():
    for n in (10, 50, 200, 1000):
        size = mcnemar_power(n, 0.1, 0.1, alpha=0.05)
        assert 0 < size <= 0.05
    assert mcnemar_power(0, 0.1, 0.3) == 0.0


def test_power_equals_enumeration_of_every_outcome():
    # independent check of the rejection region: sum the multinomial probability of every
    # (a_only, b_only) that scipy's binomial test rejects at 0.05
    n, p_a, p_b = 30, 0.1, 0.3
    total = 0.0
    for i in range(n + 1):
        for j in range(n + 1 - i):
            if i + j and binomtest(j, i + j, 0.5).pvalue <= 0.05:
                total += multinomial.pmf([i, j, n - i - j], n, [p_a, p_b, 1 - p_a - p_b])
    assert mcnemar_power(n, p_a, p_b) == pytest.approx(total, abs=1e-9)


def test_documents_needed_agrees_with_connors_worked_examples():
    # Connor's formula as worked on open-powersamplesize (p01 = 0.45, p10 = 0.05: 23 pairs) and
    # clinicaltrials-tools (discordant 0.45, difference 0.15: 155 pairs)
    assert math.ceil(connor_n(0.05, 0.45)) == 23
    assert math.ceil(connor_n(0.15, 0.30)) == 155
    # the exact test needs somewhat more than the normal approximation, within 15% at these sizes
    for rates in ((0.15, 0.30), (0.05, 0.10)):
        n = documents_needed(*rates)
        assert connor_n(*rates) <= n <= 1.15 * connor_n(*rates)


def test_documents_needed_is_where_power_reaches_the_target_and_stays():
    n = documents_needed(0.15, 0.30, power=0.8)
    assert mcnemar_power(n - 1, 0.15, 0.30) < 0.8
    assert all(mcnemar_power(m, 0.15, 0.30) >= 0.8 for m in range(n, n + 40))
    # every document discordant: the power is a sawtooth that crosses 0.8 at 90 and falls back below
    # at 96; the answer is where it stays above
    n = documents_needed(0.35, 0.65)
    assert mcnemar_power(n - 1, 0.35, 0.65) < 0.8 <= mcnemar_power(n, 0.35, 0.65)
    assert any(mcnemar_power(m, 0.35, 0.65) >= 0.8 for m in range(n - 20, n - 1))
    assert all(mcnemar_power(m, 0.35, 0.65) >= 0.8 for m in range(n, n + 60))


def test_planning_refuses_what_it_cannot_plan():
    with pytest.raises(ValueError, match="no difference"):
        documents_needed(0.1, 0.1)
    with pytest.raises(ValueError, match="max_n=100"):
        documents_needed(0.1, 0.12, max_n=100)
    for rates in ((-0.1, 0.2), (0.1, 1.2), (0.6, 0.5)):
        with pytest.raises(ValueError, match="discordance rates"):
            documents_needed(*rates)
    with pytest.raises(ValueError, match="alpha"):
        mcnemar_power(10, 0.1, 0.2, alpha=0)


def test_pilot_rates_feed_the_plan():
    a, b = paired_from_table(60, 5, 15, 20)
    p_a, p_b, n = pilot_rates(a, b)
    assert (p_a, p_b, n) == (0.05, 0.15, 100)
    assert documents_needed(p_a, p_b) > n
    with pytest.raises(ValueError, match="no paired documents"):
        pilot_rates([], [])
