"""Dataset manifests: a folder's ``gt.jsonl`` read into small document records.

The folder is a local path or a URI (``s3://bucket/prefix``), read through ``storage``. A record
names a document by location and carries its ground truth; it never holds the document's bytes
(workers read those), so the driver can list a large dataset. A broken line, a missing file or a
file outside the dataset folder becomes a record with ``error`` set, so it turns into an error row
downstream and nothing is lost. Only problems that make the whole dataset unusable (no folder, no
gt.jsonl, duplicate ids, no documents) raise ``DatasetError``. This module never imports Ray, a
model or an OCR engine, and never opens a file that a manifest names outside its folder.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from invoicelab.data import storage
from invoicelab.data.pages import DocumentError

MANIFEST = "gt.jsonl"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # s3://other-bucket/key, file:///etc/...


class DatasetError(ValueError):
    """A dataset that cannot be used at all; the message names the folder or line and the fix."""


@dataclass(frozen=True)
class Document:
    """One input document: where it is and what it should yield.

    Attributes:
        doc_id: Unique id within the dataset (from gt.jsonl, else the file name, else ``line-N``).
        path: Location of the image or PDF: an absolute local path or the full URI
            (``s3://bucket/prefix/file``); "" when the record names none or names one outside the folder.
        fields_json: The record's ``fields`` as a JSON object string (verbatim ground truth).
        normalized_json: The record's ``normalized`` block as a JSON object string ("{}" if none).
        error: Why this document cannot be processed ("" when it can).
        size: Size in bytes from the folder's listing (-1 when not listed).
        mtime_ns: Modification time in ns from the folder's listing (-1 when not listed).
        meta_json: The record's ``meta`` block as a JSON object string: informational labels (a synthetic
            invoice's ``layout``), never ground truth; used to stratify document splits.
    """

    doc_id: str
    path: str
    fields_json: str = "{}"
    normalized_json: str = "{}"
    error: str = ""
    size: int = -1
    mtime_ns: int = -1
    meta_json: str = "{}"

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


def _document(record: dict[str, Any] | None, problem: str, lineno: int, where: _Dataset) -> Document:
    doc = _checked_document(record or {}, problem, lineno, where)
    meta = _as_object((record or {}).get("meta"))
    return replace(doc, meta_json=json.dumps(meta, ensure_ascii=False, sort_keys=True)) if meta else doc


def _checked_document(record: dict[str, Any], problem: str, lineno: int, where: _Dataset) -> Document:
    file = record.get("file")
    doc_id = record.get("doc_id") or (PurePosixPath(file).stem if isinstance(file, str) and file else f"line-{lineno}")
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
    relative, outside = where.inside(file)
    if outside:
        return Document(doc_id, "", fields, normalized, f"file outside the dataset folder: {file} ({outside})")
    stat = where.files.get(relative)
    if stat is None:
        return Document(doc_id, where.location(relative), fields, normalized, f"file not found: {file}")
    return Document(doc_id, where.location(relative), fields, normalized, size=stat[0], mtime_ns=stat[1])


@dataclass
class _Dataset:
    """Where a manifest's files live: the folder (a resolved local path or a URI) and its one listing."""

    folder: str
    files: dict[str, tuple[int, int]]
    local: bool

    def inside(self, file: str) -> tuple[str, str]:
        """``file`` (from gt.jsonl) as a path relative to the folder, or why it would leave the folder.

        Checked before anything is read: a manifest must not make a worker read, and copy into the
        results, any other file on the node or in the bucket.

        Returns:
            (relative posix path, "") when the file stays inside; ("", the reason) when it does not.
        """
        if "\x00" in file:
            return "", "a NUL byte in the name"
        if PurePosixPath(file).is_absolute():
            return "", "an absolute path"
        if _SCHEME.match(file):
            return "", "a URI, not a path in the folder"
        if ".." in PurePosixPath(file).parts:
            return "", "'..' in the path"
        if not self.local:
            return posixpath.normpath(file), ""
        try:  # a symlink (to the file or to a folder on its way) may lead anywhere: follow it first
            resolved = (Path(self.folder) / file).resolve()
        except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
            return "", f"unresolvable path: {err}"
        if not resolved.is_relative_to(self.folder):
            return "", f"a symlink to {resolved}"
        # The listing never follows a directory symlink, so look the file up by its real path.
        return resolved.relative_to(self.folder).as_posix(), ""

    def location(self, relative: str) -> str:
        """The document's location: an absolute local path (symlinks resolved) or the full URI."""
        return storage.join(self.folder, relative)


def _dataset(folder: str | Path) -> _Dataset:
    """The dataset folder and its listing; DatasetError when it is not a folder holding gt.jsonl."""
    location = str(folder)
    missing = f"dataset folder not found: {location} (set dataset.path to a folder with {MANIFEST})"
    if storage.is_local(location):
        path = Path(location).expanduser()
        if not path.is_dir():
            raise DatasetError(missing)
        location = str(path.resolve())  # containment is checked against the real folder, links resolved
    try:
        files = storage.list_files(location)
    except DocumentError as err:
        if isinstance(err.__cause__, FileNotFoundError):
            raise DatasetError(missing) from None
        raise DatasetError(f"dataset folder unusable: {err}") from None
    if MANIFEST not in files:
        raise DatasetError(f"no {MANIFEST} in dataset folder {location}")
    return _Dataset(location, files, storage.is_local(location))


def read_manifest(folder: str | Path, limit: int | None = None) -> list[Document]:
    """Read ``folder/gt.jsonl`` into documents, one per non-blank line.

    The folder is listed once (sizes and modification times of all its files) and gt.jsonl read
    through ``storage``, so a dataset on object storage is read the same way as a local one. A
    ``file`` entry that would leave the folder (absolute, ``..``, a URI, a symlink leading out)
    becomes an error record; its target is never opened.

    Args:
        folder: A dataset folder holding gt.jsonl, a local path or a URI (``s3://bucket/prefix``);
            file paths in gt.jsonl are relative to it.
        limit: Keep only the first ``limit`` documents.

    Returns:
        Documents in file order; unreadable lines, missing files and files outside the folder carry ``error``.

    Raises:
        DatasetError: no such folder, no gt.jsonl, no documents, or a doc_id used twice.
    """
    where = _dataset(folder)
    manifest = storage.join(where.folder, MANIFEST)
    try:
        content = storage.read_bytes(manifest)
    except DocumentError as err:
        raise DatasetError(f"cannot read {manifest}: {err}") from None
    docs: list[Document] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        doc = _document(*_decode(raw, lineno), lineno, where)
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
