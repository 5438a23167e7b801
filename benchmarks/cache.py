"""An unchanged experiment run again: only the plan, no computation.

The first run is realistic for a small experiment: 16 synthetic invoices (generated beforehand,
not timed) OCR'd by RapidOCR on a cold OCR cache, then the rules baseline and a fake variant that
sleeps 0.5 s per batch of 4. Each run is timed as the CLI does it: ``run_experiment`` then writing
summary.json. The rerun of the same experiment (same output folder) should find every row's key
in the run's dataset and compute nothing. Prints both wall times, rows computed and reused, and,
for information, a differently named experiment in the same store (rows adopted, not computed).
Last line: one JSON line with rerun/first (target <= 0.05). Cluster start-up is printed apart.
"""

from __future__ import annotations

import time

import pandas as pd
from _docs import experiment, report, start_ray, temp_dir, timed_run, use_temp_cache

from invoicelab.data.synthetic import generate
from invoicelab.report import write_summary

N_DOCS = 16


def run(exp, label: str) -> float:
    start = time.perf_counter()
    result, _ = timed_run(exp)
    write_summary(result.summary, result.out_dir)
    wall = time.perf_counter() - start
    rows = len(pd.read_parquet(result.results, columns=["key"]))
    print(f"{label}: {wall:.2f} s, {rows} rows in the run's dataset, {result.summary['computed_rows']} computed, "
          f"{result.summary['reused_rows']} reused from other runs")
    return wall


def main() -> None:
    use_temp_cache()
    data = temp_dir("cache-data")
    generate(data, n=N_DOCS, seed=3)
    print(f"ray start-up: {start_ray(num_cpus=2):.1f} s (excluded)")
    root = temp_dir("cache-runs")
    variants = [{"name": "rules", "backend": "rules", "resources": {"num_cpus": 0.5}},
                {"name": "fake", "backend": "fake", "batch_size": 4, "options": {"delay_s": 0.5},
                 "ocr": {"engine": "rapidocr"}, "resources": {"num_cpus": 0.5}}]
    dataset = {"source": "folder", "path": str(data)}
    exp = experiment("cache", root, dataset, variants)
    first = run(exp, "first run (cold OCR cache)")
    again = run(exp, "unchanged rerun")
    run(experiment("cache-copy", root, dataset, variants), "same variants under another name (info)")
    ratio = again / first
    print(f"rerun / first run: {ratio:.4f}")
    report("cache", "wall_rerun_over_first_run", ratio, "<= 0.05", ratio <= 0.05)


if __name__ == "__main__":
    main()
