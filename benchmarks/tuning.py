"""The batch tuner against an exhaustive sweep, same model, same process, one run.

The bundled SmolLM2-135M (fp32, ocr-llm, the terse-json prompt, answers begun with the first key and
stopped at the closing brace, at most 64 new tokens) on the OCR text of synthetic invoices, with
every CPU thread. First the tuner probes as `batch_size: auto` does (``ProbeRunner.tune``: each size
answers at least ``tuning.sample_docs`` of the run's documents in full, in calls of that size, and
those answers are kept as rows of the run); then every size is run in full (whole answers, at least
``SWEEP_DOCS`` documents each) to find the real best. Prints:
- per size: the tuner's measured docs/s, the sweep's measured docs/s, and the peak memory;
- throughput at the tuned size / the sweep's best (target >= 0.90);
- tuning time / the time of a 200-document run at the tuned size, projected from the sweep (<= 0.10).
  The tuning time counted is what tuning adds to the run: the tuner's model load and its probes, less
  the time the documents they answered (rows of the run, not computed again) take at the tuned size.
  The raw wall time of the probes is printed beside it;
- the memory-estimate error per precision, from ``benchmarks/memory_estimate.py`` when given
  ``--memory`` (it loads every precision in turn: minutes more).
Ends with one JSON line (the throughput ratio; the others are in it as further keys).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from _docs import FIELDS, ocr_texts

from invoicelab.actors.meter import reset_peak, window_peak
from invoicelab.actors.tuner import ProbeRunner
from invoicelab.backends.base import DocInput
from invoicelab.config import parse_experiment
from invoicelab.orchestrator.plan import text_setting
from invoicelab.prompts import load_prompt
from invoicelab.tuning import probes_need

SIZES = (1, 2, 4, 8, 16, 32)
SWEEP_DOCS, RUN_DOCS = 16, 200


def experiment():
    return parse_experiment({
        "name": "bench-tuning", "dataset": {"source": "synthetic", "n": SWEEP_DOCS}, "fields": FIELDS,
        "tuning": {"max_micro_batch": max(SIZES)},
        "variants": [{"name": "smol", "backend": "ocr-llm", "model": "smollm2-135m-instruct", "precision": "fp32",
                      "batch_size": "auto", "structured": "prefix", "generation": {"max_new_tokens": 64}}]})


def sweep(runner: ProbeRunner, docs: list[DocInput], size: int) -> tuple[float, int]:
    """Measured docs/s with whole answers at ``size`` over at least ``SWEEP_DOCS`` documents, and the peak."""
    n = max(SWEEP_DOCS, size)
    batch = [docs[i % len(docs)] for i in range(n)]
    backend, prompt = runner.extractor.backend, next(p for p in runner.extractor.prompts.values() if p)
    reset_peak()
    start = time.perf_counter()
    for i in range(0, n, size):
        backend.extract(batch[i:i + size], prompt)
    return n / (time.perf_counter() - start), window_peak()


def pages(texts: list[str]) -> dict[str, dict]:
    """Page rows as the page stage gives them, for the OCR texts."""
    return {f"d{i}": {"doc_id": f"d{i}", "path": "", "text": t, "error": None, "fields_json": "{}",
                      "normalized_json": "{}", "images_png": None} for i, t in enumerate(texts)}


def memory_errors() -> dict[str, float]:
    """The memory-estimate error per precision, from benchmarks/memory_estimate.py (its JSON lines)."""
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("memory_estimate.py"))], capture_output=True,
                          text=True, timeout=1800)
    print(done.stdout.strip())
    errors = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            errors.update(json.loads(line).get("errors", {}))
    return errors


def main() -> None:
    exp = experiment()
    variant, spec = exp.variants[0], exp.tuning
    prompt = load_prompt("terse-json", exp.prompts_path())
    runner = ProbeRunner(exp.model_dump_json(), "smol", {prompt.id: asdict(prompt)},
                         asdict(text_setting(exp, variant)), None, num_threads=os.cpu_count())
    needed = probes_need(spec.max_micro_batch, spec.sample_docs, spec.rounds)
    texts = ocr_texts(needed)  # as many distinct documents as the probes answer: in a 200-document run all are new
    runner.pages = pages(texts)
    runner.units = [(f"d{i}", prompt.id, f"k{i}") for i in range(needed)]
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    decision, rows = runner.tune(spec.max_micro_batch, spec.plateau, limit, spec.memory_margin, spec.rounds,
                                 spec.sample_docs)
    tuned_size, tuning_s = decision["micro_batch"], decision["tuning_s"]
    probed = {p["size"]: p["docs_per_s"] for p in decision["probes"]}
    print(f"tuner: micro-batch {tuned_size} in {tuning_s:.1f} s after a {runner.load_s:.1f} s load "
          f"({decision['reason']}); {decision['answered']} documents answered, {rows.num_rows} kept as rows; "
          "the probes took " + ", ".join(f"{p['size']}: {p['seconds']:.1f} s" for p in decision["probes"]))
    docs = [DocInput(f"d{i}", t, "") for i, t in enumerate(texts[:SWEEP_DOCS])]
    measured: dict[int, float] = {}
    print(f"{'size':>5} {'tuner':>10} {'sweep':>10} {'peak GiB':>9}")
    for size in SIZES:
        measured[size], peak = sweep(runner, docs, size)
        shown = f"{probed[size]:.3f}" if size in probed else "-"
        print(f"{size:>5} {shown:>10} {measured[size]:>10.3f} {peak / 2**30:>9.2f}")
    best_size = max(measured, key=measured.get)
    ratio = measured[tuned_size] / measured[best_size]
    run_s = RUN_DOCS / measured[tuned_size]
    kept_s = rows.num_rows / measured[tuned_size]  # what the kept rows would have taken in the run
    added_s = runner.load_s + tuning_s - kept_s
    time_ratio = added_s / run_s
    print(f"tuned {tuned_size}: {measured[tuned_size]:.3f} docs/s; sweep best {best_size}: {measured[best_size]:.3f} "
          f"docs/s; ratio {ratio:.3f} (target >= 0.90)")
    print(f"tuning adds {added_s:.1f} s (load {runner.load_s:.1f} s + probes {tuning_s:.1f} s - {rows.num_rows} kept "
          f"rows at the tuned size {kept_s:.1f} s) / {RUN_DOCS}-document run {run_s:.0f} s (projected) = "
          f"{time_ratio:.3f} (target <= 0.10); the probes' raw wall time is {tuning_s / run_s:.3f} of the run")
    errors = memory_errors() if "--memory" in sys.argv else {}
    print(json.dumps({"benchmark": "tuning", "metric": "tuned_over_sweep_best_docs_per_s", "value": round(ratio, 3),
                      "target": ">= 0.90", "met": bool(ratio >= 0.90), "tuned_size": tuned_size,
                      "best_size": best_size, "tuning_over_200_doc_run": round(time_ratio, 3),
                      "tuning_target": "<= 0.10", "tuning_met": bool(time_ratio <= 0.10),
                      "probes_wall_over_200_doc_run": round(tuning_s / run_s, 3), "rows_kept": rows.num_rows,
                      "memory_estimate_errors": errors}))


if __name__ == "__main__":
    main()
