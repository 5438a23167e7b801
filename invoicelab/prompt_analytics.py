"""Prompt-set analytics: what each axis of a generated prompt set does to each field, and an honest winner.

Input is ``metrics.outcomes`` and each prompt's levels (``{prompt id: {axis: level}}``); output is plain,
JSON-ready dicts for ``summary["prompt_set"]`` and the report.

*Axis effects* are paired contrasts with matched prompts. For an axis, a level L and its reference
level R (the baseline prompt's), each setting c of the other axes that ran at both L and R gives every
value (document, field) a pair correct(L, c) - correct(R, c). A document's contrast is the sum of its
pairs over the mean number of pairs per document, so the mean over documents is the micro-accuracy
difference. Documents are resampled: percentile bootstrap interval and paired sign-flip permutation
p-value (``stats``), corrected across all effects. With several variants (models), each has its
effects, and an *interaction* compares two variants' contrasts, paired by document (its own family).
Why not a logistic model with document effects: on a full grid the matched contrast is exactly the
difference of the level means averaged over the other axes; on a sampled grid matching keeps another
axis's effect from leaking in; and the permutation test is exact when the level does not matter,
without a link function, additivity or the separation that fields near 100% cause in a logit fit.
As in ``views``, a pair with a rules-fallback value is left out (and counted).

The *honest winner* is picked on selection documents and judged on held-out confirmation documents,
on the model's own values (``own_correct``: a fallback value is wrong, as the report's model accuracy),
so that its accuracies and its difference to the baseline add up.

Pure functions: no files, no Ray, no printing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from invoicelab.metrics import scores
from invoicelab.stats import adjust, paired_bootstrap, paired_permutation
from invoicelab.views import ALL, correct, paired_tests, ranking
from invoicelab.views import plain as _plain

Axes = Mapping[str, Mapping[str, str]]
"""{prompt id: {axis: level}}."""
_NAN = float("nan")


def axis_levels(axes_of: Axes) -> dict[str, list[str]]:
    """Each axis's levels, in the order the prompts first use them."""
    levels: dict[str, list[str]] = {}
    for axes in axes_of.values():
        for axis, level in axes.items():
            levels.setdefault(axis, [])
            if level not in levels[axis]:
                levels[axis].append(level)
    return levels


def reference_levels(axes_of: Axes, baseline: str | None = None) -> dict[str, str]:
    """The level each effect is measured against: the baseline prompt's, else the axis's first."""
    base = axes_of.get(baseline, {}) if baseline else {}
    return {axis: base.get(axis, levels[0]) for axis, levels in axis_levels(axes_of).items()}


# ---------------------------------------------------------------- per-document contrasts


def _wide(out: pd.DataFrame, variant: str, prompts: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(doc_id, field) x prompt correctness: without fallback values (NaN there), and with them."""
    arm = out[(out["variant"] == variant) & out["prompt"].isin(prompts) & out["has_truth"].astype(bool)]
    y = arm["correct"].astype(float)
    keys = [arm["doc_id"], arm["field"], arm["prompt"]]
    every = y.groupby(keys).mean().unstack("prompt")
    return y.where(~arm["from_fallback"].astype(bool)).groupby(keys).mean().unstack("prompt").reindex_like(every), every


def _side(frame: pd.DataFrame, axes_of: Axes, axis: str, level: str, others: list[str]) -> dict[tuple, np.ndarray]:
    """The prompts at ``level`` grouped by their other axes' levels: {cell: mean over its prompts}."""
    cells: dict[tuple, list[str]] = {}
    for p in frame.columns:
        if axes_of[p].get(axis) == level:
            cells.setdefault(tuple(axes_of[p].get(k) for k in others), []).append(p)
    return {c: frame[ps].mean(axis=1).to_numpy(float) for c, ps in cells.items()}


def _pair_sums(values: pd.DataFrame, every: pd.DataFrame, axes_of: Axes, axis: str, level: str,
               reference: str) -> pd.DataFrame:
    """Per (doc_id, field), over the matched cells: correctness summed at level (sl) and at reference (sr),
    the pairs counted (n), and the pairs a fallback value took out (x)."""
    others = [a for a in axis_levels(axes_of) if a != axis]
    lv, rf, el, er = (_side(f, axes_of, axis, x, others) for f in (values, every) for x in (level, reference))
    matched = [c for c in lv if c in rf]
    if not matched:
        return pd.DataFrame(0.0, index=values.index, columns=["sl", "sr", "n", "x"])
    left, right, left_all, right_all = (np.column_stack([side[c] for c in matched]) for side in (lv, rf, el, er))
    valid = ~np.isnan(left) & ~np.isnan(right)
    both = ~np.isnan(left_all) & ~np.isnan(right_all)
    return pd.DataFrame({"sl": np.where(valid, left, 0).sum(1), "sr": np.where(valid, right, 0).sum(1),
                         "n": valid.sum(1), "x": (both & ~valid).sum(1)}, index=values.index)


def _per_doc(sums: pd.DataFrame, field: str) -> tuple[pd.DataFrame, int]:
    """Documents with a pair: reference side ``a`` and level side ``b`` (sums over the mean pairs per
    document, so mean(b) - mean(a) is the micro difference), pairs ``n``; and the fallback pairs taken out."""
    rows = sums if field == ALL else sums[sums.index.get_level_values("field") == field]
    g = rows.groupby(level="doc_id").sum()
    excluded = int(g["x"].sum())
    g = g[g["n"] > 0]
    scale = g["n"].mean() if len(g) else 1.0
    return pd.DataFrame({"a": g["sr"] / scale, "b": g["sl"] / scale, "n": g["n"]}), excluded


def _contrasts(out: pd.DataFrame, axes_of: Axes, fields: list[str],
               reference: Mapping[str, str]) -> dict[tuple, tuple[pd.DataFrame, int]]:
    """{(variant, axis, level, field): (per-document sides, fallback pairs taken out)} for each non-reference level."""
    prompts = [p for p in axes_of if p in set(out["prompt"])]
    found: dict[tuple, tuple[pd.DataFrame, int]] = {}
    for variant in dict.fromkeys(out[out["prompt"].isin(prompts)]["variant"]):
        values, every = _wide(out, variant, prompts)
        for axis, levels in axis_levels({p: axes_of[p] for p in values.columns}).items():
            for level in (x for x in levels if x != reference[axis]):
                sums = _pair_sums(values, every, axes_of, axis, level, reference[axis])
                for field in [*fields, ALL]:
                    found[(variant, axis, level, field)] = _per_doc(sums, field)
    return found


# ---------------------------------------------------------------- effects and interactions


def _test(a: np.ndarray, b: np.ndarray, n_boot: int, n_perm: int, seed: int) -> dict[str, float]:
    ci = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
    p = paired_permutation(a, b, n_resamples=n_perm, seed=seed)["p_value"] if len(a) else _NAN
    return {"effect": ci["diff"], "low": ci["low"], "high": ci["high"], "p_value": p}


def _finish(tests: list[dict[str, Any]], correction: str, alpha: float) -> list[dict[str, Any]]:
    for t, p in zip(tests, adjust([t["p_value"] for t in tests], correction)):
        t["p_adjusted"], t["significant"] = p, bool(p <= alpha)  # NaN compares False
    return [{k: _plain(v) for k, v in t.items()} for t in tests]


def _effects(found: dict, reference: Mapping[str, str], n_boot: int, n_perm: int, seed: int, correction: str,
             alpha: float) -> list[dict[str, Any]]:
    tests = []
    for (variant, axis, level, field), (docs, dropped) in found.items():
        a, b = docs["a"].to_numpy(float), docs["b"].to_numpy(float)
        tests.append({"variant": variant, "axis": axis, "level": level, "reference_level": reference[axis],
                      "field": field, **_test(a, b, n_boot, n_perm, seed), "n": len(docs),
                      "pairs": int(docs["n"].sum()), "excluded_fallback": dropped,
                      "level_accuracy": b.mean() if len(b) else _NAN,
                      "reference_accuracy": a.mean() if len(a) else _NAN})
    return _finish(tests, correction, alpha)


def _interactions(found: dict, reference: Mapping[str, str], n_boot: int, n_perm: int, seed: int,
                  correction: str, alpha: float) -> list[dict[str, Any]]:
    variants = list(dict.fromkeys(k[0] for k in found))
    tests = []
    for va, vb in combinations(variants, 2):
        for (variant, axis, level, field), (docs_a, _) in found.items():
            if variant != va or (vb, axis, level, field) not in found:
                continue
            docs_b = found[(vb, axis, level, field)][0]
            common = docs_a.index.intersection(docs_b.index)
            ca, cb = (_contrast(d, common) for d in (docs_a, docs_b))
            test = _test(ca, cb, n_boot, n_perm, seed)
            tests.append({"a_variant": va, "b_variant": vb, "axis": axis, "level": level,
                          "reference_level": reference[axis], "field": field,
                          "effect_a": ca.mean() if len(ca) else _NAN, "effect_b": cb.mean() if len(cb) else _NAN,
                          **test, "n": len(common)})
    return _finish(tests, correction, alpha)


def _contrast(docs: pd.DataFrame, common: pd.Index) -> np.ndarray:
    """Per-document level-minus-reference contrast on ``common``, scaled so its mean is their micro difference."""
    sub = docs.loc[common]
    if sub.empty:
        return np.zeros(0)
    return ((sub["b"] - sub["a"]) * docs["n"].mean() / sub["n"].mean()).to_numpy(float)


def axis_effects(out: pd.DataFrame, axes_of: Axes, fields: list[str], n_boot: int = 2000, seed: int = 0,
                 reference: Mapping[str, str] | None = None, correction: str = "holm", alpha: float = 0.05,
                 n_perm: int = 9999) -> list[dict[str, Any]]:
    """The paired effect of each axis level on each field's accuracy and over all fields, per variant.

    Args:
        out: ``metrics.outcomes`` of the run (prompts not in ``axes_of`` are ignored).
        axes_of: ``{prompt id: {axis: level}}`` of the generated prompts.
        fields: The fields, in report order; ``"all"`` (micro over every field) is added.
        n_boot, seed: Bootstrap resamples of each interval, and the seed of all resampling.
        reference: ``{axis: level}`` the effects are measured against; default each axis's first level.
        correction: ``stats.adjust`` method applied across all effects.
        alpha: Level below which an adjusted p-value is called significant.
        n_perm: Most sign patterns of each permutation test.

    Returns:
        One dict per (variant, axis, level, field): axis, level, reference_level, field, variant, effect
        (accuracy at level minus at reference, on matched pairs), low, high (95% interval), p_value,
        p_adjusted, significant, n (documents), pairs, excluded_fallback, level_accuracy,
        reference_accuracy. NaN (None) where no document has a matched pair.
    """
    reference = {**reference_levels(axes_of), **(reference or {})}
    return _effects(_contrasts(out, axes_of, fields, reference), reference, n_boot, n_perm, seed, correction, alpha)


def axis_interactions(out: pd.DataFrame, axes_of: Axes, fields: list[str], n_boot: int = 2000, seed: int = 0,
                      reference: Mapping[str, str] | None = None, correction: str = "holm", alpha: float = 0.05,
                      n_perm: int = 9999) -> list[dict[str, Any]]:
    """Whether an axis level's effect differs between two variants (models): a level x model interaction.

    For every two variants (A before B in the run) and each (axis, level, field), per document: B's
    contrast minus A's, on the documents both have. Arguments as in ``axis_effects``.

    Returns:
        One dict per comparison: a_variant, b_variant, axis, level, reference_level, field, effect_a,
        effect_b, effect (B's effect minus A's), low, high, p_value, p_adjusted (across the interactions),
        significant, n. Empty when one variant ran.
    """
    reference = {**reference_levels(axes_of), **(reference or {})}
    found = _contrasts(out, axes_of, fields, reference)
    return _interactions(found, reference, n_boot, n_perm, seed, correction, alpha)


# ---------------------------------------------------------------- the honest winner


def split_documents(doc_ids: Iterable[Any], strata: Mapping[Any, Any] | None = None, confirm_fraction: float = 0.5,
                    seed: int = 0) -> tuple[list[Any], list[Any]]:
    """Documents split into a selection part and a confirmation part, seeded and stratified.

    Each stratum (e.g. a document's template or vendor) gives the confirmation part its share of the
    documents, rounded by largest remainder so the total is ``round(N * confirm_fraction)``; documents
    without a label form one more stratum. The same documents, labels and seed give the same split
    whatever the input order.

    Args:
        doc_ids: The documents (duplicates count once).
        strata: ``{doc_id: label}``; None (or no labels) for a simple seeded split.
        confirm_fraction, seed: Share held out for confirmation, in (0, 1); seed of the split.

    Returns:
        (selection, confirmation), each sorted; both non-empty when there are two documents or more.

    Raises:
        ValueError: confirm_fraction outside (0, 1).
    """
    if not 0 < confirm_fraction < 1:
        raise ValueError(f"confirm_fraction must be in (0, 1); got {confirm_fraction}")
    ids = sorted(set(doc_ids), key=str)
    groups: dict[str, list[Any]] = {}
    for d in ids:
        label = (strata or {}).get(d)
        groups.setdefault("" if label is None else f"={label}", []).append(d)
    total = min(max(round(len(ids) * confirm_fraction), 1), len(ids) - 1) if len(ids) > 1 else 0
    rng = np.random.default_rng(seed)
    keys = sorted(groups)
    quota = np.array([len(groups[k]) * total / max(len(ids), 1) for k in keys])
    take = np.floor(quota).astype(int)
    # Largest remainder first; equal remainders in a seeded order, so no stratum is always favoured.
    order = np.lexsort((rng.permutation(len(keys)), -(quota - take)))
    take[order[: total - take.sum()]] += 1
    confirmation = []
    for k, n in zip(keys, take):
        confirmation += [groups[k][i] for i in rng.permutation(len(groups[k]))[:n]]
    chosen = set(confirmation)
    return [d for d in ids if d not in chosen], sorted(confirmation, key=str)


def _own_values(out: pd.DataFrame) -> pd.DataFrame:
    """Outcomes as the model's own values: a fallback value is wrong and not a prediction (views then keep it)."""
    own = out["from_fallback"].astype(bool)
    return out.assign(correct=out["own_correct"].astype(bool), predicted=out["predicted"].astype(bool) & ~own,
                      from_fallback=False)


def _accuracy(out: pd.DataFrame, variant: str, docs: Sequence[Any]) -> pd.Series:
    """Micro accuracy of the model's own values per prompt of ``variant`` on ``docs``."""
    sub = out[(out["variant"] == variant) & out["doc_id"].isin(docs)]
    return scores(sub, "own_correct")["accuracy"].xs(variant, level="variant") if len(sub) else pd.Series(dtype=float)


def _interval(arms: pd.DataFrame, variant: str, prompt: str, n_boot: int, seed: int) -> dict[str, float]:
    """The 95% bootstrap interval over documents of a prompt's accuracy (own values), by ``views.ranking``."""
    row = ranking(_own_values(arms), pd.DataFrame(index=pd.MultiIndex.from_tuples([(variant, prompt)])), n_boot, seed)
    return {"confirmation_low": row[0]["low"], "confirmation_high": row[0]["high"]}


def honest_winner(out: pd.DataFrame, prompts: list[str], baseline: str, selection: Sequence[Any],
                  confirmation: Sequence[Any], fields: list[str], variant: str | None = None, n_boot: int = 2000,
                  seed: int = 0, correction: str = "holm", alpha: float = 0.05) -> dict[str, Any]:
    """The prompt with the best accuracy on the selection documents, judged on the confirmation documents.

    Args:
        out: ``metrics.outcomes``.
        prompts: The candidates; ties go to the earlier one.
        baseline: The prompt the winner is compared with (it may be a candidate).
        selection, confirmation: Documents the winner is picked on, and the others it is judged on.
        fields: The fields of the per-field tests.
        variant: The variant (model) whose prompts compete; default the first in ``out``.
        n_boot, seed, correction, alpha: As in ``axis_effects``; the correction spans the winner's
            per-field and all-field tests.

    Returns:
        variant, winner, baseline, candidates, selection_accuracy, confirmation_accuracy (with
        confirmation_low/high), baseline_selection_accuracy, baseline_confirmation_accuracy, optimism
        (selection - confirmation accuracy of the winner), diff_vs_baseline, low, high, p_value,
        p_adjusted, significant (the all-field test), tests (per field and all), n_selection,
        n_confirmation, sentence.
    """
    variant = variant if variant is not None else next(iter(dict.fromkeys(out["variant"])))
    sel, conf = _accuracy(out, variant, selection), _accuracy(out, variant, confirmation)
    ranked = [p for p in prompts if p in sel.index and not math.isnan(sel[p])]
    if not ranked:
        raise ValueError(f"no candidate prompt of variant {variant!r} has values with truth on the selection documents")
    winner = max(ranked, key=lambda p: sel[p])  # max keeps the first of equals
    arms = out[(out["variant"] == variant) & out["doc_id"].isin(confirmation)]
    tests = [] if winner == baseline else correct(
        paired_tests(_own_values(arms), [((variant, baseline), (variant, winner))], "winner", fields, n_boot, seed),
        correction, alpha)
    overall = next((t for t in tests if t["field"] == ALL), {})
    truth = out[out["has_truth"].astype(bool)]
    n_sel, n_conf = (truth[truth["doc_id"].isin(d)]["doc_id"].nunique() for d in (selection, confirmation))
    result = {"variant": variant, "winner": winner, "baseline": baseline, "candidates": len(ranked),
              "selection_accuracy": sel[winner], "confirmation_accuracy": conf.get(winner, _NAN),
              **_interval(arms, variant, winner, n_boot, seed),
              "baseline_selection_accuracy": sel.get(baseline, _NAN),
              "baseline_confirmation_accuracy": conf.get(baseline, _NAN),
              "optimism": sel[winner] - conf.get(winner, _NAN),
              "diff_vs_baseline": overall.get("diff", 0.0 if winner == baseline else _NAN),
              "low": overall.get("low", _NAN), "high": overall.get("high", _NAN),
              "p_value": overall.get("p_value", _NAN), "p_adjusted": overall.get("p_adjusted", _NAN),
              "significant": bool(overall.get("significant", False)), "n_selection": n_sel, "n_confirmation": n_conf}
    result["sentence"] = optimism_sentence(result["candidates"], n_sel, result["optimism"])
    result["tests"] = [{k: _plain(v) for k, v in t.items()} for t in tests]
    return {k: _plain(v) for k, v in result.items()}


def optimism_sentence(k: int, n: int, optimism: float) -> str:
    """"choosing the best of K prompts on N documents overstated its accuracy by X points" (or understated)."""
    if optimism is None or math.isnan(optimism):
        return f"choosing the best of {k} prompts on {n} documents: no confirmation documents to check it on"
    verb = "overstated" if optimism >= 0 else "understated"
    return f"choosing the best of {k} prompts on {n} documents {verb} its accuracy by {100 * abs(optimism):.1f} points"


# ---------------------------------------------------------------- the summary's view


def prompt_set_view(out: pd.DataFrame, axes_of: Axes, fields: list[str], baseline: str | None = None,
                    confirm_fraction: float = 0.5, n_boot: int = 2000, seed: int = 0, correction: str = "holm",
                    alpha: float = 0.05, strata: Mapping[Any, Any] | None = None) -> dict[str, Any]:
    """``summary["prompt_set"]``: axis effects on all documents, interactions, and the confirmed winner.

    The effects use every document (each effect is reported, none is chosen, and all are corrected
    together); only the winner, which is chosen, is split into selection and confirmation documents.

    Args:
        out, axes_of, fields, n_boot, seed, correction, alpha: As in ``axis_effects`` (the seed also splits).
        baseline: The prompt the winner is compared with, whose levels are the references; default
            the first prompt of the set that ran.
        confirm_fraction: Share of the documents held out for confirmation.
        strata: ``{doc_id: label}`` to stratify the split by (e.g. template), or None.

    Returns:
        ``{"axes": {axis: [levels]}, "reference": {axis: level}, "baseline", "effects": [...],
        "interactions": [...], "winners": [one per variant], "winner": the first variant's,
        "split": {"selection", "confirmation", "confirm_fraction", "seed", "stratified"}}``.

    Raises:
        ValueError: none of the set's prompts is in the outcomes.
    """
    ran = set(out["prompt"])
    prompts = [p for p in axes_of if p in ran]
    if not prompts:
        raise ValueError(f"none of the prompt set's {len(axes_of)} prompts is in the results")
    axes_of = {p: axes_of[p] for p in prompts}
    baseline = baseline or prompts[0]
    reference = reference_levels(axes_of, baseline)
    found = _contrasts(out, axes_of, fields, reference)
    docs = out[out["has_truth"].astype(bool) & out["prompt"].isin(prompts)]["doc_id"].unique()
    selection, confirmation = split_documents(docs, strata, confirm_fraction, seed)
    winners = [honest_winner(out, prompts, baseline, selection, confirmation, fields, v, n_boot, seed, correction,
                             alpha) for v in dict.fromkeys(out[out["prompt"].isin(prompts)]["variant"])]
    labels = {(strata or {}).get(d) for d in docs} - {None}
    return {"axes": axis_levels(axes_of), "reference": reference, "baseline": baseline,
            "effects": _effects(found, reference, n_boot, 9999, seed, correction, alpha),
            "interactions": _interactions(found, reference, n_boot, 9999, seed, correction, alpha),
            "winners": winners, "winner": winners[0] if winners else {},
            "split": {"selection": [_plain(d) for d in selection], "confirmation": [_plain(d) for d in confirmation],
                      "confirm_fraction": confirm_fraction, "seed": seed, "stratified": len(labels) > 1}}
