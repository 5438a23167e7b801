"""Accuracy, error and speed summaries of a result table; pure functions over pandas frames.

Input is the result table (one row per document, variant and prompt; see ``results``) and the
driver's per-variant timings. Output is plain dicts and frames; writing and printing belong to
``report``. This module never imports Ray and never reads files.
"""

from __future__ import annotations

import json
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from invoicelab.stats import mcnemar_exact, paired_bootstrap

GROUP = ["variant", "prompt"]


def _correct(df: pd.DataFrame, field: str) -> pd.Series:
    """Per row: True/False where the field has ground truth (errors count as wrong), NaN where not."""
    scored = df[f"gt_{field}"].notna()
    return df[f"match_{field}"].fillna(False).astype(bool).where(scored)


def _from_fallback(df: pd.DataFrame, field: str) -> pd.Series:
    """Per row: whether the field's value came from the fallback instead of the model."""
    return df["fallback_fields"].map(lambda x: x is not None and field in list(x)).astype(bool)


def field_accuracy(df: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """Accuracy per field, their mean, micro precision/recall/F1, and the model's own share, per (variant, prompt).

    ``model_mean`` counts only values that came from the model itself (fallback values count as
    wrong); ``fallback_share`` is the fraction of scored values that came from the fallback.
    """
    out = {}
    for key, g in df.groupby(GROUP, sort=False):
        acc = {f: _correct(g, f).mean() for f in fields}
        truth = sum(int(g[f"gt_{f}"].notna().sum()) for f in fields)
        right = sum(int(_correct(g, f).sum()) for f in fields)
        model_right = sum(int((_correct(g, f).fillna(False).astype(bool) & ~_from_fallback(g, f)).sum())
                          for f in fields)
        fallback = sum(int((_from_fallback(g, f) & g[f"gt_{f}"].notna()).sum()) for f in fields)
        predicted = sum(int(g[f"pred_{f}"].fillna("").astype(str).str.strip().ne("").sum()) for f in fields)
        p, r = (right / predicted if predicted else 0.0), (right / truth if truth else 0.0)
        out[key] = {**acc, "mean": float(np.nanmean(list(acc.values()))) if truth else float("nan"),
                    "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                    "model_mean": model_right / truth if truth else float("nan"),
                    "fallback_share": fallback / truth if truth else float("nan")}
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=GROUP)
    return frame


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


def prompt_tests(df: pd.DataFrame, fields: list[str], seed: int = 0) -> list[dict[str, Any]]:
    """Paired tests between every two prompts of each variant, per field: McNemar and bootstrap."""
    tests = []
    for variant, g in df.groupby("variant", sort=False):
        prompts = list(dict.fromkeys(g["prompt"]))
        for pa_, pb in combinations(prompts, 2):
            a = g[g["prompt"] == pa_].set_index("doc_id")
            b = g[g["prompt"] == pb].set_index("doc_id").reindex(a.index)
            for f in fields:
                ca, cb = _correct(a, f), _correct(b, f)
                both = ca.notna() & cb.notna()
                ca, cb = ca[both].astype(bool).to_numpy(), cb[both].astype(bool).to_numpy()
                tests.append({"variant": variant, "a": pa_, "b": pb, "field": f, "n": int(both.sum()),
                              **mcnemar_exact(ca, cb), **{f"boot_{k}": v for k, v in
                                                          paired_bootstrap(ca, cb, seed=seed).items()}})
    return tests


def summarize(df: pd.DataFrame, fields: list[str], timings: dict[str, dict[str, float]], kind: str,
              seed: int = 0) -> dict[str, Any]:
    """Everything ``summary.json`` holds: per (variant, prompt) accuracy and speed, and per-kind extras."""
    acc, speed = field_accuracy(df, fields), run_stats(df)
    table = acc.join(speed)
    infos = backend_infos(df)
    rows = [{"variant": v, "prompt": p, **{k: _plain(x) for k, x in r.items()}} for (v, p), r in table.iterrows()]
    for r in rows:
        info = infos.get(r["variant"], {})
        r["memory_bytes"] = info.get("memory_footprint_bytes")
        r["precision_loaded"] = info.get("precision_loaded") or info.get("precision")
    summary: dict[str, Any] = {"kind": kind, "fields": fields, "rows": rows, "timings": timings,
                               "backends": infos, "documents": int(df["doc_id"].nunique())}
    if kind == "prompt":
        summary["prompt_tests"] = prompt_tests(df, fields, seed)
    if kind in ("quantization", "model") and rows:
        first = [x for x in rows if x["variant"] == rows[0]["variant"]]
        for r in rows:  # against the first variant, on the same prompt where it has that prompt
            ref = next((x for x in first if x["prompt"] == r["prompt"]), first[0])
            r["delta_mean_vs_first"] = _plain(r["mean"] - ref["mean"])
    return summary


def _plain(x: Any) -> Any:
    if isinstance(x, (np.floating, float)):
        return None if np.isnan(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x
