"""Metrics: per-value outcomes of a run and the numbers computed from them, each rule declared per value.

``outcomes`` turns result rows (one per document x variant x prompt) into one row per predicted-or-true
value: (variant, prompt, doc_id, field). Every view of a run (tables, tests, error breakdowns) counts
these rows, so every number means the same thing everywhere. Definitions a README can copy:

- A *value with truth* is a field of a document whose ground truth is not empty.
- A *predicted value* is a field for which the model (or the rules fallback) gave a non-empty answer,
  whether or not the document has a truth for it (an answer where there is no truth is *spurious*).
- A value is *right* under a rule when it has truth, its row did not fail, and the rule accepts the answer:
  - ``correct`` (the lenient profile): the field's configured ``match`` (exact, normalized, fuzzy), as
    recorded in the run's ``match_<f>`` column.
  - ``exact``: the answer equals the truth as the dataset writes it (``truth_<f>``; ``gt_<f>`` for runs
    that lack it), surrounding whitespace trimmed, case and inner spaces kept.
  - ``strict`` (the sroie-strict profile): the SROIE Task 3 rule (ICDAR 2019 SROIE, Tasks page
    https://rrc.cvc.uab.es/?ch=13&com=tasks; Huang et al. 2019, arXiv:2103.10213, section III.C). Its
    protocol marks an extracted value correct only when both its content and its category (the field)
    match the ground truth, computes precision over all extracted values of all test receipts, recall
    over the ground-truth values, and ranks by their F1. It names no case or whitespace folding, so the
    answer must equal the verbatim truth as a whole string; only surrounding whitespace is trimmed (a
    JSON answer or an annotation line may carry it). Per value this is the same test as ``exact``; the
    profile differs in what it reports (precision, recall and F1 over values, as published SROIE results).
  - ``own_correct``: ``correct`` and not filled in by the rules fallback.
- ``similarity`` is ANLS (Biten et al. 2019, "Scene Text Visual Question Answering", ICCV): 1 minus the
  normalised Levenshtein distance between the lower-cased, trimmed answer and verbatim truth, or 0 where
  that distance is 0.5 or more; 0 for a missing answer or a failed row, NaN where there is no truth.
- *accuracy* (per field, and micro over all fields) = right values / values with truth. *recall* is the
  same number. *precision* = right values / predicted values. *F1* = 2 x right / (values with truth +
  predicted values), the harmonic mean of precision and recall. *field_mean* = the plain mean of the
  per-field accuracies (each field weighs the same, however many documents have a truth for it).
  *doc_accuracy* = the share of documents, among those with at least one truth, whose every value with
  truth is right. A ratio whose denominator is zero is NaN.

Each value also gets a ``status`` saying what went wrong, first match wins: error (the row failed),
right, spurious (an answer, no truth), absent (neither), then for wrong answers with truth: not_in_text
(the truth does not occur in the text the model was given, so OCR or truncation lost it), missing (no
answer), invalid (an answer not readable as its type), wrong (the rest).

Everything here is pure (pandas in, pandas out): no files, no Ray, no model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from rapidfuzz.distance import Levenshtein

from invoicelab.config import FieldSpec
from invoicelab.normalize import as_str
from invoicelab.scoring import is_valid

__all__ = ["ANLS_TAU", "COLUMNS", "PROFILES", "RULES", "STATUSES", "error_breakdown", "outcomes", "per_doc", "scores"]

PROFILES = {"lenient": "correct", "sroie-strict": "strict"}
"""Scoring profiles a report can show -> the outcome column that decides right values."""
RULES = ("correct", "exact", "strict", "own_correct")
"""The outcome columns ``scores`` and ``per_doc`` can count as right."""
STATUSES = ("right", "wrong", "missing", "invalid", "not_in_text", "error", "spurious", "absent")
ANLS_TAU = 0.5
"""ANLS threshold: a normalised distance at or above it scores 0 (Biten et al. 2019)."""
KEYS = ["variant", "prompt", "doc_id"]
COLUMNS = (*KEYS, "field", "has_truth", "predicted", "from_fallback", "row_error", "correct", "exact", "strict",
           "similarity", "own_correct", "status")
"""The columns of ``outcomes``."""


def outcomes(df: pd.DataFrame, specs: dict[str, FieldSpec]) -> pd.DataFrame:
    """One row per (variant, prompt, doc_id, field) of the result rows, with what happened to that value.

    Args:
        df: Result rows (``invoicelab.results``): variant, prompt, doc_id, ``pred_<f>``, ``gt_<f>``,
            ``match_<f>``, and where the run has them ``truth_<f>``, ``in_text_<f>``, ``error`` and
            ``fallback_fields``.
        specs: The experiment's fields and their rules.

    Returns:
        Columns variant, prompt, doc_id, field, has_truth, predicted, from_fallback, row_error, correct,
        exact, strict, similarity, own_correct, status (see the module docstring), ordered by result row
        and then by field in ``specs`` order.
    """
    rows = df.reset_index(drop=True)
    row_error = _text(_column(rows, "error")).notna()
    fallback = _fallback_fields(rows)
    parts = [_field_outcomes(rows, pos, name, spec, row_error, fallback)
             for pos, (name, spec) in enumerate(specs.items())]
    if not parts:
        return pd.DataFrame(columns=list(COLUMNS))
    out = pd.concat(parts, ignore_index=True)
    order = np.lexsort((out.pop("_field").to_numpy(), out.pop("_row").to_numpy()))
    return out.iloc[order].reset_index(drop=True)


def _field_outcomes(rows: pd.DataFrame, pos: int, name: str, spec: FieldSpec, row_error: pd.Series,
                    fallback: pd.Series) -> pd.DataFrame:
    """The outcomes of one field, for every result row."""
    pred, gt = _text(_column(rows, f"pred_{name}")), _text(_column(rows, f"gt_{name}"))
    truth = _text(_column(rows, f"truth_{name}")).fillna(gt)  # runs from before truth_<f> compare with gt_<f>
    has_truth, predicted = truth.notna(), pred.notna()
    scored = has_truth & ~row_error
    exact = scored & predicted & (pred == truth).fillna(False)
    correct = scored & _flag(_column(rows, f"match_{name}"), True)
    from_fallback = pd.Series(rows.index.isin(fallback.index[fallback.to_numpy() == name]), index=rows.index)
    similarity = _anls(pred, truth).where(scored, 0.0).where(has_truth, np.nan)
    out = pd.DataFrame({
        "_row": rows.index, "_field": pos, **{k: rows[k] for k in KEYS}, "field": name,
        "has_truth": has_truth, "predicted": predicted, "from_fallback": from_fallback, "row_error": row_error,
        "correct": correct, "exact": exact,
        "strict": exact,  # SROIE Task 3 states no folding, so per value it is the exact test (module docstring)
        "similarity": similarity, "own_correct": correct & ~from_fallback,
    })
    out["status"] = _status(out, pred, spec, _flag(_column(rows, f"in_text_{name}"), False))
    return out


def _status(out: pd.DataFrame, pred: pd.Series, spec: FieldSpec, not_in_text: pd.Series) -> np.ndarray:
    """Each value's status; the first condition that holds wins (module docstring)."""
    has, predicted = out["has_truth"], out["predicted"]
    failed = has & ~out["correct"] & ~out["row_error"]
    invalid = failed & predicted & ~_valid(pred.where(failed & predicted), spec)
    conditions = [out["row_error"], out["correct"], ~has & predicted, ~has, not_in_text, ~predicted, invalid]
    choices = ["error", "right", "spurious", "absent", "not_in_text", "missing", "invalid"]
    return np.select([c.to_numpy(dtype=bool) for c in conditions], choices, default="wrong")


def _valid(pred: pd.Series, spec: FieldSpec) -> pd.Series:
    """``scoring.is_valid`` of each value, computed once per distinct value; False where there is none."""
    verdicts = {value: is_valid(value, spec) for value in pred.dropna().unique()}
    return pred.map(verdicts).eq(True)


def _anls(pred: pd.Series, truth: pd.Series) -> pd.Series:
    """ANLS of each (answer, truth) pair, computed once per distinct pair; 0 where either is missing."""
    pairs = pd.DataFrame({"a": pred.str.lower(), "b": truth.str.lower()})
    both = pairs.dropna()
    distinct = both.drop_duplicates()
    distances = [Levenshtein.normalized_distance(a, b) for a, b in zip(distinct["a"], distinct["b"])]
    distinct = distinct.assign(s=[1.0 - d if d < ANLS_TAU else 0.0 for d in distances])
    result = pd.Series(0.0, index=pred.index)
    result[both.index] = both.merge(distinct, on=["a", "b"], how="left")["s"].to_numpy()
    return result


# ---------------------------------------------------------------- reading result columns


def _column(rows: pd.DataFrame, name: str) -> pd.Series:
    """A column of the result rows; all null where the run has no such column."""
    return rows[name] if name in rows else pd.Series(None, index=rows.index, dtype=object)


def _text(series: pd.Series) -> pd.Series:
    """Strings trimmed of surrounding whitespace; None for null and blank values."""
    texts = (v if isinstance(v, str) else None if v is pd.NA else as_str(v) for v in series.to_numpy(dtype=object))
    return pd.Series([t.strip() or None if t is not None else None for t in texts], index=series.index, dtype=object)


def _flag(series: pd.Series, value: bool) -> pd.Series:
    """Where a nullable boolean column equals ``value`` (null never does)."""
    return series.astype("boolean").eq(value).fillna(False).astype(bool)


def _fallback_fields(rows: pd.DataFrame) -> pd.Series:
    """The fields each row took from the rules fallback: one entry per (row, field), indexed by row."""
    if "fallback_fields" not in rows:
        return pd.Series([], dtype=object)
    return rows["fallback_fields"].explode().dropna()


# ---------------------------------------------------------------- counting outcomes


def _right(out: pd.DataFrame, rule: str) -> pd.DataFrame:
    """The outcomes with a ``right`` column: has truth, row did not fail, and ``rule`` accepts the answer."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; available: {', '.join(RULES)}")
    right = out[rule].astype(bool) & out["has_truth"].astype(bool) & ~out["row_error"].astype(bool)
    return out.assign(right=right, truth=out["has_truth"].astype(bool), predicted=out["predicted"].astype(bool))


def per_doc(out: pd.DataFrame, rule: str = "correct") -> pd.DataFrame:
    """Counts per document, for resampling documents (bootstrap of micro precision, recall and F1).

    Args:
        out: ``outcomes``.
        rule: Which outcome column counts as right: one of ``RULES``.

    Returns:
        Indexed by (variant, prompt, doc_id): right, truth (values with truth) and predicted (values
        predicted), as integers; summed over documents they are ``scores``' totals.
    """
    counted = _right(out, rule)
    return counted.groupby(KEYS, sort=False)[["right", "truth", "predicted"]].sum().astype(int)


def scores(out: pd.DataFrame, rule: str = "correct") -> pd.DataFrame:
    """Accuracy per field and overall, precision, recall, F1 and document accuracy per (variant, prompt).

    Args:
        out: ``outcomes``.
        rule: Which outcome column counts as right: "correct" (the configured rules), "exact", "strict"
            (SROIE Task 3) or "own_correct" (correct without the rules fallback).

    Returns:
        Indexed by (variant, prompt): one accuracy column per field, then field_mean, accuracy, precision,
        recall, f1, doc_accuracy, values (values with truth) and predicted (predicted values). Ratios
        with a zero denominator are NaN. Definitions: module docstring.
    """
    counted = _right(out, rule)
    groups = ["variant", "prompt"]
    fields = list(pd.unique(counted["field"]))
    by_field = counted.groupby([*groups, "field"], sort=False)[["right", "truth"]].sum()
    accuracy = (by_field["right"] / by_field["truth"].replace(0, np.nan)).unstack("field")
    docs = per_doc(out, rule)
    docs = docs[docs["truth"] > 0]
    doc_accuracy = (docs["right"] == docs["truth"]).groupby(level=groups, sort=False).mean()
    total = counted.groupby(groups, sort=False)[["right", "truth", "predicted"]].sum()
    table = accuracy.reindex(index=total.index, columns=fields)
    table["field_mean"] = table[fields].mean(axis=1)
    right, values, predicted = total["right"], total["truth"], total["predicted"]
    table["accuracy"] = right / values.replace(0, np.nan)
    table["precision"] = right / predicted.replace(0, np.nan)
    table["recall"] = table["accuracy"]
    table["f1"] = 2 * right / (values + predicted).replace(0, np.nan)
    table["doc_accuracy"] = doc_accuracy.reindex(table.index)
    table["values"], table["predicted"] = values.astype(int), predicted.astype(int)
    table.columns.name = None
    return table


def error_breakdown(out: pd.DataFrame) -> pd.DataFrame:
    """How many values of each field ended in each status, per (variant, prompt, field).

    Args:
        out: ``outcomes``.

    Returns:
        Indexed by (variant, prompt, field): one count column per status (``STATUSES``), and fallback
        (values the rules fallback filled in).
    """
    keys = ["variant", "prompt", "field"]
    grouped = out.groupby(keys, sort=False)
    counts = grouped["status"].value_counts().unstack(fill_value=0)
    table = counts.reindex(index=grouped.size().index, columns=list(STATUSES), fill_value=0)
    table["fallback"] = grouped["from_fallback"].sum()
    table.columns.name = None
    return table.fillna(0).astype(int)
