"""Accuracy, error and speed summaries of a result table; pure functions over pandas frames.

Input is the result table (one row per document, variant and prompt; see ``results``) and the
driver's per-variant timings. Output is plain dicts and frames; writing and printing belong to
``report``. This module never imports Ray and never reads files.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pandas as pd

from invoicelab.config import Experiment
from invoicelab.metrics import PROFILES, error_breakdown, outcomes, scores
from invoicelab.prompt_analytics import prompt_set_view
from invoicelab.prompt_versions import mixed_hashes
from invoicelab.stats import METHOD_NAMES
from invoicelab.views import plain as _plain
from invoicelab.views import (
    baseline_pairs,
    correct,
    cost_per_1000,
    frontier,
    model_pairs,
    paired_tests,
    prompt_pairs,
    ranking,
    reference_pairs,
)

GROUP = ["variant", "prompt"]


class PromptSetInfo(NamedTuple):
    """What analysis needs of a prompt set: each generated prompt's axis levels, the baseline's id, and
    each document's stratum for the selection/confirmation split (None: no labels)."""

    axes_of: dict[str, dict[str, str]]
    baseline: str
    strata: dict[str, str] | None = None


def run_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Documents, errors, fallbacks, model latency and model throughput per (variant, prompt).

    ``docs_per_s`` counts model time only (batch time shared over its documents); the driver's
    timings in the summary give wall-clock throughput with start-up and Ray overhead included.
    """
    rows = {}
    for (variant, prompt), g in df.groupby(GROUP, sort=False):
        ok = g[g["error"].isna()]
        rows[(variant, prompt)] = {
            "docs": len(g), "errors": int(g["error"].notna().sum()),
            "parse_errors": int(g["parse_error"].notna().sum()),
            "latency_s": float(ok["latency_s"].mean()) if len(ok) else float("nan"),
            "docs_per_s": len(ok) / ok["latency_s"].sum() if len(ok) and ok["latency_s"].sum() > 0 else float("nan"),
            "tokens_out": float(ok["tokens_out"].mean()) if len(ok) else float("nan"),
            **_resources(ok),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=GROUP)
    return frame


def _resources(ok: pd.DataFrame) -> dict[str, float]:
    """Load time, generated tokens per model second, batch sizes really used, memory peaks and cost."""
    model_s = ok["latency_s"].sum() if "latency_s" in ok else 0.0
    def col(name: str) -> pd.Series:
        return ok[name].dropna() if name in ok else pd.Series(dtype=float)

    return {
        "load_s": float(col("load_s").max()) if len(col("load_s")) else float("nan"),
        "tokens_per_s": float(ok["tokens_out"].sum() / model_s) if model_s > 0 else float("nan"),
        "batch_docs_mean": float(col("batch_docs").mean()) if len(col("batch_docs")) else float("nan"),
        "peak_rss_bytes": float(col("peak_rss_bytes").max()) if len(col("peak_rss_bytes")) else float("nan"),
        "gpu_peak_bytes": float(col("gpu_peak_bytes").max()) if len(col("gpu_peak_bytes")) else float("nan"),
        "cost": float(col("cost").sum()) if len(col("cost")) else float("nan"),
    }


def backend_infos(df: pd.DataFrame) -> dict[str, Any]:
    """What each variant's backend reported it loaded (first row of each variant)."""
    infos = {}
    for variant, g in df.groupby("variant", sort=False):
        raw = g["backend_info"].dropna()
        infos[variant] = json.loads(raw.iloc[0]) if len(raw) else {}
    return infos


def _accuracy_rows(out: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """Per (variant, prompt): the lenient scores, exact and similarity, the model's own share, and strict scores."""
    lenient = scores(out, "correct")
    truth = out[out["has_truth"]].groupby(GROUP, sort=False)
    table = lenient.join(pd.DataFrame({
        "exact": scores(out, "exact")["accuracy"],
        "model_accuracy": scores(out, "own_correct")["accuracy"],
        "similarity": truth["similarity"].mean(),
        "fallback_share": truth["from_fallback"].mean(),
    }))
    if "sroie-strict" in exp.analysis.profiles:
        strict = scores(out, PROFILES["sroie-strict"])
        table["strict"] = [{k: _plain(v) for k, v in r.items()} for _, r in strict.iterrows()]
    return table


def _rows(df: pd.DataFrame, out: pd.DataFrame, exp: Experiment) -> list[dict[str, Any]]:
    table = _accuracy_rows(out, exp).join(run_stats(df))
    infos, prices = backend_infos(df), exp.analysis.prices
    variants = {v.name: v for v in exp.variants}
    order = list(dict.fromkeys(zip(df["variant"], df["prompt"])))
    rows = []
    for key in order:
        if key not in table.index:
            continue
        r = {"variant": key[0], "prompt": key[1], **{k: _plain(x) for k, x in table.loc[key].items()}}
        info, spec = infos.get(key[0], {}), variants.get(key[0])
        r["memory_bytes"] = info.get("memory_footprint_bytes")
        r["precision_loaded"] = info.get("precision_loaded") or info.get("precision")
        docs = r.get("docs") or 0
        r["cost_per_1000"] = cost_per_1000(
            r.get("latency_s"), (r.get("cost") or 0.0) / docs if docs else None,
            spec.resources.num_cpus if spec else 0.0, spec.resources.num_gpus if spec else 0.0,
            prices.cpu_hour, prices.gpu_hour)
        rows.append(r)
    return rows


def _comparisons(out: pd.DataFrame, rows: list[dict[str, Any]], exp: Experiment,
                 prompt_set: PromptSetInfo | None) -> dict[str, Any]:
    """The kind's view: tests (corrected together), and the frontier, the ranking or the prompt set's analytics."""
    if not rows:
        return {}
    a, kind, fields = exp.analysis, exp.kind.value, list(exp.fields)
    table = pd.DataFrame(rows).set_index(GROUP)
    extra: dict[str, Any] = {}
    if prompt_set is not None:  # each generated prompt against the baseline, not every pair of them
        axes_of, baseline, strata = prompt_set
        tests = paired_tests(out, baseline_pairs(table, baseline), "prompt", fields, a.n_boot, exp.seed)
        extra = {"prompt_set": prompt_set_view(
            out[out["prompt"].isin(list(axes_of))], axes_of, fields, baseline=baseline,
            confirm_fraction=exp.prompt_set.confirm_fraction, n_boot=a.n_boot, seed=exp.seed,
            correction=a.correction, alpha=a.alpha, strata=strata)}
    elif kind == "prompt":
        tests = paired_tests(out, prompt_pairs(table), "prompt", fields, a.n_boot, exp.seed)
    elif kind == "quantization":
        reference = a.reference or rows[0]["variant"]
        tests = paired_tests(out, reference_pairs(table, reference), "reference", fields, a.n_boot, exp.seed)
        extra = {"reference": reference, "frontier": frontier(rows)}
    elif kind == "model":
        tests = paired_tests(out, model_pairs(table), "model", fields, a.n_boot, exp.seed)
        extra = {"ranking": ranking(out, table, a.n_boot, exp.seed)}
    else:
        tests = []
    tests = [{k: _plain(v) for k, v in t.items()} for t in correct(tests, a.correction, a.alpha)]
    return {"tests": tests, **extra}


def summarize(df: pd.DataFrame, exp: Experiment, timings: dict[str, dict[str, float]],
              prompt_set: PromptSetInfo | None = None) -> dict[str, Any]:
    """Everything ``summary.json`` holds: per (variant, prompt) scores and speed, error breakdown, the kind's view.

    Args:
        df: The run's result rows, variants in the experiment's order.
        exp: The experiment (fields and their rules, kind, analysis settings, variants' resources).
        timings: The driver's wall-clock timings per stage.
        prompt_set: For a prompt-set experiment, each generated prompt's axis levels and the baseline's id.
    """
    out = outcomes(df, exp.fields)
    rows = _rows(df, out, exp)
    errors = error_breakdown(out).reset_index()
    return {
        "kind": exp.kind.value, "fields": list(exp.fields),
        "field_specs": {f: s.model_dump(mode="json") for f, s in exp.fields.items()},
        "documents": int(df["doc_id"].nunique()), "profiles": list(exp.analysis.profiles),
        "alpha": exp.analysis.alpha, "correction": exp.analysis.correction,
        "correction_name": METHOD_NAMES[exp.analysis.correction],
        "rows": rows, "errors": [{k: _plain(v) for k, v in r.items()} for r in errors.to_dict("records")],
        **_comparisons(out, rows, exp, prompt_set), "timings": timings, "backends": backend_infos(df),
        "warnings": mixed_hashes(df),
    }
