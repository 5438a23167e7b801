"""The page stage: read each document, check it is readable, and give backends its text and pixels.

A plain callable class run by Ray as an actor pool, once per distinct text setting (OCR engine,
resolution, pages, image size) of the experiment's variants, before the variant stages. Documents
are read by the worker itself through ``storage.local_copy``, so a dataset on object storage needs
no copy on the node. Unreadable documents get ``error`` set here, so every variant reports them as
error rows with the reason. OCR text is cached on disk by content (the document's sha256, the
setting, and the OCR engine's version), so a re-run or a second experiment on the same documents
skips OCR. It imports no Ray.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pyarrow as pa

from invoicelab.data import storage
from invoicelab.data.pages import DocumentError, load_pages

# The columns the page stage adds to each document record, with their types: every output batch has
# the input's columns (minus any of these) followed by exactly these, whatever its rows hold.
PAGE_COLUMNS: dict[str, pa.DataType] = {
    "text": pa.string(),
    "ocr_s": pa.float64(),
    "ocr_cached": pa.bool_(),
    "error_stage": pa.string(),
    "doc_sha256": pa.string(),  # hex digest of the bytes read; "" when the document could not be read
    "images_png": pa.list_(pa.binary()),  # pages as PNG, longest side <= image_max_side; null when not asked or on error
}

# Libraries whose code produces each engine's text. pdf-text OCRs pages without a text layer with
# rapidocr, and every engine reads PDFs through pages rendered by pypdfium2. tesseract adds its
# binary's version, its settings and its language packs' digests (``ocr_tesseract.identity``).
_ENGINE_LIBRARIES = {"rapidocr": ("rapidocr", "pypdfium2"), "pdf-text": ("pypdfium2", "rapidocr"),
                     "tesseract": ("pytesseract", "pypdfium2")}


@dataclass(frozen=True)
class TextSetting:
    """How documents become text and pixels: the part of a variant that the page stage depends on."""

    engine: str  # "none" (only check the document loads), "rapidocr" or "pdf-text"
    dpi: int
    max_pages: int
    max_pixels: int
    image_max_side: int = 0  # > 0: add page images as PNG at most this many pixels on their longest side
    image_pages: int = 1  # how many pages' images (from the first)
    image_pixel_budget: int = 0  # > 0: stop adding pages once their pixels together would pass this (first page kept)
    ocr_languages: str = ""  # the OCR engine's language packs, where it has a choice (tesseract)


def page_schema(input_schema: pa.Schema) -> pa.Schema:
    """The schema of the page stage's output for a batch of ``input_schema``.

    Args:
        input_schema: The document records' schema (any page columns in it are replaced).

    Returns:
        The input's other columns, then ``PAGE_COLUMNS`` in order.
    """
    kept = [f for f in input_schema if f.name not in PAGE_COLUMNS]
    return pa.schema(kept + [pa.field(name, kind) for name, kind in PAGE_COLUMNS.items()])


def engine_versions(engine: str, languages: str = "") -> dict[str, str]:
    """The versions of what produces ``engine``'s text ("absent" where not installed).

    Args:
        engine: The text engine.
        languages: tesseract's language packs ("" = every installed one); ignored by other engines.
    """
    versions = {name: _version(name) for name in _ENGINE_LIBRARIES.get(engine, ())}
    if engine == "tesseract":
        from invoicelab.backends.ocr_tesseract import identity

        versions.update(identity(languages))
    return versions


class PageReader:
    """Adds the ``PAGE_COLUMNS`` to batches of document records.

    Args:
        setting: The text setting, as a dict of ``TextSetting`` fields.
        cache_dir: Folder for cached OCR text and fetched remote documents (None: no OCR cache;
            remote documents go to a temporary folder).
        num_threads: Threads the OCR engine may use.
    """

    def __init__(self, setting: dict, cache_dir: str | None = None, num_threads: int | None = None):
        self.setting = TextSetting(**setting)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.cache = self.cache_dir / "ocr" if self.cache_dir else None
        self.num_threads = num_threads
        self.setup_error = _engine_problem(self.setting)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for row in rows:
            row.update(text="", ocr_s=0.0, ocr_cached=False, error_stage="input" if row["error"] else None,
                       doc_sha256="", images_png=None)
            if not row["error"]:
                self._read(row)
        return pa.Table.from_pylist(rows, schema=page_schema(batch.schema))

    def _read(self, row: dict[str, Any]) -> None:
        start = time.perf_counter()
        location = row["path"]
        local: Path | None = None
        if self.setup_error:  # the engine cannot run here: every document says why, nothing is read
            row.update(error=self.setup_error, error_stage="ocr")
            return
        try:
            local = storage.local_copy(location, self.cache_dir)
            row["doc_sha256"] = storage.sha256(str(local))
            row["text"], row["ocr_cached"], pages = self._text(local, row["doc_sha256"])
            if self.setting.image_max_side > 0:
                row["images_png"] = self._images(local, pages)
        except DocumentError as err:
            row.update(error=_name_location(str(err), local, location), error_stage="load",
                       doc_sha256="", images_png=None)
        except Exception as err:  # noqa: BLE001 - an engine failure on one document is that document's error
            reason = _name_location(f"OCR failed: {type(err).__name__}: {err}", local, location)
            row.update(error=reason, error_stage="ocr", doc_sha256="", images_png=None)
        row["ocr_s"] = time.perf_counter() - start

    def _text(self, path: Path, content_sha256: str) -> tuple[str, bool, list | None]:
        """(text, whether it came from the cache, the pages when they were loaded here)."""
        s = self.setting
        if s.engine == "none":
            return "", False, load_pages(path, dpi=s.dpi, max_pages=s.max_pages, max_pixels=s.max_pixels)
        key = self._key(content_sha256)
        if key and key.is_file():
            return json.loads(key.read_text(encoding="utf-8"))["text"], True, None
        from invoicelab.backends.ocr import page_text

        text = page_text(path, engine=s.engine, dpi=s.dpi, max_pages=s.max_pages, max_pixels=s.max_pixels,
                         num_threads=self.num_threads, languages=s.ocr_languages)
        if key:
            key.parent.mkdir(parents=True, exist_ok=True)
            tmp = key.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"text": text, "setting": self._ocr_identity()}), encoding="utf-8")
            tmp.replace(key)
        return text, False, None

    def _images(self, path: Path, pages: list | None) -> list[bytes]:
        """Pages as PNG bytes, scaled down (never up) to ``image_max_side`` on their longest side.

        ``image_pages`` pages from the first; with a pixel budget, pages stop where the next one would
        pass it (the first page is always given).
        """
        s = self.setting
        n = min(s.image_pages, s.max_pages)
        pages = pages[:n] if pages else load_pages(path, dpi=s.dpi, max_pages=n, max_pixels=s.max_pixels)
        out, used = [], 0
        for page in pages:
            page.thumbnail((s.image_max_side, s.image_max_side))  # keeps the aspect ratio
            used += page.width * page.height
            if out and s.image_pixel_budget and used > s.image_pixel_budget:
                break
            buf = io.BytesIO()
            page.save(buf, format="PNG")
            out.append(buf.getvalue())
        return out

    def _ocr_identity(self) -> dict[str, Any]:
        # The image settings are left out: they change the pixels sent on, not the OCR text.
        identity = {k: v for k, v in asdict(self.setting).items() if not k.startswith("image_")}
        return {**identity, "versions": engine_versions(self.setting.engine, self.setting.ocr_languages)}

    def _key(self, content_sha256: str) -> Path | None:
        if self.cache is None:
            return None
        digest = hashlib.sha256(content_sha256.encode())
        digest.update(json.dumps(self._ocr_identity(), sort_keys=True).encode())
        return self.cache / digest.hexdigest()[:2] / f"{digest.hexdigest()}.json"


def _engine_problem(setting: TextSetting) -> str:
    """Why the setting's OCR engine cannot run in this process ("" when it can), checked once per reader."""
    if setting.engine != "tesseract":
        return ""
    from invoicelab.backends.ocr_tesseract import TesseractUnavailable, check

    try:
        check(setting.ocr_languages or "eng")
    except TesseractUnavailable as err:
        return f"OCR engine unavailable: {err}"
    return ""


@lru_cache(maxsize=None)
def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def _name_location(message: str, local: Path | None, location: str) -> str:
    """An error about a fetched copy names the document's own location (the URI), not the cache file."""
    if local is not None and str(local) != location:
        return message.replace(str(local), location)
    return message
