"""The result table: one row per (document, variant, prompt), as an Arrow schema.

Every stage that produces results builds tables with ``to_table`` so that all batches share one
schema and form one Parquet dataset (see ``invoicelab.store``). ``key`` is the row's content key
(``invoicelab.identity.row_key``); ``node_id``, ``gpu_ids`` and ``worker`` say where it was computed.
Per-field columns are ``pred_<f>`` (the answer), ``gt_<f>`` (the truth in the form the configured
rules compare with: the dataset's normalised value where it has one), ``truth_<f>`` (the truth
verbatim, as the document writes it), ``score_<f>`` and ``match_<f>`` (the configured rule), and
``in_text_<f>`` (whether the truth occurs in the text the model was given; null without text).
This module never imports Ray or a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

NO_PROMPT = "none"
"""The prompt column of backends that take no prompt (rules, fake)."""

BASE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("key", pa.string()),
    ("doc_id", pa.string()),
    ("doc_sha256", pa.string()),
    ("file", pa.string()),
    ("variant", pa.string()),
    ("backend", pa.string()),
    ("model", pa.string()),
    ("precision", pa.string()),
    ("prompt", pa.string()),
    ("prompt_version", pa.int32()),
    ("prompt_hash", pa.string()),  # the prompt's identity: its rendered template and fields (prompt_versions)
    ("batch_size", pa.int32()),
    ("raw_output", pa.string()),
    ("parse_error", pa.string()),
    ("fallback_fields", pa.list_(pa.string())),
    ("latency_s", pa.float64()),
    ("ocr_s", pa.float64()),
    ("ocr_cached", pa.bool_()),
    ("tokens_in", pa.int64()),
    ("tokens_out", pa.int64()),
    ("cost", pa.float64()),  # served backends with a price: money for this row's tokens
    ("load_s", pa.float64()),  # seconds the actor that computed the row took to load its model
    ("batch_docs", pa.int32()),  # documents really in the model call (the configured batch_size is an upper bound)
    ("micro_batch", pa.int32()),  # the micro-batch size in force for that call (after any out-of-memory halving)
    ("oom_splits", pa.int32()),  # out-of-memory failures the document went through before this row
    ("batch_latency_s", pa.float64()),  # wall time of that call
    ("batch_tokens_per_s", pa.float64()),  # generated tokens of the call per second
    ("peak_rss_bytes", pa.int64()),  # the worker process's peak resident memory after the call
    ("gpu_peak_bytes", pa.int64()),  # torch's peak GPU allocation during the call (GPU variants)
    ("gpu_used_bytes", pa.int64()),  # GPU memory in use after the call as NVML sees it (all processes)
    ("error", pa.string()),
    ("error_stage", pa.string()),
    ("backend_info", pa.string()),
    ("node_id", pa.string()),
    ("gpu_ids", pa.list_(pa.string())),
    ("worker", pa.string()),
]


def field_columns(fields: Iterable[str]) -> list[tuple[str, pa.DataType]]:
    """The per-field columns of the result table, field by field."""
    cols = []
    for f in fields:
        cols += [(f"pred_{f}", pa.string()), (f"gt_{f}", pa.string()), (f"truth_{f}", pa.string()),
                 (f"score_{f}", pa.float64()), (f"match_{f}", pa.bool_()), (f"in_text_{f}", pa.bool_())]
    return cols


def schema(fields: Sequence[str]) -> pa.Schema:
    """The result table's schema for an experiment's fields."""
    return pa.schema(BASE_COLUMNS + field_columns(fields))


def to_table(rows: list[dict[str, Any]], fields: Sequence[str]) -> pa.Table:
    """Rows (dicts; missing columns become null) as a table of the result schema."""
    return pa.Table.from_pylist(rows, schema=schema(fields))


def error_row(base: dict[str, Any], error: str, stage: str) -> dict[str, Any]:
    """A result row for a document that produced no prediction."""
    return {**base, "error": error, "error_stage": stage, "fallback_fields": []}
