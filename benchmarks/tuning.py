"""The batch tuner against an exhaustive sweep, same model, same documents, same process, one run.

The bundled SmolLM2-135M (fp32, ocr-llm, the terse-json prompt, answers begun with the first key and
stopped at the closing brace, at most 64 new tokens) on the OCR text of synthetic invoices, with
every CPU thread. First the tuner probes as `batch_size: auto` does (``ProbeRunner.tune``: full answers
one at a time to learn the answer length, then a few step-timed tokens per size); then every size is
run in full (whole answers, at least ``SWEEP_DOCS`` documents each) to find the real best. Prints:
- per size: the tuner's projected docs/s, the sweep's measured docs/s, and the peak memory;
- throughput at the tuned size / the sweep's best (target >= 0.90);
- tuning time / the time of a 200-document run at the tuned size, projected from the sweep (<= 0.10);
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

SIZES = (1, 2, 4, 8, 16, 32)
SAMPLE_DOCS, SWEEP_DOCS, RUN_DOCS = 8, 16, 200


def experiment():
    return parse_experiment({
        "name": "bench-tuning", "dataset": {"source": "synthetic", "n": SWEEP_DOCS}, "fields": FIELDS,
        "tuning": {"sample_docs": SAMPLE_DOCS, "max_micro_batch": max(SIZES)},
        "variants": [{"name": "smol", "backend": "ocr-llm", "model": "smollm2-135m-instruct", "precision": "fp32",
                      "batch_size": "auto", "structured": "prefix", "generation": {"max_new_tokens": 64}}]})


def sweep(runner: ProbeRunner, docs: list[DocInput], size: int) -> tuple[float, int]:
    """Measured docs/s with whole answers at ``size`` over at least ``SWEEP_DOCS`` documents, and the peak."""
    n = max(SWEEP_DOCS, size)
    batch = [docs[i % len(docs)] for i in range(n)]
    reset_peak()
    start = time.perf_counter()
    for i in range(0, n, size):
        runner.backend.extract(batch[i:i + size], runner.prompt)
    return n / (time.perf_counter() - start), window_peak()


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
    variant = exp.variants[0]
    prompt = load_prompt("terse-json", exp.prompts_path())
    runner = ProbeRunner(exp.model_dump_json(), "smol", asdict(prompt), asdict(text_setting(exp, variant)), None,
                         num_threads=os.cpu_count())
    texts = ocr_texts(SWEEP_DOCS)
    docs = [DocInput(f"d{i}", t, "") for i, t in enumerate(texts)]
    runner.docs = docs[:SAMPLE_DOCS]
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    spec = exp.tuning
    decision = runner.tune(spec.max_micro_batch, spec.plateau, limit, spec.memory_margin)
    tuned_size, tuning_s = decision["micro_batch"], decision["tuning_s"]
    projected = {p["size"]: p["docs_per_s"] for p in decision["probes"]}
    print(f"tuner: micro-batch {tuned_size} in {tuning_s:.1f} s ({decision['reason']}; answers of "
          f"{decision['answer_tokens']} tokens, learnt in {decision['learn_s']:.1f} s; the probes took "
          + ", ".join(f"{p['size']}: {p['seconds']:.1f} s" for p in decision["probes"]) + ")")
    measured: dict[int, float] = {}
    print(f"{'size':>5} {'projected':>10} {'measured':>10} {'peak GiB':>9}")
    for size in SIZES:
        measured[size], peak = sweep(runner, docs, size)
        shown = f"{projected[size]:.3f}" if size in projected else "-"
        print(f"{size:>5} {shown:>10} {measured[size]:>10.3f} {peak / 2**30:>9.2f}")
    best_size = max(measured, key=measured.get)
    ratio = measured[tuned_size] / measured[best_size]
    run_s = RUN_DOCS / measured[tuned_size]
    time_ratio = tuning_s / run_s
    print(f"tuned {tuned_size}: {measured[tuned_size]:.3f} docs/s; sweep best {best_size}: {measured[best_size]:.3f} "
          f"docs/s; ratio {ratio:.3f} (target >= 0.90)")
    print(f"tuning {tuning_s:.1f} s / {RUN_DOCS}-document run {run_s:.0f} s (projected) = {time_ratio:.3f} "
          "(target <= 0.10)")
    errors = memory_errors() if "--memory" in sys.argv else {}
    print(json.dumps({"benchmark": "tuning", "metric": "tuned_over_sweep_best_docs_per_s", "value": round(ratio, 3),
                      "target": ">= 0.90", "met": bool(ratio >= 0.90), "tuned_size": tuned_size,
                      "best_size": best_size, "tuning_over_200_doc_run": round(time_ratio, 3),
                      "tuning_target": "<= 0.10", "tuning_met": bool(time_ratio <= 0.10),
                      "memory_estimate_errors": errors}))


if __name__ == "__main__":
    main()
