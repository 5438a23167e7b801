"""Dataset manifests: a folder's ``gt.jsonl`` read into small document records.

A record names a document and carries its ground truth; it never holds the document's pixels
(workers load those), so the driver can list a large dataset. A broken line or a missing file
becomes a record with ``error`` set, so it turns into an error row downstream and nothing is
lost. Only problems that make the whole dataset unusable (no folder, no gt.jsonl, duplicate ids,
no documents) raise ``DatasetError``. This module never imports Ray, a model or an OCR engine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MANIFEST = "gt.jsonl"


class DatasetError(ValueError):
    """A dataset that cannot be used at all; the message names the folder or line and the fix."""


@dataclass(frozen=True)
class Document:
    """One input document: where it is and what it should yield.

    Attributes:
        doc_id: Unique id within the dataset (from gt.jsonl, else the file name, else ``line-N``).
        path: Absolute path of the image or PDF ("" when the record names none).
        fields_json: The record's ``fields`` as a JSON object string (verbatim ground truth).
        normalized_json: The record's ``normalized`` block as a JSON object string ("{}" if none).
        error: Why this document cannot be processed ("" when it can).
    """

    doc_id: str
    path: str
    fields_json: str = "{}"
    normalized_json: str = "{}"
    error: str = ""

    def row(self) -> dict[str, Any]:
        return asdict(self)


def _decode(raw: bytes, lineno: int) -> tuple[dict[str, Any] | None, str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"gt.jsonl line {lineno}: not valid UTF-8 (byte {err.start})"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        return None, f"gt.jsonl line {lineno}: invalid JSON ({err.msg} at column {err.colno})"
    if not isinstance(record, dict):
        return None, f"gt.jsonl line {lineno}: expected a JSON object, got {type(record).__name__}"
    return record, ""


def _as_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _document(record: dict[str, Any] | None, problem: str, lineno: int, folder: Path) -> Document:
    record = record or {}
    file = record.get("file")
    doc_id = record.get("doc_id") or (Path(file).stem if isinstance(file, str) and file else f"line-{lineno}")
    doc_id = str(doc_id)
    if problem:
        return Document(doc_id=doc_id, path="", error=problem)
    fields = json.dumps(_as_object(record.get("fields")), ensure_ascii=False, sort_keys=True)
    normalized = json.dumps(_as_object(record.get("normalized")), ensure_ascii=False, sort_keys=True)
    if not isinstance(file, str) or not file:
        return Document(doc_id, "", fields, normalized, f"gt.jsonl line {lineno}: record has no 'file'")
    if not isinstance(record.get("fields"), dict):
        return Document(doc_id, "", fields, normalized,
                        f"gt.jsonl line {lineno}: record has no 'fields' object (ground truth), nothing to score")
    path = (folder / file).resolve()
    if not path.is_file():
        return Document(doc_id, str(path), fields, normalized, f"file not found: {file}")
    return Document(doc_id, str(path), fields, normalized)


def read_manifest(folder: Path, limit: int | None = None) -> list[Document]:
    """Read ``folder/gt.jsonl`` into documents, one per non-blank line.

    Args:
        folder: A dataset folder holding gt.jsonl; file paths in it are relative to the folder.
        limit: Keep only the first ``limit`` documents.

    Returns:
        Documents in file order; unreadable lines and missing files carry ``error``.

    Raises:
        DatasetError: no such folder, no gt.jsonl, no documents, or a doc_id used twice.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder} (set dataset.path to a folder with {MANIFEST})")
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise DatasetError(f"no {MANIFEST} in dataset folder {folder}")
    docs: list[Document] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(manifest.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        doc = _document(*_decode(raw, lineno), lineno, folder)
        if doc.doc_id in first_line:
            raise DatasetError(
                f"{manifest}: doc_id {doc.doc_id!r} appears on lines {first_line[doc.doc_id]} and {lineno}; "
                "doc ids must be unique so that each document has exactly one result"
            )
        first_line[doc.doc_id] = lineno
        docs.append(doc)
        if limit is not None and len(docs) >= limit:
            break
    if not docs:
        raise DatasetError(f"{manifest} lists no documents")
    return docs
