"""OCR engines: a page image becomes text lines with boxes, grouped into reading order.

``RapidOcrEngine`` runs the PP-OCR ONNX models that ship inside the ``rapidocr`` wheel; it points
rapidocr at those files explicitly, so it never downloads anything (a wheel without them is an
install error, reported as such). ``TesseractEngine`` (in ``ocr_tesseract``) runs Debian's
``tesseract-ocr`` binary with its installed language packs. ``page_text`` turns a document into the
text a text-only backend reads, from OCR or from a PDF's own text layer.

This module must never import rapidocr, onnxruntime or pytesseract at import time (``import invoicelab`` stays
light; a missing extra fails only when OCR is used, naming ``pip install 'invoicelab[ocr]'``),
never touch the network, and never import Ray.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from statistics import median
from typing import Any

from invoicelab.data.pages import file_kind, load_pages, pdf_text

ENGINES = ("rapidocr", "tesseract", "pdf-text")
OCR_EXTRA_HINT = "pip install 'invoicelab[ocr]'"
MIN_TEXT_LAYER_CHARS = 10  # a page whose text layer has fewer letters/digits than this is OCR'd
_ROW_TOLERANCE = 0.5  # a line joins a row when its y-centre is within this many line heights


@dataclass
class OcrLine:
    """One recognised text line: its text, box (x0, y0, x1, y1) in page pixels, and confidence."""

    text: str
    box: tuple[float, float, float, float]
    score: float

    @property
    def y_center(self) -> float:
        return (self.box[1] + self.box[3]) / 2

    @property
    def height(self) -> float:
        return max(self.box[3] - self.box[1], 1.0)


@dataclass
class OcrPage:
    """A page's OCR result: its lines, the text in reading order, and the seconds OCR took."""

    lines: list[OcrLine]
    text: str
    seconds: float = field(default=0.0, compare=False)


def group_rows(lines: list[OcrLine]) -> list[list[OcrLine]]:
    """Group lines into visual rows (by y-centre), each row sorted left to right, rows top to bottom.

    A receipt's ``TOTAL ..... 12.50`` is detected as two boxes on one visual line; they end up in
    one row. A line joins the current row when its y-centre is within half a line height of the
    row's mean y-centre, which tolerates the slight skew of a photographed receipt.

    Args:
        lines: Lines in any order.

    Returns:
        Rows of lines.
    """
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda ln: ln.y_center):
        if rows and _fits_row(rows[-1], line):
            rows[-1].append(line)
        else:
            rows.append([line])
    return [sorted(row, key=lambda ln: ln.box[0]) for row in rows]


def _fits_row(row: list[OcrLine], line: OcrLine) -> bool:
    center = sum(ln.y_center for ln in row) / len(row)
    height = min(median(ln.height for ln in row), line.height)
    return abs(line.y_center - center) <= _ROW_TOLERANCE * height


def reading_order_text(lines: list[OcrLine]) -> str:
    """Lines as text: one text line per visual row, boxes in a row joined with spaces."""
    return "\n".join(" ".join(ln.text for ln in row) for row in group_rows(lines))


class RapidOcrEngine:
    """PP-OCR (det + cls + rec ONNX models bundled in the rapidocr wheel) on CPU via onnxruntime."""

    def __init__(self, num_threads: int | None = None):
        """Set up the engine; the models load on the first ``read``.

        Args:
            num_threads: onnxruntime intra-op threads (default: all cores). In a Ray actor, pass
                the actor's ``num_cpus`` so actors do not oversubscribe the machine.

        Raises:
            ImportError: rapidocr/onnxruntime are not installed (names the extra to install).
            RuntimeError: the installed rapidocr wheel lacks its bundled models.
        """
        try:
            import onnxruntime  # noqa: F401  (rapidocr only fails on it at the first page)
            from rapidocr import RapidOCR
        except ImportError as err:
            raise ImportError(f"the rapidocr OCR engine needs the OCR extra: {OCR_EXTRA_HINT} ({err})") from None
        self.num_threads = num_threads
        self._ocr = RapidOCR(params=_rapidocr_params(num_threads))

    def read(self, image: Any) -> OcrPage:
        """OCR one page image (a PIL image, RGB).

        Args:
            image: The page.

        Returns:
            The page's lines and reading-order text (empty when no text is found).
        """
        start = time.perf_counter()
        result = self._ocr(image)
        lines = _to_lines(result)
        return OcrPage(lines=lines, text=reading_order_text(lines), seconds=time.perf_counter() - start)


def _bundled_models() -> dict[str, Path]:
    """The det/cls/rec ONNX files inside the rapidocr wheel (raises if one is missing)."""
    import rapidocr

    models_dir = Path(rapidocr.__file__).parent / "models"
    found = {}
    for task in ("det", "cls", "rec"):
        candidates = sorted(models_dir.glob(f"*_{task}_*.onnx"))
        if not candidates:
            raise RuntimeError(
                f"rapidocr has no bundled {task} model in {models_dir}; invoicelab never downloads models. "
                f"Reinstall the OCR extra: {OCR_EXTRA_HINT}"
            )
        found[task] = candidates[-1]
    return found


def _rapidocr_params(num_threads: int | None) -> dict[str, Any]:
    models = _bundled_models()
    params: dict[str, Any] = {
        "Global.log_level": "warning",
        "Det.model_path": str(models["det"]),
        "Cls.model_path": str(models["cls"]),
        "Rec.model_path": str(models["rec"]),
    }
    if num_threads:
        # rapidocr ignores values outside 1..os.cpu_count(); clamp so the request is honoured.
        threads = max(1, min(int(num_threads), os.cpu_count() or 1))
        params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
        params["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
    return params


def _to_lines(result: Any) -> list[OcrLine]:
    """rapidocr's output (quadrilateral boxes, texts, scores) as OcrLines with axis-aligned boxes."""
    boxes, txts, scores = getattr(result, "boxes", None), getattr(result, "txts", None), getattr(result, "scores", None)
    if boxes is None or txts is None or scores is None:
        return []
    lines = []
    for quad, text, score in zip(boxes, txts, scores):
        xs, ys = [float(p[0]) for p in quad], [float(p[1]) for p in quad]
        if text.strip():
            lines.append(OcrLine(text=text.strip(), box=(min(xs), min(ys), max(xs), max(ys)), score=float(score)))
    return lines


@functools.lru_cache(maxsize=4)
def get_engine(num_threads: int | None = None) -> RapidOcrEngine:
    """A per-process shared engine (models load once per process and thread setting)."""
    return RapidOcrEngine(num_threads=num_threads)


def ocr_engine(engine: str, num_threads: int | None = None, languages: str = "") -> Any:
    """The engine that OCRs page images for ``engine`` (pdf-text falls back to rapidocr).

    Raises:
        ImportError: The OCR extra is missing.
        TesseractUnavailable: tesseract or one of ``languages`` is not installed (names the fix).
    """
    if engine == "tesseract":
        from invoicelab.backends.ocr_tesseract import TesseractEngine

        return TesseractEngine(languages=languages or "eng", num_threads=num_threads)
    return get_engine(num_threads)


def ocr_engines_status() -> dict[str, str]:
    """Per OCR engine, "ok (version)" or the reason it cannot run here (for ``invoicelab models``)."""
    from invoicelab.backends.ocr_tesseract import status as tesseract_status

    rapid = _rapidocr_status()
    pdf = "ok (PDF text layer; pages without one: rapidocr)" if rapid.startswith("ok") else (
        f"pages without a text layer need rapidocr: {rapid}")
    return {"rapidocr": rapid, "tesseract": tesseract_status(), "pdf-text": pdf}


def _rapidocr_status() -> str:
    try:
        import onnxruntime  # noqa: F401
        import rapidocr  # noqa: F401

        _bundled_models()
    except ImportError as err:
        return f"needs the OCR extra: {OCR_EXTRA_HINT} ({err})"
    except RuntimeError as err:
        return str(err)
    return f"ok (rapidocr {version('rapidocr')}, bundled PP-OCR models)"


def page_text(
    path: Path,
    engine: str = "rapidocr",
    dpi: int = 150,
    max_pages: int = 2,
    max_pixels: int = 40_000_000,
    num_threads: int | None = None,
    languages: str = "",
) -> str:
    """A document's text for a text-only backend, pages joined with a blank line.

    Args:
        path: An image or a PDF.
        engine: ``rapidocr`` or ``tesseract`` (OCR every page; PDF pages are rendered first) or
            ``pdf-text`` (a PDF's own text layer; pages without one, and images, are OCR'd by rapidocr).
        dpi: Resolution at which PDF pages are rendered for OCR.
        max_pages: Read at most this many pages.
        max_pixels: Refuse images or rendered pages larger than this.
        num_threads: Threads for OCR (onnxruntime's, or tesseract's OpenMP limit).
        languages: tesseract's language packs joined by ``+`` ("" = ``eng``); ignored by the others.

    Returns:
        The text, pages joined with ``\\n\\n``.

    Raises:
        DocumentError: The document cannot be read.
        ValueError: ``engine`` is not one of ``ENGINES``.
        ImportError: OCR is needed and the OCR extra is not installed.
        TesseractUnavailable: ``tesseract`` is asked for and cannot run here (names the fix).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown OCR engine {engine!r}; available: {', '.join(ENGINES)}")
    path = Path(path)
    if engine == "pdf-text" and file_kind(path) == "pdf":
        texts = pdf_text(path, max_pages=max_pages)
        if all(_has_text_layer(t) for t in texts):
            return "\n\n".join(t.strip() for t in texts)
        images = load_pages(path, dpi=dpi, max_pages=max_pages, max_pixels=max_pixels)
        ocr = get_engine(num_threads)
        pages = [t if _has_text_layer(t) else ocr.read(img).text for t, img in zip(texts, images)]
        return "\n\n".join(t.strip() for t in pages)
    images = load_pages(path, dpi=dpi, max_pages=max_pages, max_pixels=max_pixels)
    ocr = ocr_engine(engine, num_threads, languages)
    return "\n\n".join(ocr.read(img).text for img in images)


def _has_text_layer(text: str) -> bool:
    return sum(ch.isalnum() for ch in text) >= MIN_TEXT_LAYER_CHARS
