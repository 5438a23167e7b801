"""The result table: one row per (document, variant, prompt), as an Arrow schema.

Every stage that produces results builds rows with ``result_row`` and tables with
``to_table`` so that all batches share one schema and concatenate into one Parquet file.
Per-field columns are ``pred_<f>``, ``gt_<f>``, ``score_<f>`` and ``match_<f>``. This module
never imports Ray or a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

NO_PROMPT = "none"
"""The prompt column of backends that take no prompt (rules, fake)."""

BASE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("doc_id", pa.string()),
    ("file", pa.string()),
    ("variant", pa.string()),
    ("backend", pa.string()),
    ("model", pa.string()),
    ("precision", pa.string()),
    ("prompt", pa.string()),
    ("prompt_version", pa.int32()),
    ("batch_size", pa.int32()),
    ("raw_output", pa.string()),
    ("parse_error", pa.string()),
    ("fallback_fields", pa.list_(pa.string())),
    ("latency_s", pa.float64()),
    ("ocr_s", pa.float64()),
    ("ocr_cached", pa.bool_()),
    ("tokens_in", pa.int64()),
    ("tokens_out", pa.int64()),
    ("error", pa.string()),
    ("error_stage", pa.string()),
    ("backend_info", pa.string()),
]


def field_columns(fields: Iterable[str]) -> list[tuple[str, pa.DataType]]:
    cols = []
    for f in fields:
        cols += [(f"pred_{f}", pa.string()), (f"gt_{f}", pa.string()),
                 (f"score_{f}", pa.float64()), (f"match_{f}", pa.bool_())]
    return cols


def schema(fields: Sequence[str]) -> pa.Schema:
    """The result table's schema for an experiment's fields."""
    return pa.schema(BASE_COLUMNS + field_columns(fields))


def key(row: dict[str, Any]) -> tuple[str, str, str]:
    """What makes a row unique: (doc_id, variant, prompt)."""
    return row["doc_id"], row["variant"], row["prompt"]


def to_table(rows: list[dict[str, Any]], fields: Sequence[str]) -> pa.Table:
    """Rows (dicts; missing columns become null) as a table of the result schema."""
    return pa.Table.from_pylist(rows, schema=schema(fields))


def error_row(base: dict[str, Any], error: str, stage: str) -> dict[str, Any]:
    """A result row for a document that produced no prediction."""
    return {**base, "error": error, "error_stage": stage, "fallback_fields": []}


class ResultSink:
    """Streams result tables into one Parquet file, keeping each (doc, variant, prompt) once.

    Only the keys stay in memory. The file is written under a temporary name and renamed on
    ``close``, so a crashed run never leaves a truncated results.parquet behind.
    """

    def __init__(self, path: Path, fields: Sequence[str]):
        self.path, self.fields = Path(path), list(fields)
        self.tmp = self.path.with_name(self.path.name + ".partial")
        self.schema = schema(self.fields)
        self.writer = pq.ParquetWriter(self.tmp, self.schema)
        self.seen: set[tuple[str, str, str]] = set()
        self.duplicates = 0

    def add(self, table: pa.Table) -> int:
        """Write the rows not seen before; returns how many were new."""
        keep = []
        for i, k in enumerate(zip(*(table.column(c).to_pylist() for c in ("doc_id", "variant", "prompt")))):
            if k not in self.seen:
                self.seen.add(k)
                keep.append(i)
        self.duplicates += table.num_rows - len(keep)
        if keep:
            self.writer.write_table(table.select(self.schema.names).cast(self.schema).take(keep))
        return len(keep)

    def close(self) -> Path:
        self.writer.close()
        self.tmp.replace(self.path)
        return self.path
