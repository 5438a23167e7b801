"""The comparison view of each experiment kind, from per-value outcomes: paired tests, frontiers, rankings.

Input is ``metrics.outcomes`` (one row per variant, prompt, document and field) and the per-(variant,
prompt) table of ``analysis``; output is lists of plain dicts that ``summary.json``, the terminal and
the HTML report show. Every test is paired on the documents both sides have, and uses the model's
own values only: a value that came from the rules fallback on either side takes that (document,
field) out of the test, and the number taken out is reported beside it. p-values are corrected
across every test of the view (fields and comparisons together) with the configured method.
Pure functions; no Ray, no files.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from invoicelab.stats import (
    METHOD_NAMES,
    adjust,
    bootstrap_f1_diff,
    mcnemar_exact,
    paired_bootstrap,
    paired_permutation,
)

Side = tuple[str, str]
"""(variant, prompt): one arm of a comparison."""

ALL = "all"
"""The ``field`` of a test over every field together (micro accuracy, F1)."""


def _arm(out: pd.DataFrame, side: Side) -> pd.DataFrame:
    arm = out[(out["variant"] == side[0]) & (out["prompt"] == side[1])]
    return arm.set_index(["doc_id", "field"])


def _pair(out: pd.DataFrame, a: Side, b: Side) -> tuple[pd.DataFrame, pd.Series]:
    """The (document, field) values both arms have truth for, without fallback values; and the dropped ones' fields."""
    left, right = _arm(out, a), _arm(out, b)
    both = left.merge(right, how="inner", left_index=True, right_index=True, suffixes=("_a", "_b"))
    both = both[both["has_truth_a"] & both["has_truth_b"]]
    fallback = both["from_fallback_a"] | both["from_fallback_b"]
    return both[~fallback], both.index.get_level_values("field")[fallback.to_numpy()].value_counts()


def _field_test(rows: pd.DataFrame, n_boot: int, seed: int) -> dict[str, Any]:
    ca, cb = rows["correct_a"].to_numpy(bool), rows["correct_b"].to_numpy(bool)
    sa, sb = rows["similarity_a"].to_numpy(float), rows["similarity_b"].to_numpy(float)
    test = {"n": len(rows), **mcnemar_exact(ca, cb), **paired_bootstrap(ca, cb, n_boot=n_boot, seed=seed)}
    if not len(rows):  # nothing to test (every value was the fallback's, or no truth): no p-value, not a p of 1
        test["p_value"] = float("nan")
    sim = paired_permutation(sa, sb, seed=seed) if len(rows) else {"diff": float("nan"), "p_value": float("nan")}
    return {**test, "sim_diff": sim["diff"], "sim_p_value": sim["p_value"]}


def _all_fields_test(rows: pd.DataFrame, n_boot: int, seed: int) -> dict[str, Any]:
    """Every field together, per document: micro-accuracy difference (interval, permutation p) and micro-F1's."""
    per_doc = rows.assign(pa=rows["predicted_a"] & ~rows["from_fallback_a"],
                          pb=rows["predicted_b"] & ~rows["from_fallback_b"])
    g = per_doc.groupby(level="doc_id").agg(ra=("correct_a", "sum"), rb=("correct_b", "sum"),
                                            truth=("correct_a", "size"), pa=("pa", "sum"), pb=("pb", "sum"))
    if g.empty:
        nan = float("nan")
        return {"n": 0, "a_only": 0, "b_only": 0, "diff": nan, "low": nan, "high": nan, "p_value": nan,
                "f1_diff": nan, "f1_low": nan, "f1_high": nan}
    scale = g["truth"].mean()
    a, b = g["ra"].to_numpy(float) / scale, g["rb"].to_numpy(float) / scale
    acc = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
    f1 = bootstrap_f1_diff(g[["ra", "truth", "pa"]].to_numpy(float), g[["rb", "truth", "pb"]].to_numpy(float),
                           n_boot=n_boot, seed=seed)
    ca, cb = rows["correct_a"].to_numpy(bool), rows["correct_b"].to_numpy(bool)
    return {"n": len(g), "a_only": int(np.sum(ca & ~cb)), "b_only": int(np.sum(~ca & cb)), **acc,
            "p_value": paired_permutation(a, b, seed=seed)["p_value"],
            "f1_diff": f1["diff"], "f1_low": f1["low"], "f1_high": f1["high"]}


def paired_tests(out: pd.DataFrame, pairs: list[tuple[Side, Side]], comparison: str, fields: list[str],
                 n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Per field and over all fields: B against A on the documents both have, model values only.

    Per field: exact McNemar on right/wrong, paired bootstrap interval of the accuracy difference
    (B - A), paired permutation test of the ANLS similarity. Over all fields (``field == "all"``): the
    micro-accuracy difference with a bootstrap interval and a permutation p-value over documents, and
    the micro-F1 difference with its interval. p-values are not corrected here (see ``correct``).
    """
    tests = []
    for a, b in pairs:
        rows, dropped = _pair(out, a, b)
        head = {"comparison": comparison, "variant": b[0] if a[0] == b[0] else f"{a[0]} vs {b[0]}",
                "a": f"{a[0]}/{a[1]}", "b": f"{b[0]}/{b[1]}", "a_variant": a[0], "a_prompt": a[1],
                "b_variant": b[0], "b_prompt": b[1]}
        for f in fields:
            sub = rows[rows.index.get_level_values("field") == f]
            tests.append({**head, "field": f, "excluded_fallback": int(dropped.get(f, 0)),
                          **_field_test(sub, n_boot, seed)})
        tests.append({**head, "field": ALL, "excluded_fallback": int(dropped.sum()),
                      **_all_fields_test(rows, n_boot, seed),
                      "sim_diff": float("nan"), "sim_p_value": float("nan")})
    return tests


def correct(tests: list[dict[str, Any]], method: str, alpha: float) -> list[dict[str, Any]]:
    """Adjust every test's p-value across the whole list (and the similarity p-values as their own family)."""
    adjusted = adjust([t["p_value"] for t in tests], method)
    sim = adjust([t.get("sim_p_value", float("nan")) for t in tests], method)
    for t, p, s in zip(tests, adjusted, sim):
        t["p_adjusted"], t["sim_p_adjusted"] = p, s
        t["significant"] = bool(p == p and p <= alpha)
    return tests


# ---------------------------------------------------------------- the views


def prompt_pairs(table: pd.DataFrame) -> list[tuple[Side, Side]]:
    """Every two prompts of each variant, in the config's order (A = the earlier prompt)."""
    pairs = []
    for variant in dict.fromkeys(table.index.get_level_values("variant")):
        prompts = list(table.loc[variant].index)
        pairs += [((variant, pa), (variant, pb)) for pa, pb in combinations(prompts, 2)]
    return pairs


def baseline_pairs(table: pd.DataFrame, baseline: str) -> list[tuple[Side, Side]]:
    """Each other prompt of each variant against the baseline prompt (a prompt set: not every pair of prompts)."""
    pairs = []
    for variant in dict.fromkeys(table.index.get_level_values("variant")):
        prompts = list(table.loc[variant].index)
        if baseline in prompts:
            pairs += [((variant, baseline), (variant, p)) for p in prompts if p != baseline]
    return pairs


def reference_pairs(table: pd.DataFrame, reference: str) -> list[tuple[Side, Side]]:
    """Each other variant against the reference, on the same prompt (or the reference's first prompt)."""
    ref_prompts = list(table.loc[reference].index)
    pairs = []
    for variant, prompt in table.index:
        if variant != reference:
            pairs.append(((reference, prompt if prompt in ref_prompts else ref_prompts[0]), (variant, prompt)))
    return pairs


def model_pairs(table: pd.DataFrame) -> list[tuple[Side, Side]]:
    """Every two variants on a prompt they share (or their first prompts where they share none)."""
    variants = list(dict.fromkeys(table.index.get_level_values("variant")))
    pairs = []
    for va, vb in combinations(variants, 2):
        pa_, pb_ = list(table.loc[va].index), list(table.loc[vb].index)
        shared = [p for p in pa_ if p in pb_] or [None]
        pairs += [((va, p or pa_[0]), (vb, p or pb_[0])) for p in shared]
    return pairs


def pareto(points: list[dict[str, Any]], maximize: tuple[str, ...], minimize: tuple[str, ...]) -> list[bool]:
    """Whether each point is on the Pareto front: no other point is as good on every axis and better on one.

    Axes that are missing (None/NaN) on any point are left out, so an unpriced run is judged on the rest.
    """
    axes = [(k, 1) for k in maximize] + [(k, -1) for k in minimize]
    axes = [(k, s) for k, s in axes if all(_num(p.get(k)) is not None for p in points)]
    values = np.array([[s * _num(p[k]) for k, s in axes] for p in points], dtype=float).reshape(len(points), len(axes))
    front = []
    for i in range(len(points)):
        dominated = any(np.all(values[j] >= values[i]) and np.any(values[j] > values[i])
                        for j in range(len(points)) if j != i)
        front.append(not dominated)
    return front


def frontier(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy against docs/s, peak memory and cost per 1,000 documents per (variant, prompt), Pareto set marked."""
    points = [{"variant": r["variant"], "prompt": r["prompt"], "accuracy": r.get("accuracy"),
               "docs_per_s": r.get("docs_per_s"), "peak_memory_bytes": _memory(r),
               "cost_per_1000": r.get("cost_per_1000")} for r in rows]
    on_front = pareto(points, ("accuracy", "docs_per_s"), ("peak_memory_bytes", "cost_per_1000"))
    return [{**p, "pareto": f} for p, f in zip(points, on_front)]


def ranking(out: pd.DataFrame, table: pd.DataFrame, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """(variant, prompt) by micro accuracy, best first, with a bootstrap interval over documents."""
    ranked = []
    for variant, prompt in table.index:
        arm = out[(out["variant"] == variant) & (out["prompt"] == prompt) & out["has_truth"]]
        g = arm.groupby("doc_id").agg(right=("correct", "sum"), truth=("correct", "size"))
        x = g["right"].to_numpy(float) / (g["truth"].mean() if len(g) else 1.0)
        ci = paired_bootstrap(np.zeros_like(x), x, n_boot=n_boot, seed=seed)
        ranked.append({"variant": variant, "prompt": prompt, "accuracy": ci["diff"], "low": ci["low"],
                       "high": ci["high"], "documents": len(g)})
    ranked.sort(key=lambda r: -(r["accuracy"] if r["accuracy"] == r["accuracy"] else -1))
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    return ranked


def cost_per_1000(latency_s: float | None, cost_mean: float | None, num_cpus: float, num_gpus: float,
                  cpu_hour: float, gpu_hour: float) -> float | None:
    """Money per 1,000 documents: tokens billed by a served model, or reserved compute for the model time.

    Args:
        latency_s: Model seconds per document on one actor (batch time shared over its documents).
        cost_mean: Billed money per document (served backends with prices), or None.
        num_cpus, num_gpus: What one actor reserves.
        cpu_hour, gpu_hour: Prices of one CPU and one GPU for an hour.

    Returns:
        None when nothing is priced.
    """
    compute = (num_cpus * cpu_hour + num_gpus * gpu_hour) / 3600.0
    parts = []
    if cost_mean is not None and cost_mean == cost_mean and cost_mean > 0:
        parts.append(cost_mean)
    if compute > 0 and latency_s is not None and latency_s == latency_s:
        parts.append(latency_s * compute)
    return 1000.0 * sum(parts) if parts else None


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def _memory(row: dict[str, Any]) -> float | None:
    gpu = _num(row.get("gpu_peak_bytes"))
    return gpu if gpu else _num(row.get("peak_rss_bytes"))


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if x != x else x


def plain(x: Any) -> Any:
    """JSON-ready: numpy scalars to Python numbers, NaN to None (for summary.json)."""
    if isinstance(x, (np.floating, float)):
        return None if np.isnan(x) else float(x)
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    return x
