"""The same variant in a plain loop and inside a Ray Data actor pool: does the actor use its CPUs?

Ray sets OMP_NUM_THREADS=1 in workers; the actor sets torch's threads from its CPU reservation.
Model throughput (docs per second of model time) inside the actor should match the plain loop.
Prints both and, last, one JSON line with actor/plain (target >= 0.9). The Ray run's wall time,
start-up included, is printed for information.
"""

from __future__ import annotations

import json
import os
import time

import pyarrow as pa
import ray
from _docs import FIELDS, ocr_texts

from invoicelab.actors.extractor import Extractor
from invoicelab.actors.ray_actors import ExtractorActor
from invoicelab.config import parse_experiment
from invoicelab.orchestrator.resources import actor_pool_args

N_DOCS = 8


def main() -> None:
    cpus = os.cpu_count() or 2
    exp = parse_experiment({
        "name": "bench", "dataset": {"source": "synthetic", "n": N_DOCS}, "fields": FIELDS,
        "variants": [{"name": "v", "backend": "ocr-llm", "model": "smollm2-135m-instruct", "batch_size": N_DOCS,
                      "generation": {"max_new_tokens": 48}, "fallback": "none", "resources": {"num_cpus": cpus}}],
    })
    rows = [{"doc_id": f"d{i}", "path": "", "fields_json": "{}", "normalized_json": "{}", "error": None,
             "text": t, "ocr_s": 0.0, "ocr_cached": True} for i, t in enumerate(ocr_texts(N_DOCS))]
    table = pa.Table.from_pylist(rows)

    plain = Extractor(exp.model_dump_json(), "v", num_threads=cpus)
    plain(table.slice(0, 2))  # warm-up
    out = plain(table).to_pandas()
    plain_rate = len(out) / out["latency_s"].sum()
    del plain

    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
    start = time.perf_counter()
    ds = ray.data.from_arrow(table).map_batches(
        ExtractorActor, fn_constructor_kwargs={"experiment_json": exp.model_dump_json(), "variant_name": "v"},
        **actor_pool_args(exp.variants[0].resources, N_DOCS))
    actor = pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None))).to_pandas()
    wall = time.perf_counter() - start
    actor_rate = len(actor) / actor["latency_s"].sum()
    threads = json.loads(actor["backend_info"].iloc[0])["num_threads"]
    print(f"plain loop: {plain_rate:.3f} docs/s   actor ({threads} threads): {actor_rate:.3f} docs/s   "
          f"ray wall incl. start-up and model load: {wall:.1f} s for {N_DOCS} docs")
    ratio = actor_rate / plain_rate
    print(json.dumps({"benchmark": "actor_threads", "metric": "actor_over_plain_model_docs_per_s",
                      "value": round(ratio, 3), "target": ">= 0.9", "met": bool(ratio >= 0.9)}))


if __name__ == "__main__":
    main()
