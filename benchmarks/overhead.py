"""invoicelab's throughput against a bare loop over the same model, documents, threads and batches.

The real CPU model (SmolLM2-135M-Instruct, fp32, 48 new tokens, no rules fallback) extracts the
fields of ``N_DOCS`` synthetic invoices in batches of ``BATCH`` with ``THREADS`` torch threads:
- invoicelab: ``run_experiment`` with one actor reserving ``THREADS`` CPUs (fresh output folder and
  store each time); docs/s = rows over the variant's wall time, first actor ready (model loaded)
  to last row written, so page routing, object store, writer and driver loop are all inside;
- bare: ``Extractor`` (the class the actor wraps) called in this process on the same page rows, in
  the same batches, with the same threads; docs/s = rows over the loop's time (model load out).
Both read the same OCR text: a rules-backend run OCRs the documents first into the OCR cache
(``~/.cache/invoicelab``, shared with the bundled model's conversion), and every later read is a
cache hit (checked). The local cluster has ``THREADS + 1`` logical CPUs so the page stage's actor
and the variant's ``THREADS``-CPU actor run at once on this machine's cores, as the bare loop's
threads do. The two are measured in alternation, ``REPEATS`` times (env OVERHEAD_REPEATS, default
1: a pair takes minutes on 2 cores), with Ray up during both (so its idle processes weigh on both);
the value is the sum of invoicelab's docs/s over the sum of the bare loop's; each pair is printed. Last line: one JSON line (target >= 0.95).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict

import pandas as pd
import pyarrow as pa
from _docs import FIELDS, report, start_ray, temp_dir, timed_run

from invoicelab.actors.extractor import Extractor
from invoicelab.actors.pages import PageReader
from invoicelab.config import parse_experiment
from invoicelab.data.sources import cache_root, load_documents
from invoicelab.orchestrator.plan import pin_models, text_setting
from invoicelab.prompts import load_prompt

N_DOCS, BATCH, NEW_TOKENS = 40, 8, 48
REPEATS = int(os.environ.get("OVERHEAD_REPEATS", "1"))
THREADS = os.cpu_count() or 2
DATASET = {"source": "synthetic", "n": N_DOCS, "seed": 11}
VARIANT = {"name": "smollm2", "backend": "ocr-llm", "model": "smollm2-135m-instruct", "precision": "fp32",
           "batch_size": BATCH, "generation": {"max_new_tokens": NEW_TOKENS}, "fallback": "none",
           "resources": {"num_cpus": THREADS}}


def exp_at(root, name: str, variants: list[dict], **extra):
    return parse_experiment({"name": name, "dataset": DATASET, "fields": FIELDS, "prompts": ["terse-json"],
                             "variants": variants, "output_dir": str(root / name), "store": str(root), **extra})


def page_rows(exp) -> pa.Table:
    """The page stage's rows for the experiment's documents, read here (from the warm OCR cache)."""
    setting = text_setting(exp, exp.variants[0])
    docs = pa.Table.from_pylist([d.row() for d in load_documents(exp)])
    pages = PageReader(asdict(setting), str(cache_root()), num_threads=THREADS)(docs)
    assert all(pages.column("ocr_cached").to_pylist()), "OCR cache not warm: the bare loop would run OCR"
    return pages


def bare(exp_json: str, pages: pa.Table) -> float:
    """Docs/s of a fresh Extractor (as an actor would build it) looping over the pages in batches."""
    prompt = load_prompt("terse-json")
    extractor = Extractor(exp_json, VARIANT["name"], {prompt.id: asdict(prompt)}, num_threads=THREADS)
    assert not extractor.load_error, extractor.load_error
    ids = pages.column("doc_id").to_pylist()
    start = time.perf_counter()
    rows = 0
    for i in range(0, len(ids), BATCH):
        chunk = pages.slice(i, BATCH)
        rows += extractor(chunk, [(d, prompt.id, "") for d in ids[i:i + BATCH]]).num_rows
    return rows / (time.perf_counter() - start)


def invoicelab_rate(i: int) -> float:
    root = temp_dir(f"overhead{i}")
    result, wall = timed_run(exp_at(root, "overhead", [VARIANT]))
    t = result.summary["timings"][VARIANT["name"]]
    df = pd.read_parquet(result.results, columns=["error_stage", "ocr_cached"])
    # An answer that is not JSON is a "model" error row, computed like any other; nothing else may fail.
    assert df["error_stage"].isin(["model"]).sum() == df["error_stage"].notna().sum(), "non-model errors"
    assert df["ocr_cached"].all(), "OCR cache misses in the invoicelab run"
    print(f"  invoicelab: {t['rows']} rows in {t['wall_s']:.1f} s variant wall (run_experiment {wall:.1f} s, "
          f"model load and start-up included)")
    return t["rows"] / t["wall_s"]


def main() -> None:
    root = temp_dir("overhead-warm")
    exp = exp_at(root, "overhead", [VARIANT])
    exp_json = pin_models(exp)[0].model_dump_json()
    print(f"ray start-up: {start_ray(num_cpus=THREADS + 1):.1f} s (excluded)")
    start = time.perf_counter()
    timed_run(exp_at(root, "ocr-warm-up", [{"name": "rules", "backend": "rules", "resources": {"num_cpus": 1}}],
                     page_stage={"num_cpus": THREADS}))
    pages = page_rows(exp)
    print(f"OCR cache warm-up (rules run): {time.perf_counter() - start:.1f} s; {pages.num_rows} page rows")
    pairs = []
    for i in range(REPEATS):
        ours = invoicelab_rate(i)
        loop = bare(exp_json, pages)
        pairs.append((ours, loop))
        print(f"pair {i}: invoicelab {ours:.3f} docs/s, bare loop {loop:.3f} docs/s -> {ours / loop:.3f}")
    ratio = sum(o for o, _ in pairs) / sum(b for _, b in pairs)
    spread = [round(o / b, 3) for o, b in pairs]
    print(f"invoicelab / bare loop: {ratio:.3f} (pairs: {spread}; {N_DOCS} docs, batch {BATCH}, {THREADS} threads, "
          f"{NEW_TOKENS} new tokens)")
    report("overhead", "docs_per_s_invoicelab_over_bare_loop", ratio, ">= 0.95", ratio >= 0.95)


if __name__ == "__main__":
    main()
