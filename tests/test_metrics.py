"""Metrics: each rule on its own, every status, and the counts behind precision, recall, F1 and accuracies."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from invoicelab.config import FieldSpec
from invoicelab.metrics import COLUMNS, PROFILES, STATUSES, error_breakdown, outcomes, per_doc, scores
from invoicelab.results import to_table
from invoicelab.scoring import gt_value, score_field, truth_value

AMOUNT = FieldSpec(type="amount")
AMOUNT_EXACT = FieldSpec(type="amount", match="exact")
TEXT = FieldSpec(type="text")
DATE = FieldSpec(type="date", day_first=True)


def row(doc_id: str, variant: str = "v", prompt: str = "p", error: str | None = None,
        fallback: list[str] | None = None, **fields: tuple) -> dict:
    """A result row; each field is (pred, gt, truth, match, in_text)."""
    out = {"variant": variant, "prompt": prompt, "doc_id": doc_id, "error": error, "fallback_fields": fallback or []}
    for name, (pred, gt, truth, match, seen) in fields.items():
        out.update({f"pred_{name}": pred, f"gt_{name}": gt, f"truth_{name}": truth, f"match_{name}": match,
                    f"in_text_{name}": seen})
    return out


def one(rows: list[dict], specs: dict[str, FieldSpec]) -> pd.DataFrame:
    return outcomes(pd.DataFrame(rows), specs)


# ---------------------------------------------------------------- exact is exact (scoring)


def test_exact_match_compares_with_the_verbatim_truth_not_the_normalised_one():
    record, normalized = {"total": "$1,234.50"}, {"total": "1234.50"}
    gt, truth = gt_value(record, normalized, "total", AMOUNT), truth_value(record, "total", AMOUNT)
    assert (gt, truth) == ("1234.50", "$1,234.50")
    assert score_field("$1,234.50", gt, AMOUNT_EXACT, truth) == 1.0
    assert score_field("1234.50", gt, AMOUNT_EXACT, truth) == 0.0  # was 1.0: exact compared with the normalised gt
    assert score_field(" $1,234.50 ", gt, AMOUNT_EXACT, truth) == 1.0  # surrounding whitespace trimmed
    assert score_field("1234.50", gt, AMOUNT, truth) == score_field("$1,234.50", gt, AMOUNT, truth) == 1.0
    assert score_field(None, gt, AMOUNT_EXACT, truth) == 0.0 and score_field("x", None, AMOUNT_EXACT, None) is None


def test_truth_value_is_verbatim_and_none_when_blank():
    spec = FieldSpec(type="text", gt_key="company")
    assert truth_value({"company": " AEON CO. (M) BHD "}, "vendor", spec) == " AEON CO. (M) BHD "
    assert truth_value({"total": 4.95}, "total", AMOUNT) == "4.95"
    assert truth_value({"total": "  "}, "total", AMOUNT) is None and truth_value(None, "total", AMOUNT) is None


# ---------------------------------------------------------------- each rule on its own


def test_exact_keeps_case_while_the_configured_rule_normalises():
    out = one([row("a", company=("aeon co. (m) bhd", "aeon co. (m) bhd", "AEON CO. (M) BHD", True, True)),
               row("b", company=("  AEON CO. (M) BHD ", "aeon co. (m) bhd", "AEON CO. (M) BHD", True, True))],
              {"company": TEXT})
    assert out["correct"].tolist() == [True, True]
    assert out["exact"].tolist() == [False, True]


def test_exact_falls_back_to_gt_for_runs_without_truth_columns():
    rows = pd.DataFrame([row("a", total=("1234.50", "1234.50", None, True, None))]).drop(
        columns=["truth_total", "in_text_total"])
    assert outcomes(rows, {"total": AMOUNT})["exact"].tolist() == [True]


def test_sroie_strict_needs_the_whole_string_with_its_case_and_inner_spaces():
    # SROIE Task 3: a value is right only when its content matches the ground truth (rrc.cvc.uab.es ch=13 tasks)
    truth = "S117, SECOND FLOOR, AEON TEBRAU CITY"
    preds = [truth, f" {truth}\n", truth.lower(), truth.replace(", ", ","), "S117, SECOND FLOOR"]
    out = one([row(str(i), address=(p, truth, truth, True, True)) for i, p in enumerate(preds)], {"address": TEXT})
    assert out["strict"].tolist() == [True, True, False, False, False]
    assert PROFILES == {"lenient": "correct", "sroie-strict": "strict"}


def test_similarity_is_anls_with_the_half_cut_off():
    # ANLS (Biten et al. 2019, ST-VQA): 1 - lev/max(len) if below 0.5, else 0. Levenshtein distances from the
    # textbook examples: kitten/sitting = 3 (3/7 -> 4/7), flaw/lawn = 2 (2/4 = 0.5 -> cut to 0).
    cases = [("sitting", "kitten"), ("lawn", "flaw"), ("TOTAL", "total "), ("abcx", "abcd"), (None, "abcd"),
             ("spurious", None)]
    out = one([row(str(i), f=(p, t, t, None, None)) for i, (p, t) in enumerate(cases)], {"f": TEXT})
    expected = [4 / 7, 0.0, 1.0, 0.75, 0.0, np.nan]
    assert out["similarity"].tolist() == pytest.approx(expected, nan_ok=True)


def test_correct_follows_the_run_match_column_and_row_errors_are_never_right():
    out = one([row("a", f=("x", "x", "x", True, None)), row("b", f=("x", "y", "y", None, None)),
               row("c", error="backend error", f=("x", "x", "x", True, None))], {"f": TEXT})
    assert out["correct"].tolist() == [True, False, False]
    assert out["exact"].tolist() == [True, False, False] and out["similarity"].tolist() == [1.0, 0.0, 0.0]


def test_own_correct_leaves_out_values_from_the_rules_fallback():
    out = one([row("a", fallback=["total"], total=("5.00", "5.00", "5.00", True, True), date=(
        "2024-03-12", "2024-03-12", "12/03/2024", True, True))], {"total": AMOUNT, "date": DATE})
    assert out["from_fallback"].tolist() == [True, False]
    assert out["correct"].tolist() == [True, True] and out["own_correct"].tolist() == [False, True]


# ---------------------------------------------------------------- statuses


def test_every_status():
    cases = {
        "right": row("a", f=("5.00", "5.00", "5.00", True, True)),
        "wrong": row("b", f=("6.00", "5.00", "5.00", False, True)),
        "missing": row("c", f=(None, "5.00", "5.00", False, True)),
        "invalid": row("d", f=("n/a", "5.00", "5.00", False, True)),
        "not_in_text": row("e", f=("6.00", "5.00", "5.00", False, False)),
        "error": row("f", error="unparseable model output", f=(None, "5.00", "5.00", None, None)),
        "spurious": row("g", f=("6.00", None, None, None, None)),
        "absent": row("h", f=(None, None, None, None, None)),
    }
    out = one(list(cases.values()), {"f": AMOUNT})
    assert out["status"].tolist() == list(cases) and set(cases) == set(STATUSES)


def test_not_in_text_covers_missing_and_invalid_but_unknown_text_keeps_the_status():
    out = one([row("a", f=(None, "5.00", "5.00", False, False)), row("b", f=("n/a", "5.00", "5.00", False, False)),
               row("c", f=("6.00", "5.00", "5.00", False, None)), row("d", f=("5.00", "5.00", "5.00", True, False))],
              {"f": AMOUNT})
    assert out["status"].tolist() == ["not_in_text", "not_in_text", "wrong", "right"]


def test_error_breakdown_counts_each_status_and_fallback_per_field():
    rows = [row("a", fallback=["f"], f=("5.00", "5.00", "5.00", True, True), g=(None, "x", "x", False, False)),
            row("b", f=("6.00", "5.00", "5.00", False, True), g=("y", None, None, None, True))]
    table = error_breakdown(one(rows, {"f": AMOUNT, "g": TEXT}))
    assert list(table.index) == [("v", "p", "f"), ("v", "p", "g")]
    assert list(table.columns) == [*STATUSES, "fallback"]
    assert table.loc[("v", "p", "f")].to_dict() == {**dict.fromkeys(STATUSES, 0), "right": 1, "wrong": 1,
                                                    "fallback": 1}
    assert table.loc[("v", "p", "g")].to_dict() == {**dict.fromkeys(STATUSES, 0), "not_in_text": 1, "spurious": 1,
                                                    "fallback": 0}


# ---------------------------------------------------------------- scores


def _sroie_like() -> pd.DataFrame:
    """4 documents x 3 fields: 10 values with truth, 8 predicted (one spurious), 6 right."""
    r = lambda p, t, ok: (p, t, t, ok, None)
    rows = [
        row("d1", a=r("1", "1", True), b=r("2", "2", True), c=r("3", "3", True)),  # all right
        row("d2", a=r("1", "1", True), b=r("x", "2", False), c=r(None, "3", False)),  # one wrong, one missing
        row("d3", a=r("1", "1", True), b=r("2", "2", True), c=r("3", None, None)),  # c spurious
        row("d4", a=r(None, "1", False), b=r(None, "2", False), c=r(None, None, None)),  # two missing
    ]
    return one(rows, {"a": TEXT, "b": TEXT, "c": TEXT})


def test_precision_counts_every_prediction_recall_every_truth():
    # SROIE Task 3: precision over all extracted texts, recall over ground-truth values, F1 their harmonic mean.
    s = scores(_sroie_like()).loc[("v", "p")]
    assert (s["values"], s["predicted"]) == (10, 8)
    assert s["precision"] == pytest.approx(6 / 8) and s["recall"] == s["accuracy"] == pytest.approx(6 / 10)
    assert s["f1"] == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6)) == pytest.approx(2 / 3)


def test_doc_accuracy_needs_every_truth_right_and_skips_documents_without_truth():
    s = scores(_sroie_like()).loc[("v", "p")]
    assert s["doc_accuracy"] == pytest.approx(2 / 4)  # d1, and d3 (its spurious value has no truth)
    only_spurious = one([row("e", a=("1", None, None, None, None)), row("f", a=("1", "1", "1", True, None))],
                        {"a": TEXT})
    assert scores(only_spurious)["doc_accuracy"].tolist() == [1.0]


def test_field_mean_weighs_fields_equally_and_accuracy_weighs_values():
    rows = [row("d1", rare=("r", "r", "r", True, None), common=("x", "c", "c", False, None))] + [
        row(f"d{i}", rare=(None, None, None, None, None), common=("x", "c", "c", False, None)) for i in (2, 3)]
    s = scores(one(rows, {"rare": TEXT, "common": TEXT})).loc[("v", "p")]
    assert (s["rare"], s["common"]) == (1.0, 0.0)
    assert s["field_mean"] == pytest.approx(0.5) and s["accuracy"] == pytest.approx(1 / 4)


def test_scores_per_variant_and_prompt_under_each_rule():
    rows = [row("a", variant="m1", total=("1234.50", "1234.50", "$1,234.50", True, None)),
            row("a", variant="m2", total=("$1,234.50", "1234.50", "$1,234.50", True, None))]
    out = one(rows, {"total": AMOUNT})
    assert scores(out)["total"].tolist() == [1.0, 1.0]
    assert scores(out, "exact")["total"].tolist() == [0.0, 1.0]
    assert list(scores(out, "strict").index) == [("m1", "p"), ("m2", "p")]
    with pytest.raises(ValueError, match="unknown rule 'fuzzy'"):
        scores(out, "fuzzy")


def test_per_doc_counts_sum_to_the_scores_totals():
    out = _sroie_like()
    docs = per_doc(out)
    s = scores(out).loc[("v", "p")]
    assert list(docs.columns) == ["right", "truth", "predicted"] and len(docs) == 4
    assert docs["right"].sum() == round(s["accuracy"] * s["values"]) == 6
    assert (docs["truth"].sum(), docs["predicted"].sum()) == (s["values"], s["predicted"])
    assert docs.loc[("v", "p", "d2")].tolist() == [1, 3, 2]


def test_outcomes_shape_and_order():
    rows = [row("a", f=("1", "1", "1", True, None), g=("2", "2", "2", True, None)),
            row("b", f=("1", "1", "1", True, None), g=("2", "2", "2", True, None))]
    out = one(rows, {"g": TEXT, "f": TEXT})
    assert tuple(out.columns) == COLUMNS
    assert list(zip(out["doc_id"], out["field"])) == [("a", "g"), ("a", "f"), ("b", "g"), ("b", "f")]


def test_a_hundred_thousand_rows_take_seconds():
    n = 100_000
    truth = np.array([f"INV-{i % 5000}" for i in range(n)], dtype=object)
    pred = np.where(np.arange(n) % 3 == 0, "INV-x", truth)
    df = pd.DataFrame({"variant": np.where(np.arange(n) % 2 == 0, "a", "b"), "prompt": "p",
                       "doc_id": [f"d{i}" for i in range(n)], "error": None, "fallback_fields": [[]] * n,
                       **{f"{c}_{f}": v for f in ("x", "y") for c, v in
                          (("pred", pred), ("gt", truth), ("truth", truth), ("match", pred == truth),
                           ("in_text", np.arange(n) % 5 != 0))}})
    start = time.perf_counter()
    out = outcomes(df, {"x": FieldSpec(type="id"), "y": TEXT})
    s = scores(out)
    assert time.perf_counter() - start < 20  # about 1 s alone; generous for a shared machine
    assert s["accuracy"].tolist() == pytest.approx([2 / 3, 2 / 3], abs=1e-4)


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow", None])
def test_outcomes_of_a_result_table_read_back_from_parquet(tmp_path, backend):
    rows = [row("a", fallback=["total"], total=(" 5.00", "5.00", "RM5.00", True, False)),
            row("b", error="boom", total=(None, None, None, None, None))]
    path = tmp_path / "part.parquet"
    pq.write_table(to_table(rows, ["total"]), path)
    df = pd.read_parquet(path, dtype_backend=backend) if backend else pd.read_parquet(path)
    out = outcomes(df, {"total": AMOUNT})
    assert out["status"].tolist() == ["right", "error"] and out["from_fallback"].tolist() == [True, False]
    assert out["exact"].tolist() == [False, False] and out["similarity"].tolist()[0] == pytest.approx(1 - 2 / 6)
