"""The per-variant stage: a plain callable class that Ray Data runs as an actor pool.

Each instance loads one variant's backend once, then turns batches of documents into result
rows for each prompt: it calls the backend, applies the error policy (a failed batch becomes
error rows, never a crash), and scores every field. It imports no Ray, so it runs and is tested
in a plain loop too; ``invoicelab.actors.ray_actors`` adds the Ray-specific set-up.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow as pa

from invoicelab.backends import create_backend
from invoicelab.backends.base import DocInput, Extraction
from invoicelab.config import Experiment, FieldSpec, VariantSpec
from invoicelab.prompts import Prompt, load_prompt
from invoicelab.results import NO_PROMPT, error_row, to_table
from invoicelab.scoring import gt_value, is_match, score_field


def row_base(doc: dict[str, Any], variant: VariantSpec, prompt: Prompt | None, fields: dict[str, FieldSpec],
             info: str = "") -> dict[str, Any]:
    """The columns of a result row that do not depend on the model's answer (ground truth included)."""
    gt_fields, gt_norm = json.loads(doc.get("fields_json") or "{}"), json.loads(doc.get("normalized_json") or "{}")
    row = {
        "doc_id": doc["doc_id"], "file": doc.get("path", ""), "variant": variant.name, "backend": variant.backend,
        "model": variant.model or "", "precision": variant.precision if variant.backend == "ocr-llm" else "",
        "prompt": prompt.id if prompt else NO_PROMPT, "prompt_version": prompt.version if prompt else 0,
        "batch_size": variant.batch_size, "ocr_s": doc.get("ocr_s"), "ocr_cached": doc.get("ocr_cached"),
        "backend_info": info or None,
    }
    for name, spec in fields.items():
        row[f"gt_{name}"] = gt_value(gt_fields, gt_norm, name, spec)
    return row


class Extractor:
    """Runs one variant over batches of documents (pyarrow tables of the page stage).

    Args:
        experiment_json: The experiment, as ``Experiment.model_dump_json()``.
        variant_name: Which of its variants this instance runs.
        num_threads: Threads the model may use (None: library default).
    """

    def __init__(self, experiment_json: str, variant_name: str, num_threads: int | None = None):
        self.exp = Experiment.model_validate_json(experiment_json)
        self.variant = next(v for v in self.exp.variants if v.name == variant_name)
        self.fields = self.exp.fields
        self.backend = create_backend(self.variant, self.fields, num_threads, self.exp.seed)
        self.info = json.dumps(self.backend.info(), default=str, sort_keys=True)
        self.prompts: list[Prompt | None] = [None]
        if self.backend.uses_prompt:
            self.prompts = [load_prompt(p, self.exp.prompts_dir) for p in self.exp.prompts]

    def __call__(self, batch: pa.Table) -> pa.Table:
        docs = batch.to_pylist()
        rows: list[dict[str, Any]] = []
        for prompt in self.prompts:
            rows += self._run_prompt(docs, prompt)
        return to_table(rows, list(self.fields))

    def _run_prompt(self, docs: list[dict[str, Any]], prompt: Prompt | None) -> list[dict[str, Any]]:
        bases = [row_base(d, self.variant, prompt, self.fields, self.info) for d in docs]
        bad = [error_row(b, d["error"], d.get("error_stage") or "input") for b, d in zip(bases, docs) if d["error"]]
        todo = [(b, d) for b, d in zip(bases, docs) if not d["error"]]
        if not todo:
            return bad
        inputs = [DocInput(d["doc_id"], d.get("text") or "", d["path"],
                           {f: b[f"gt_{f}"] for f in self.fields}) for b, d in todo]
        start = time.perf_counter()
        try:
            outs = self.backend.extract(inputs, prompt)
            if len(outs) != len(inputs):
                raise RuntimeError(f"backend returned {len(outs)} results for {len(inputs)} documents")
        except Exception as err:  # noqa: BLE001 - any backend failure becomes error rows for this batch
            reason = f"backend error: {type(err).__name__}: {err}"
            return bad + [error_row(b, reason, "model") for b, _ in todo]
        per_doc = (time.perf_counter() - start) / len(inputs)
        return bad + [self._scored(b, out, per_doc) for (b, _), out in zip(todo, outs)]

    def _scored(self, base: dict[str, Any], out: Extraction, latency: float) -> dict[str, Any]:
        row = {
            **base, "raw_output": out.raw_output, "parse_error": out.parse_error, "latency_s": latency,
            "tokens_in": out.tokens_in, "tokens_out": out.tokens_out, "fallback_fields": out.fallback_fields,
            "error": out.error, "error_stage": "model" if out.error else None,
        }
        for name, spec in self.fields.items():
            pred = out.fields.get(name)
            score = score_field(pred, base[f"gt_{name}"], spec)
            row.update({f"pred_{name}": pred, f"score_{name}": score, f"match_{name}": is_match(score, spec)})
        return row
