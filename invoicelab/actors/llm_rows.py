"""The row steps of a vllm variant's Ray Data LLM pipeline: page rows -> requests, engine rows -> result rows.

``invoicelab.orchestrator.llm_stage`` hands these plain callables to Ray Data (``flat_map`` and
``map_batches``) around Ray Data LLM's own stages (chat template, vLLM engine):

- ``RequestRows``: a page row -> one request row per (prompt, row key) the variant computes for that
  document: its document columns, ``messages`` and ``sampling_params`` (``vllm_engine.build_request``);
- ``ResultRows``: engine output rows -> result rows of the run's schema, parsed and scored as every
  backend's are (``extractor.row_base`` and ``scored_row``); a request the engine failed is an error row;
- ``InputErrorRows``: page rows that cannot be asked (the page stage's error, or no page image for
  image input) -> error rows, since they never reach the engine.

Request rows carry no ``model`` column (Ray Data LLM would read it as a LoRA adapter's name) and no
column that its stages write (``prompt``, ``params``, ``generated_text``...). No Ray import here.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from invoicelab import prompt_versions
from invoicelab.actors.extractor import row_base, scored_row, seen_text
from invoicelab.backends.base import DocInput, extraction
from invoicelab.backends.structured import answer_schema
from invoicelab.backends.vllm_engine import build_request
from invoicelab.config import Experiment
from invoicelab.prompts import Prompt
from invoicelab.results import error_row, to_table

DOC_COLUMNS = ("doc_id", "path", "fields_json", "normalized_json", "doc_sha256", "ocr_s", "ocr_cached", "text")
"""What a result row needs of its document, carried through the engine stages (``text``: to say whether each
true value was in the text the model was given)."""
ENGINE_COLUMNS = ("generated_text", "num_input_tokens", "num_generated_tokens", "time_taken_llm",
                  "__inference_error__")
"""What Ray Data LLM's vLLM stage adds to a row (the error column: ``should_continue_on_error``)."""
Units = dict[str, list[tuple[str, str]]]
"""doc_id -> the (prompt id, row key) pairs the variant computes for the document."""


class _Variant:
    """The experiment, variant and prompts each step is built from (sent to Ray Data workers as JSON)."""

    def __init__(self, experiment_json: str, variant_name: str, prompts: dict[str, dict[str, Any]], units: Units):
        self.exp = Experiment.model_validate_json(experiment_json)
        self.variant = next(v for v in self.exp.variants if v.name == variant_name)
        self.fields = self.exp.fields
        self.prompts = {pid: Prompt(**p) for pid, p in prompts.items()}
        self.hashes = prompt_versions.hashes(self.prompts, self.fields)  # once per prompt, not per row
        self.units = units
        self.reads_images = self.variant.input == "image"


def input_problem(error: str | None, error_stage: str | None, reads_images: bool, has_images: bool) \
        -> tuple[str, str] | None:
    """Why a page row cannot be sent to the engine, and the stage to blame; None when it can."""
    if error:
        return error, error_stage or "input"
    if reads_images and not has_images:
        return "no page image to read", "input"
    return None


class RequestRows(_Variant):
    """A page row -> request rows, one per (prompt, key) of its document (none if it cannot be asked)."""

    def __init__(self, experiment_json: str, variant_name: str, prompts: dict[str, dict[str, Any]], units: Units):
        super().__init__(experiment_json, variant_name, prompts, units)
        self.schema = answer_schema(self.fields) if self.variant.structured == "json-schema" else None

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        units = self.units.get(row["doc_id"])
        images = tuple(row.get("images_png") or ())
        if not units or input_problem(row.get("error"), row.get("error_stage"), self.reads_images, bool(images)):
            return []
        doc = DocInput(row["doc_id"], row.get("text") or "", row.get("path") or "", images)
        out = []
        for prompt_id, key in units:
            request = build_request(doc, self.prompts[prompt_id], self.fields, self.variant, self.exp.seed,
                                    self.schema)
            out.append({**{c: row.get(c) for c in DOC_COLUMNS}, "key": key, "prompt_id": prompt_id,
                        "prefix": request.prefix, "messages": request.messages,
                        "sampling_params": request.sampling})
        return out


class ResultRows(_Variant):
    """Engine output rows -> result rows (scored; an engine error is an error row)."""

    def __init__(self, experiment_json: str, variant_name: str, prompts: dict[str, dict[str, Any]], info: str):
        super().__init__(experiment_json, variant_name, prompts, {})
        self.info = info

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [self._row(r) for r in _columns(batch, (*DOC_COLUMNS, "key", "prompt_id", "prefix", *ENGINE_COLUMNS))]
        return to_table(rows, list(self.fields))

    def _row(self, r: dict[str, Any]) -> dict[str, Any]:
        pid = r["prompt_id"]
        base = row_base(r, self.variant, self.prompts[pid], self.fields, self.info, r["key"],
                        prompt_hash=self.hashes[pid])
        if r.get("__inference_error__"):
            return error_row(base, f"vllm engine error: {r['__inference_error__']}", "model")
        out = extraction(r.get("generated_text") or "", r.get("num_input_tokens") or 0,
                         r.get("num_generated_tokens") or 0, r.get("prefix") or "", list(self.fields))
        return scored_row(base, out, r.get("time_taken_llm"), self.fields, seen_text(self.variant, r.get("text")))


class InputErrorRows(_Variant):
    """Page rows of this variant's documents that cannot be asked -> their error rows (every prompt's)."""

    def __init__(self, experiment_json: str, variant_name: str, prompts: dict[str, dict[str, Any]], units: Units,
                 info: str):
        super().__init__(experiment_json, variant_name, prompts, units)
        self.info = info

    def __call__(self, pages: pa.Table) -> pa.Table:
        rows = []
        for r, has_images in zip(_columns(pages, (*DOC_COLUMNS, "error", "error_stage")), _has_images(pages)):
            problem = input_problem(r.get("error"), r.get("error_stage"), self.reads_images, has_images)
            if problem is None:
                continue
            for prompt_id, key in self.units.get(r["doc_id"], ()):
                base = row_base(r, self.variant, self.prompts[prompt_id], self.fields, self.info, key,
                                prompt_hash=self.hashes[prompt_id])
                rows.append(error_row(base, *problem))
        return to_table(rows, list(self.fields))


def _columns(table: pa.Table, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of ``table`` as dicts of these columns only (None where the table lacks one)."""
    data = {n: table.column(n).to_pylist() if n in table.column_names else [None] * table.num_rows for n in names}
    return [{n: data[n][i] for n in names} for i in range(table.num_rows)]


def _has_images(pages: pa.Table) -> list[bool]:
    """Whether each page row holds at least one page image (without reading the images)."""
    if "images_png" not in pages.column_names or pa.types.is_null(pages.schema.field("images_png").type):
        return [False] * pages.num_rows
    counts = pc.fill_null(pc.list_value_length(pages.column("images_png")), 0)
    return [n > 0 for n in counts.to_pylist()]


def backend_info(variant: Any, settings: dict[str, Any], versions: dict[str, str]) -> str:
    """The ``backend_info`` column of a vllm variant's rows: the engine arguments and versions used."""
    info = {"backend": "vllm", "engine": "ray.data.llm vLLMEngineProcessor", "structured": variant.structured,
            "engine_kwargs": settings["engine_kwargs"], "placement_group": settings["placement_group_config"],
            "engine_replicas": variant.resources.actors, **versions}
    return json.dumps(info, default=str, sort_keys=True)
