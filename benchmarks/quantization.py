"""Every CPU precision of the bundled model against fp32, run twice: accuracy, speed, memory, reproducibility.

Runs ``configs/quantization_cpu.yaml`` (SmolLM2-135M-Instruct in fp32, bf16, bnb-int8, bnb-nf4, torch
dynamic int8 on all layers and with float exclusions, torchao int8 / int4 weight-only; 12 synthetic
invoices, no rules fallback) through ``run_experiment`` on a local Ray cluster, twice. It goes
through the real pipeline rather than calling the backends in one process because what is in
question is the rows a config produces: each variant loads in its own actor process, its batches
are the scheduler's, and each run writes to its own store, so the second run recomputes every row
in fresh processes (only the OCR text comes from the page cache, as it does for a user's rerun).

Per variant it prints, from the first run: accuracy per field and their mean, docs/s and tokens/s
over the model calls (load time excluded), the model's bytes as ``info()`` measures them, the
actor's peak RSS (``getrusage``: variants quantized after loading include their float load), and
ratios against fp32 of the same run. Then, per variant, whether the two runs gave identical raw
outputs for every document, and where not, how many differed and the spread of each field's
accuracy between the runs. Variants run two at a time (num_cpus 1 each, 2 CPUs), so their speeds
include a neighbour's load: the ratios are indicative, the accuracies and bytes are not affected.

With ``--rebatch N`` a further run puts every variant at batch size N: the same documents with
other batch companions, which shows which precisions answer differently in another batch (a
resumed run, or a batch split after a worker died, batches differently).

The last line is JSON: value = variants whose rows differed between runs without their ``info()``
saying they are batch-dependent (target 0: every non-determinism is declared).

    python benchmarks/quantization.py [--variants fp32,int8-dynamic] [--runs 2] [--rebatch 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from _docs import report, start_ray, temp_dir, timed_run

from invoicelab.config import load_experiment
from invoicelab.metrics import outcomes, scores

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quantization_cpu.yaml"
SPECS = load_experiment(CONFIG).fields
ORDER = [v.name for v in load_experiment(CONFIG).variants]  # tables follow the config's order (fp32 first)


def field_accuracy(df: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """Per (variant, prompt): each field's accuracy and their plain mean (``mean``), by the config's rules."""
    return scores(outcomes(df, {f: SPECS[f] for f in fields})).rename(columns={"field_mean": "mean"})
MB = 1e6


def run_once(i: int, root: Path, variants: list[str] | None, batch_size: int = 0) -> tuple[pd.DataFrame, float]:
    """One run of the config into its own store (every variant at ``batch_size`` if given); rows and wall time."""
    exp = load_experiment(CONFIG, [f"output_dir={root / f'run{i}'}", f"store={root / f'store{i}'}"])
    chosen = [v for v in exp.variants if not variants or v.name in variants]
    if batch_size:
        chosen = [v.model_copy(update={"batch_size": batch_size}) for v in chosen]
    exp = exp.model_copy(update={"variants": chosen})
    result, wall = timed_run(exp)
    return pd.read_parquet(result.results), wall


def variant_stats(df: pd.DataFrame, fields: list[str]) -> dict[str, dict]:
    """Per variant: accuracy per field and mean, docs/s and tokens/s over model calls, bytes, RSS, info."""
    acc = field_accuracy(df, fields).droplevel("prompt")
    out = {}
    for name, g in sorted(df.groupby("variant"), key=lambda item: ORDER.index(item[0])):
        info = json.loads(g["backend_info"].dropna().iloc[0]) if g["backend_info"].notna().any() else {}
        ok = g[g["error"].isna()]
        call_s = float((ok["batch_latency_s"] / ok["batch_docs"]).sum())  # each row carries its batch's time
        out[name] = {
            **{f: float(acc.loc[name, f]) for f in fields}, "mean": float(acc.loc[name, "mean"]),
            "errors": int(g["error"].notna().sum()), "docs_s": len(ok) / call_s if call_s else float("nan"),
            "tokens_s": float(ok["tokens_out"].sum()) / call_s if call_s else float("nan"),
            "model_bytes": info.get("memory_footprint_bytes"), "peak_rss": ok["peak_rss_bytes"].max(),
            "precision": g["precision"].iloc[0], "batch_dependent": bool(info.get("batch_dependent")),
            "error": g["error"].dropna().iloc[0] if g["error"].notna().any() else "",
        }
    return out


def determinism(a: pd.DataFrame, b: pd.DataFrame, fields: list[str]) -> dict[str, dict]:
    """Per variant: documents whose raw output differed between two runs, and each field's accuracy spread."""
    acc_a, acc_b = (field_accuracy(x, fields).droplevel("prompt") for x in (a, b))
    keys = ["variant", "doc_id", "prompt"]
    both = a[keys + ["raw_output"]].merge(b[keys + ["raw_output"]], on=keys, suffixes=("_1", "_2"))
    out = {}
    for name, g in sorted(both.groupby("variant"), key=lambda item: ORDER.index(item[0])):
        differ = int((g["raw_output_1"].fillna("") != g["raw_output_2"].fillna("")).sum())
        spread = {f: abs(float(acc_a.loc[name, f]) - float(acc_b.loc[name, f])) for f in fields}
        out[name] = {"docs": len(g), "differ": differ, "spread": spread}
    return out


def print_table(stats: dict[str, dict], fields: list[str]) -> None:
    """Speed, memory and accuracy per variant, with ratios against fp32 of the same run."""
    base = stats.get("fp32")
    short = [f[:12] for f in fields]
    print(f"{'variant':<36} {'precision':<38} " + " ".join(f"{s:>12}" for s in short)
          + f" {'mean':>6} {'d_mean':>7} {'docs/s':>7} {'x fp32':>6} {'tok/s':>6} {'x fp32':>6}"
          f" {'model MB':>8} {'x fp32':>6} {'peak RSS MB':>11}")
    for name, s in stats.items():
        def ratio(k: str, s: dict = s) -> float:
            return s[k] / base[k] if base and base[k] and s[k] else float("nan")

        d_mean = s["mean"] - base["mean"] if base else float("nan")
        model_mb = (s["model_bytes"] or float("nan")) / MB
        print(f"{name:<36} {s['precision']:<38} " + " ".join(f"{s[f]:>12.0%}" for f in fields)
              + f" {s['mean']:>6.0%} {d_mean:>+7.0%} {s['docs_s']:>7.3f} {ratio('docs_s'):>6.2f} {s['tokens_s']:>6.1f}"
              f" {ratio('tokens_s'):>6.2f} {model_mb:>8.0f} {ratio('model_bytes'):>6.2f} {s['peak_rss'] / MB:>11.0f}")
        if s["errors"]:
            print(f"    {s['errors']} error rows, e.g. {s['error'][:200]}")


def print_determinism(det: dict[str, dict], stats: dict[str, dict], fields: list[str], what: str) -> int:
    """Per variant: identical or not across two runs; returns how many differed without declaring it."""
    undeclared = 0
    for name, d in det.items():
        declared = stats[name]["batch_dependent"]
        if not d["differ"]:
            print(f"  {name:<36} identical: {d['docs']}/{d['docs']} raw outputs the same {what}")
            continue
        undeclared += not declared
        spread = ", ".join(f"{f} {d['spread'][f]:.0%}" for f in fields)
        label = "declared batch-dependent" if declared else "NOT declared batch-dependent"
        print(f"  {name:<36} DIFFER ({label}): {d['differ']}/{d['docs']} raw outputs differ {what}; "
              f"accuracy spread {spread}")
    return undeclared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--runs", type=int, default=2, help="runs of the config (2: the reproducibility check)")
    parser.add_argument("--rebatch", type=int, default=0,
                        help="also run every variant at this batch size: whose answers depend on their batch")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v] or None
    fields = list(load_experiment(CONFIG).fields)
    print(f"ray start-up: {start_ray(num_cpus=2):.1f} s (excluded)")
    root = temp_dir("quantization")
    runs = []
    for i, size in enumerate([0] * args.runs + ([args.rebatch] if args.rebatch else []), start=1):
        df, wall = run_once(i, root, variants, size)
        print(f"run {i}{f' (batch size {size})' if size else ''}: {len(df)} rows in {wall:.0f} s")
        runs.append(df)
    stats = variant_stats(runs[0], fields)
    print(f"\n{CONFIG.name}, run 1 (ratios against fp32 of the same run; d_mean: mean accuracy minus fp32's):")
    print_table(stats, fields)
    undeclared = 0
    if args.runs > 1:
        print("\nreproducibility: run 1 vs run 2 (the same config; fresh stores and actor processes, same batches)")
        undeclared = print_determinism(determinism(runs[0], runs[1], fields), stats, fields, "in both runs")
    if args.rebatch:
        print(f"\nbatch dependence: run 1 vs every variant at batch size {args.rebatch} (other batch companions)")
        undeclared += print_determinism(determinism(runs[0], runs[-1], fields), stats, fields, "when rebatched")
    report("quantization", "variants_whose_rows_differ_without_a_batch_dependent_note", undeclared, "== 0",
           undeclared == 0 and args.runs > 1)


if __name__ == "__main__":
    main()
