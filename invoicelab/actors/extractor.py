"""The per-variant stage: a plain callable class that a Ray actor of the variant's pool wraps.

Each instance loads one variant's backend once, then turns page rows into result rows for the
(document, prompt) pairs it is asked for: it calls the backend, applies the error policy (a failed
batch becomes error rows, never a crash; a model that cannot load makes every row an error row
with the reason), and scores every field, noting whether each true value occurs in the text the
model was given (``invoicelab.evidence``). Prompts and the model's pinned identity come from the
driver; nothing is re-resolved here. It imports no Ray, so it runs and is tested in a plain loop
too; ``invoicelab.actors.ray_actors`` adds the Ray-specific set-up.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import pyarrow as pa

from invoicelab import prompt_versions
from invoicelab.actors.meter import BatchMeter
from invoicelab.microbatch import MicroBatcher, is_out_of_memory
from invoicelab.backends import create_backend
from invoicelab.backends.base import CountsTokens, DocInput, Extraction, ReadsGroundTruth
from invoicelab.config import Experiment, FieldSpec, VariantSpec
from invoicelab.evidence import in_text
from invoicelab.prompts import Prompt
from invoicelab.results import NO_PROMPT, error_row, to_table
from invoicelab.scoring import gt_value, is_match, score_field, truth_value

Todo = tuple[str, str, str]
"""(doc_id, prompt id or ``NO_PROMPT``, row key): one result row to compute."""
CUTS_TEXT = frozenset({"ocr-llm", "vllm", "openai-http"})
"""Backends that give their model only the first ``ocr.max_chars`` characters of the page text."""


def row_base(doc: dict[str, Any], variant: VariantSpec, prompt: Prompt | None, fields: dict[str, FieldSpec],
             info: str = "", key: str = "", where: dict[str, Any] | None = None,
             prompt_hash: str | None = None) -> dict[str, Any]:
    """The columns of a result row that do not depend on the model's answer (ground truth included).

    Args:
        where: ``node_id``, ``gpu_ids`` and ``worker`` of the process computing the row.
        prompt_hash: The prompt's hash for these fields, when the caller computed it once for many rows;
            None: computed here.
    """
    if prompt is not None and prompt_hash is None:
        prompt_hash = prompt_versions.prompt_hash(prompt, fields)
    gt_fields, gt_norm = json.loads(doc.get("fields_json") or "{}"), json.loads(doc.get("normalized_json") or "{}")
    row = {
        "key": key or None, "doc_sha256": doc.get("doc_sha256") or None, **(where or {}),
        "doc_id": doc["doc_id"], "file": doc.get("path", ""), "variant": variant.name, "backend": variant.backend,
        "model": variant.model_source or "", "precision": variant.precision_label,
        "prompt": prompt.id if prompt else NO_PROMPT, "prompt_version": prompt.version if prompt else 0,
        "prompt_hash": prompt_hash,
        "batch_size": variant.batch_size if isinstance(variant.batch_size, int) else None, "ocr_s": doc.get("ocr_s"), "ocr_cached": doc.get("ocr_cached"),
        "backend_info": info or None,
    }
    for name, spec in fields.items():
        row[f"gt_{name}"] = gt_value(gt_fields, gt_norm, name, spec)
        row[f"truth_{name}"] = truth_value(gt_fields, name, spec)
    return row


def seen_text(variant: VariantSpec, text: str | None) -> str | None:
    """The part of a document's page text that the variant's model was given; None when it was given none.

    Image-input variants read pixels, so their page text (if any) is not what the model saw.
    """
    if not text or variant.images is not None:
        return None
    return text[: variant.ocr.max_chars] if variant.backend in CUTS_TEXT else text


class Extractor:
    """Runs one variant over page rows (pyarrow tables of the page stage).

    Args:
        experiment_json: The experiment, as ``Experiment.model_dump_json()`` (model revisions pinned).
        variant_name: Which of its variants this instance runs.
        prompts: Prompt id -> the prompt's fields (``dataclasses.asdict``), as the driver read them.
        num_threads: Threads the model may use (None: library default).
        device: Where the model goes: ``"cpu"``, or ``"cuda"`` (the GPU Ray assigned to this process).
        where: ``node_id``, ``gpu_ids`` and ``worker`` recorded in every row.
    """

    def __init__(self, experiment_json: str, variant_name: str, prompts: dict[str, dict[str, Any]],
                 num_threads: int | None = None, device: str = "cpu", where: dict[str, Any] | None = None):
        self.exp = Experiment.model_validate_json(experiment_json)
        self.variant = next(v for v in self.exp.variants if v.name == variant_name)
        self.fields = self.exp.fields
        self.where = where or {}
        self.prompts: dict[str, Prompt | None] = {pid: Prompt(**p) for pid, p in prompts.items()}
        self.prompts[NO_PROMPT] = None
        self.hashes = prompt_versions.hashes(self.prompts, self.fields)  # once per prompt, not per row
        self.backend, self.load_error, self.info = None, "", ""
        start = time.perf_counter()
        try:
            self.backend = create_backend(self.variant, self.fields, num_threads, self.exp.seed, device=device)
            self.info = json.dumps(self.backend.info(), default=str, sort_keys=True)
        except Exception as err:  # noqa: BLE001 - a model that cannot load is this variant's error rows
            self.load_error = f"variant failed to load: {type(err).__name__}: {err}"
        self.load_s = time.perf_counter() - start
        batching = self.variant.batching
        self.batcher = MicroBatcher(self.variant.micro_batch, batching.token_budget, batching.group_by_length)

    def __call__(self, pages: pa.Table, todo: list[Todo]) -> pa.Table:
        """Result rows for each (document, prompt) in ``todo``, from the documents' page rows."""
        docs = {row["doc_id"]: row for row in pages.to_pylist()}
        by_prompt: dict[str, list[tuple[dict[str, Any], str]]] = defaultdict(list)
        for doc_id, prompt_id, key in todo:
            by_prompt[prompt_id].append((docs[doc_id], key))
        rows: list[dict[str, Any]] = []
        for prompt_id, items in by_prompt.items():
            rows += self._run_prompt(items, self.prompts[prompt_id])
        return to_table(rows, list(self.fields))

    def _run_prompt(self, items: list[tuple[dict[str, Any], str]], prompt: Prompt | None) -> list[dict[str, Any]]:
        docs = [d for d, _ in items]
        digest = self.hashes[prompt.id] if prompt is not None else None
        bases = [{**row_base(d, self.variant, prompt, self.fields, self.info, k, self.where, digest),
                  "load_s": self.load_s} for d, k in items]
        if self.load_error:
            return [error_row(b, self.load_error, "load") for b in bases]
        bad = [error_row(b, d["error"], d.get("error_stage") or "input") for b, d in zip(bases, docs) if d["error"]]
        todo = [(b, d) for b, d in zip(bases, docs) if not d["error"]]
        if not todo:
            return bad
        inputs = [DocInput(d["doc_id"], d.get("text") or "", d["path"], tuple(d.get("images_png") or ()))
                  for _, d in todo]
        if isinstance(self.backend, ReadsGroundTruth):
            self.backend.see_truth({d["doc_id"]: {f: b[f"gt_{f}"] for f in self.fields} for b, d in todo})
        calls = ModelCalls(self.backend, inputs, prompt)
        try:
            answered = self.batcher.run(prompt_lengths(self.backend, inputs, prompt), calls)
        except Exception as err:  # noqa: BLE001 - a failure outside the model calls fails what is left
            reason = f"backend error: {type(err).__name__}: {err}"
            return bad + [error_row(b, reason, "model") for b, _ in todo]
        rows = []
        for i, ((b, d), ans) in enumerate(zip(todo, answered, strict=True)):
            base = {**b, **calls.measured.get(i, {}), "micro_batch": ans.micro_batch, "oom_splits": ans.oom_splits}
            if ans.error is not None:
                rows.append(error_row({**base, "batch_docs": ans.call_size}, ans.error, "model"))
            elif isinstance(ans.value, str):  # the call failed with another error: its documents' rows say why
                rows.append(error_row(base, ans.value, "model"))
            else:
                rows.append(self._scored(base, ans.value, calls.per_doc.get(i, 0.0), d.get("text")))
        return bad + rows

    def _scored(self, base: dict[str, Any], out: Extraction, latency: float, text: str | None) -> dict[str, Any]:
        return scored_row(base, out, latency, self.fields, seen_text(self.variant, text))


def scored_row(base: dict[str, Any], out: Extraction, latency: float, fields: dict[str, FieldSpec],
               text: str | None = None) -> dict[str, Any]:
    """A result row: ``row_base`` columns, the backend's answer, and each field scored against the ground truth.

    Also used by the vllm stage (``invoicelab.actors.llm_rows``), so that every backend's rows are scored alike.

    Args:
        text: The document text the model was given (``seen_text``); ``in_text_<f>`` says whether each true
            value occurs in it, and is null where there was none.
    """
    row = {
        **base, "raw_output": out.raw_output, "parse_error": out.parse_error, "latency_s": latency,
        "tokens_in": out.tokens_in, "tokens_out": out.tokens_out, "cost": out.cost,
        "fallback_fields": out.fallback_fields,
        "error": out.error, "error_stage": "model" if out.error else None,
    }
    for name, spec in fields.items():
        pred, gt, truth = out.fields.get(name), base[f"gt_{name}"], base.get(f"truth_{name}")
        score = score_field(pred, gt, spec, truth)
        row.update({f"pred_{name}": pred, f"score_{name}": score, f"match_{name}": is_match(score, spec),
                    f"in_text_{name}": in_text(text, truth, gt, spec)})
    return row


class ModelCalls:
    """The model calls of one batch and prompt, for ``MicroBatcher``: each call is metered, and a failure
    that is not out-of-memory becomes that call's documents' error (a string in place of the answer)."""

    def __init__(self, backend: Any, inputs: list[DocInput], prompt: Prompt | None):
        self.backend, self.inputs, self.prompt = backend, inputs, prompt
        self.measured: dict[int, dict[str, Any]] = {}
        self.per_doc: dict[int, float] = {}

    def __call__(self, group: list[int]) -> list[Extraction | str]:
        docs = [self.inputs[i] for i in group]
        try:
            with BatchMeter() as meter:
                outs = self.backend.extract(docs, self.prompt)
            if len(outs) != len(docs):
                raise RuntimeError(f"backend returned {len(outs)} results for {len(docs)} documents")
        except Exception as err:  # noqa: BLE001 - any backend failure becomes error rows for this call
            if is_out_of_memory(err):
                raise  # the micro-batcher halves the call
            return [f"backend error: {type(err).__name__}: {err}"] * len(docs)
        measured = meter.result(len(docs), sum(o.tokens_out for o in outs))
        for i in group:
            self.measured[i], self.per_doc[i] = measured, meter.seconds / len(docs)
        return outs


def prompt_lengths(backend: Any, inputs: list[DocInput], prompt: Prompt | None) -> list[int]:
    """Prompt tokens per document: counted by the backend's tokenizer where it has one, else estimated
    from the text (4 characters a token) and the number of page images."""
    if prompt is not None and isinstance(backend, CountsTokens):
        return backend.prompt_tokens(inputs, prompt)
    return [len(d.text) // 4 + 256 * len(d.images) + 1 for d in inputs]
