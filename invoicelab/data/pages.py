"""Document loading: a receipt image or a PDF becomes a list of RGB page images, or its text layer.

Every way a document can fail to load (missing, empty, truncated, not what its name says, a
decompression bomb, a corrupt or password-protected PDF, a page too large to render) becomes a
``DocumentError`` whose message is the readable reason stored in the result row's ``error``
column. This module must never raise another exception type for a bad document, never decode an
image whose header already says it is too large, and never modify Pillow's global settings
(``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``). PDFium is not thread-safe:
call this from one thread per process (Ray actors are processes).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# Errors Pillow raises on damaged image data (truncated streams, bad chunks, bad headers).
_PIL_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)

# Leading bytes of the image formats invoices and receipts come in.
_IMAGE_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"BM",  # BMP
)
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".bmp", ".webp"}
_PDF_MAGIC = b"%PDF-"
_PDF_HEADER_WINDOW = 1024  # PDF readers accept junk before %PDF- within the first KiB


class DocumentError(Exception):
    """A document that cannot be read; ``str(e)`` is a readable reason for the error row."""


def _head(path: Path, n: int = _PDF_HEADER_WINDOW) -> bytes:
    """The first ``n`` bytes of an existing, non-empty file; DocumentError otherwise."""
    path = Path(path)
    if not path.exists():
        raise DocumentError(f"file not found: {path}")
    if not path.is_file():
        raise DocumentError(f"not a file: {path}")
    try:
        with path.open("rb") as fh:
            head = fh.read(n)
    except OSError as err:
        raise DocumentError(f"cannot read file: {path}: {err.strerror or err}") from None
    if not head:
        raise DocumentError(f"empty file: {path}")
    return head


def _looks_like_image(head: bytes) -> bool:
    return head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def file_kind(path: Path) -> str:
    """Whether a document is an image or a PDF, decided from its leading bytes, not its name.

    Args:
        path: The document file.

    Returns:
        ``'pdf'`` or ``'image'``.

    Raises:
        DocumentError: The file is missing, empty, or neither a PDF nor an image Pillow can identify.
    """
    head = _head(path)
    if _PDF_MAGIC in head:
        return "pdf"
    if _looks_like_image(head):
        return "image"
    try:  # formats without a magic number in our table (e.g. PPM, ICO): ask Pillow's header parsers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb and corrupt-EXIF warnings: load_pages decides
            with Image.open(path):
                return "image"
    except Image.DecompressionBombError:
        return "image"  # an image, just too large; load_pages says so
    except (UnidentifiedImageError, *_PIL_DECODE_ERRORS):
        pass
    if Path(path).suffix.lower() == ".pdf":
        raise DocumentError(f"corrupt PDF: no %PDF- header: {path}")
    raise DocumentError(f"not an image: {path} (neither an image format nor a PDF)")


def load_pages(path: Path, dpi: int = 150, max_pages: int = 2, max_pixels: int = 40_000_000) -> list[Image.Image]:
    """Load a document as RGB page images: an image's first frame, or a PDF's first pages rendered.

    Args:
        path: An image (JPEG, PNG, TIFF, ...) or a PDF.
        dpi: Resolution at which PDF pages are rendered.
        max_pages: Render at most this many PDF pages.
        max_pixels: Refuse an image, or a rendered page, with more pixels than this.

    Returns:
        One RGB image per page (one for an image file).

    Raises:
        DocumentError: The document cannot be read; the message says why.
    """
    path = Path(path)
    if file_kind(path) == "pdf":
        return _render_pdf(path, dpi=dpi, max_pages=max_pages, max_pixels=max_pixels)
    return [_load_image(path, max_pixels=max_pixels)]


def pdf_text(path: Path, max_pages: int = 2) -> list[str]:
    """The PDF's own text layer, one string per page ('' for a page without one).

    Args:
        path: A PDF file.
        max_pages: Read at most this many pages.

    Returns:
        Page texts with ``\\n`` line ends, in page order.

    Raises:
        DocumentError: The file is not a PDF, or the PDF cannot be read.
    """
    path = Path(path)
    if file_kind(path) != "pdf":
        raise DocumentError(f"not a PDF: {path}")
    texts = []
    with _open_pdf(path) as pdf:
        for index in range(min(len(pdf), max_pages)):
            texts.append(_page_text(pdf, index))
    return texts


# --- images ---------------------------------------------------------------------------------


def _load_image(path: Path, max_pixels: int) -> Image.Image:
    """Decode an image's first frame as RGB, checking its size from the header first."""
    try:
        with warnings.catch_warnings():
            # Our max_pixels check below is the policy, not Pillow's bomb warning; corrupt-EXIF
            # warnings on damaged files would only be log noise (the error row says what failed).
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                _check_pixels(img.size, max_pixels, what="image")
                img.seek(0)
                img.load()
                return _to_rgb(img)
    except DocumentError:
        raise
    except Image.DecompressionBombError as err:
        raise DocumentError(
            f"image too large: {err} (Pillow's decompression-bomb limit; max_pixels is {max_pixels})") from None
    except UnidentifiedImageError:
        raise DocumentError(f"truncated or corrupt image: {path}: unreadable image header") from None
    except _PIL_DECODE_ERRORS as err:
        raise DocumentError(f"truncated or corrupt image: {path}: {err}") from None
    except Exception as err:  # noqa: BLE001 - Pillow plugins raise many types on hostile bytes; all mean "corrupt"
        raise DocumentError(f"truncated or corrupt image: {path}: {type(err).__name__}: {err}") from None


def _check_pixels(size: tuple[int, int], max_pixels: int, what: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise DocumentError(
            f"{what} too large: {width} x {height} pixels exceeds max_pixels {max_pixels} "
            f"({width * height} > {max_pixels})"
        )
    if width <= 0 or height <= 0:
        raise DocumentError(f"{what} has no pixels: {width} x {height}")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Upright RGB copy (EXIF orientation applied, alpha dropped onto white)."""
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a broken EXIF block leaves the pixels usable, unrotated
        pass
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if img.mode.startswith("I;16"):
        img = img.point(lambda v: v / 256).convert("L")  # 16-bit grey: keep the top 8 bits
    return img.convert("RGB")


# --- PDFs -----------------------------------------------------------------------------------


def _open_pdf(path: Path):
    """A ``pypdfium2.PdfDocument`` (use it in a ``with`` block); DocumentError if it will not open."""
    import pypdfium2 as pdfium  # imported here: PDFium is only needed for PDFs

    try:
        pdf = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as err:
        if err.err_code == pdfium.raw.FPDF_ERR_PASSWORD:
            raise DocumentError(f"encrypted PDF (password required): {path}") from None
        if err.err_code == pdfium.raw.FPDF_ERR_SECURITY:
            raise DocumentError(f"encrypted PDF (unsupported security handler): {path}") from None
        raise DocumentError(f"corrupt PDF: {path}: {err}") from None
    except Exception as err:  # noqa: BLE001 - whatever PDFium's loader trips on, the file is unreadable
        raise DocumentError(f"corrupt PDF: {path}: {type(err).__name__}: {err}") from None
    if len(pdf) == 0:
        pdf.close()
        raise DocumentError(f"corrupt PDF: {path}: no pages")
    return pdf


def _render_pdf(path: Path, dpi: int, max_pages: int, max_pixels: int) -> list[Image.Image]:
    with _open_pdf(path) as pdf:
        return [_render_page(pdf, index, dpi, max_pixels) for index in range(min(len(pdf), max_pages))]


def _render_page(pdf, index: int, dpi: int, max_pixels: int) -> Image.Image:
    """Render one page, checking the bitmap size from the page size before allocating it."""
    try:
        page = pdf[index]
    except Exception as err:  # noqa: BLE001 - a page PDFium cannot load is a corrupt document
        raise DocumentError(f"corrupt PDF: page {index + 1}: {err}") from None
    try:
        width_pt, height_pt = page.get_size()
        size = (round(width_pt * dpi / 72), round(height_pt * dpi / 72))
        _check_pixels(size, max_pixels, what=f"PDF page {index + 1} at {dpi} dpi")
        return _render_bitmap(page, dpi, index)
    finally:
        page.close()


def _render_bitmap(page, dpi: int, index: int) -> Image.Image:
    try:
        bitmap = page.render(scale=dpi / 72, rotation=0)
    except MemoryError:
        raise DocumentError(f"PDF page {index + 1} too large: out of memory rendering at {dpi} dpi") from None
    except Exception as err:  # noqa: BLE001 - a page PDFium cannot draw is a corrupt document, not a crash
        raise DocumentError(f"corrupt PDF: cannot render page {index + 1}: {err}") from None
    try:
        return bitmap.to_pil().convert("RGB")  # convert copies the pixels out of PDFium's buffer
    finally:
        bitmap.close()


def _page_text(pdf, index: int) -> str:
    try:
        page = pdf[index]
        try:
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_range()
            finally:
                textpage.close()
        finally:
            page.close()
    except Exception as err:  # noqa: BLE001 - as for rendering
        raise DocumentError(f"corrupt PDF: cannot read the text of page {index + 1}: {err}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")
