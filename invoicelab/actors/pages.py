"""The page stage: load each document, check it is readable, and give text backends its text.

A plain callable class run by Ray Data as an actor pool, once per distinct text setting (OCR
engine, resolution, pages) of the experiment's variants, before the variant stages. Unreadable
documents get ``error`` set here, so every variant reports them as error rows with the reason.
OCR text is cached on disk by content (file hash + settings), so a re-run or a second experiment
on the same documents skips OCR. It imports no Ray.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from invoicelab.data.pages import DocumentError, load_pages

PAGE_COLUMNS = {"text": pa.string(), "ocr_s": pa.float64(), "ocr_cached": pa.bool_(), "error_stage": pa.string()}


@dataclass(frozen=True)
class TextSetting:
    """How documents become text: the part of a variant that the page stage depends on."""

    engine: str  # "none" (only check the document loads), "rapidocr" or "pdf-text"
    dpi: int
    max_pages: int
    max_pixels: int


class PageReader:
    """Adds ``text``, ``ocr_s``, ``ocr_cached`` and ``error_stage`` to batches of document records.

    Args:
        setting: The text setting, as a dict of ``TextSetting`` fields.
        cache_dir: Folder for cached OCR text (None: no cache).
        num_threads: Threads the OCR engine may use.
    """

    def __init__(self, setting: dict, cache_dir: str | None = None, num_threads: int | None = None):
        self.setting = TextSetting(**setting)
        self.cache = Path(cache_dir) / "ocr" if cache_dir else None
        self.num_threads = num_threads

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for row in rows:
            row.update(text="", ocr_s=0.0, ocr_cached=False, error_stage="input" if row["error"] else None)
            if not row["error"]:
                self._read(row)
        table = pa.Table.from_pylist(rows)
        for name, kind in PAGE_COLUMNS.items():
            table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(kind))
        return table

    def _read(self, row: dict) -> None:
        start = time.perf_counter()
        try:
            row["text"], row["ocr_cached"] = self._text(Path(row["path"]))
        except DocumentError as err:
            row.update(error=str(err), error_stage="load")
        except Exception as err:  # noqa: BLE001 - an engine failure on one document is that document's error
            row.update(error=f"OCR failed: {type(err).__name__}: {err}", error_stage="ocr")
        row["ocr_s"] = time.perf_counter() - start

    def _text(self, path: Path) -> tuple[str, bool]:
        s = self.setting
        if s.engine == "none":
            load_pages(path, dpi=s.dpi, max_pages=s.max_pages, max_pixels=s.max_pixels)
            return "", False
        key = self._key(path)
        if key and key.is_file():
            return json.loads(key.read_text(encoding="utf-8"))["text"], True
        from invoicelab.backends.ocr import page_text

        text = page_text(path, engine=s.engine, dpi=s.dpi, max_pages=s.max_pages, max_pixels=s.max_pixels,
                         num_threads=self.num_threads)
        if key:
            key.parent.mkdir(parents=True, exist_ok=True)
            tmp = key.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"text": text, "setting": asdict(s)}), encoding="utf-8")
            tmp.replace(key)
        return text, False

    def _key(self, path: Path) -> Path | None:
        if self.cache is None or not path.is_file():
            return None
        digest = hashlib.sha256(path.read_bytes())
        digest.update(json.dumps(asdict(self.setting), sort_keys=True).encode())
        return self.cache / digest.hexdigest()[:2] / f"{digest.hexdigest()}.json"
