"""The comparison views: paired tests on model values only, correction, Pareto front, ranking, cost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from invoicelab.views import (
    correct,
    cost_per_1000,
    frontier,
    model_pairs,
    paired_tests,
    pareto,
    prompt_pairs,
    ranking,
    reference_pairs,
)


def outcome_frame(arms: dict[tuple[str, str], dict[str, list[bool]]], fallback: dict | None = None) -> pd.DataFrame:
    """Outcomes (the shape of ``metrics.outcomes``) from per-arm, per-field lists of right/wrong per document."""
    rows = []
    for (variant, prompt), fields in arms.items():
        for field, rights in fields.items():
            for i, right in enumerate(rights):
                fb = (fallback or {}).get((variant, prompt, field), set())
                rows.append({"variant": variant, "prompt": prompt, "doc_id": f"d{i:03d}", "field": field,
                             "has_truth": True, "predicted": True, "from_fallback": i in fb, "row_error": False,
                             "correct": bool(right), "exact": bool(right), "strict": bool(right),
                             "similarity": 1.0 if right else 0.2, "own_correct": bool(right) and i not in fb,
                             "status": "right" if right else "wrong"})
    return pd.DataFrame(rows)


def arms_table(out: pd.DataFrame) -> pd.DataFrame:
    return out[["variant", "prompt"]].drop_duplicates().assign(x=0).set_index(["variant", "prompt"])


def test_a_planted_difference_is_found_on_its_field_only():
    rng = np.random.default_rng(0)
    n = 80
    base_total = rng.random(n) < 0.5
    base_date = rng.random(n) < 0.6
    better_total = base_total | (rng.random(n) < 0.6)  # B fixes most of A's wrong totals
    out = outcome_frame({("m", "a"): {"total": base_total, "date": base_date},
                         ("m", "b"): {"total": better_total, "date": base_date}})
    tests = correct(paired_tests(out, [(("m", "a"), ("m", "b"))], "prompt", ["total", "date"], n_boot=500),
                    "holm", 0.05)
    by = {t["field"]: t for t in tests}
    assert by["total"]["significant"] and by["total"]["diff"] > 0.2
    assert by["total"]["low"] > 0 and by["total"]["a_only"] == 0
    assert not by["date"]["significant"] and by["date"]["diff"] == 0 and by["date"]["p_value"] == 1.0
    assert by["all"]["significant"] and by["all"]["f1_diff"] > 0
    # Holm: the adjusted p-value is never below the raw one
    assert all(t["p_adjusted"] >= t["p_value"] for t in tests)


def test_fallback_values_are_left_out_and_counted():
    rights = [True] * 10 + [False] * 10
    out = outcome_frame({("m", "a"): {"total": rights}, ("m", "b"): {"total": [True] * 20}},
                        fallback={("m", "b", "total"): set(range(10, 20))})  # B's "fixes" all came from the fallback
    t = paired_tests(out, [(("m", "a"), ("m", "b"))], "prompt", ["total"], n_boot=200)[0]
    assert t["excluded_fallback"] == 10 and t["n"] == 10
    assert t["b_only"] == 0 and t["diff"] == 0  # on the model's own values, nothing changed


def test_pairs_per_kind():
    out = outcome_frame({("fp32", "p1"): {"f": [True]}, ("fp32", "p2"): {"f": [True]},
                         ("int8", "p1"): {"f": [True]}, ("rules", "none"): {"f": [True]}})
    table = arms_table(out)
    assert prompt_pairs(table) == [(("fp32", "p1"), ("fp32", "p2"))]
    assert reference_pairs(table, "fp32") == [(("fp32", "p1"), ("int8", "p1")), (("fp32", "p1"), ("rules", "none"))]
    assert (("fp32", "p1"), ("int8", "p1")) in model_pairs(table)
    assert (("fp32", "p1"), ("rules", "none")) in model_pairs(table)


def test_pareto_front():
    points = [{"acc": 0.9, "speed": 1.0, "mem": 4}, {"acc": 0.8, "speed": 2.0, "mem": 2},
              {"acc": 0.7, "speed": 1.5, "mem": 3}, {"acc": 0.9, "speed": 1.0, "mem": 5}]
    # the third is beaten by the second everywhere; the fourth by the first (same acc and speed, more memory)
    assert pareto(points, ("acc", "speed"), ("mem",)) == [True, True, False, False]
    unpriced = [{**p, "cost": None} for p in points]
    assert pareto(unpriced, ("acc", "speed"), ("mem", "cost")) == [True, True, False, False]


def test_frontier_marks_the_rows():
    rows = [{"variant": "fp32", "prompt": "p", "accuracy": 0.5, "docs_per_s": 0.3, "peak_rss_bytes": 2e9},
            {"variant": "int8", "prompt": "p", "accuracy": 0.5, "docs_per_s": 0.5, "peak_rss_bytes": 1e9},
            {"variant": "gpu", "prompt": "p", "accuracy": 0.6, "docs_per_s": 9.0, "peak_rss_bytes": 3e9,
             "gpu_peak_bytes": 8e9}]
    front = {f["variant"]: f for f in frontier(rows)}
    assert not front["fp32"]["pareto"] and front["int8"]["pareto"] and front["gpu"]["pareto"]
    assert front["gpu"]["peak_memory_bytes"] == 8e9  # a GPU variant's memory is its GPU peak


def test_cost_per_1000_documents():
    # 2 CPUs at 0.05 an hour, 1.8 s of model time per document: 2 * 0.05 / 3600 * 1.8 * 1000 = 0.05
    assert cost_per_1000(1.8, None, 2, 0, 0.05, 0.0) == pytest.approx(0.05)
    assert cost_per_1000(0.5, None, 1, 1, 0.0, 3.6) == pytest.approx(0.5)  # 3.6/h GPU: 0.001/s
    assert cost_per_1000(0.5, 0.0002, 0, 0, 0, 0) == pytest.approx(0.2)  # billed tokens only
    assert cost_per_1000(0.5, None, 2, 0, 0.0, 0.0) is None  # not priced


def test_ranking_orders_by_accuracy_with_intervals():
    out = outcome_frame({("small", "p"): {"f": [True] * 5 + [False] * 15},
                         ("large", "p"): {"f": [True] * 15 + [False] * 5}})
    ranked = ranking(out, arms_table(out), n_boot=300, seed=0)
    assert [r["variant"] for r in ranked] == ["large", "small"] and ranked[0]["rank"] == 1
    assert ranked[0]["accuracy"] == pytest.approx(0.75)
    assert ranked[0]["low"] < 0.75 < ranked[0]["high"]
