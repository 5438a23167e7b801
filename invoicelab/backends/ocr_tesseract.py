"""Tesseract OCR (Debian's ``tesseract-ocr`` binary, called through pytesseract) as a page engine.

The binary and its language packs (``/usr/share/tesseract-ocr/*/tessdata/*.traineddata``) come from
the system package manager, so nothing is downloaded at run time. ``identity`` names everything that
changes the text (binary and pytesseract versions, the language packs' digests, the fixed command-line
settings), for the OCR cache key. A missing binary or language pack is a ``TesseractUnavailable``
whose message names the install command.

This module must never import pytesseract at import time (it is in the OCR extra), never touch the
network, and never import Ray.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from invoicelab.backends.ocr import OCR_EXTRA_HINT, OcrLine, OcrPage

APT_HINT = "apt-get install tesseract-ocr"
# Page segmentation mode 6: "a single uniform block of text", so a receipt's label and its amount
# stay on one line. On the 20 shared SROIE receipts the rules baseline got 80% of field values right
# with it, against 76% with 4 (one column of variable sizes) or 3 (automatic layout) and 69% with 11
# (sparse text); the difference is a few receipts, so it is a choice, not a law.
PSM = 6
CONFIG = f"--psm {PSM}"
_TESSDATA_LINE = re.compile(r'"([^"]+)"')


class TesseractUnavailable(RuntimeError):
    """Tesseract cannot run here: no binary, no pytesseract, or a language pack is missing."""


class TesseractEngine:
    """One page image at a time through the ``tesseract`` binary, text lines in reading order."""

    def __init__(self, languages: str = "eng", num_threads: int | None = None):
        """Check the binary and the language packs once.

        Args:
            languages: Language packs joined by ``+`` (``eng``, ``eng+deu``).
            num_threads: OpenMP threads tesseract may use (``OMP_THREAD_LIMIT``); None: its default.

        Raises:
            TesseractUnavailable: pytesseract, the binary or a language pack is missing.
        """
        self.languages = languages or "eng"
        self.num_threads = num_threads
        self.version = check(self.languages)

    def read(self, image: Any) -> OcrPage:
        """OCR one page image (a PIL image).

        Args:
            image: The page.

        Returns:
            Its lines (with boxes and confidences in 0..1) and their text, one line per text line.
        """
        import pytesseract

        start = time.perf_counter()
        with _thread_limit(self.num_threads):
            data = pytesseract.image_to_data(image, lang=self.languages, config=CONFIG,
                                             output_type=pytesseract.Output.DICT)
        lines = _to_lines(data)
        return OcrPage(lines=lines, text="\n".join(ln.text for ln in lines), seconds=time.perf_counter() - start)


def _to_lines(data: dict[str, list]) -> list[OcrLine]:
    """Words of ``image_to_data`` joined into tesseract's own lines, in its reading order."""
    lines: dict[tuple[int, int, int, int], list[int]] = {}
    for i, word in enumerate(data["text"]):
        if str(word).strip():
            key = (data["page_num"][i], data["block_num"][i], data["par_num"][i], data["line_num"][i])
            lines.setdefault(key, []).append(i)
    out = []
    for words in lines.values():  # dicts keep insertion order: tesseract's reading order
        x0 = min(data["left"][i] for i in words)
        y0 = min(data["top"][i] for i in words)
        x1 = max(data["left"][i] + data["width"][i] for i in words)
        y1 = max(data["top"][i] + data["height"][i] for i in words)
        confs = [max(float(data["conf"][i]), 0.0) / 100 for i in words]
        text = " ".join(str(data["text"][i]).strip() for i in words)
        out.append(OcrLine(text=text, box=(float(x0), float(y0), float(x1), float(y1)), score=sum(confs) / len(confs)))
    return out


@contextlib.contextmanager
def _thread_limit(num_threads: int | None) -> Iterator[None]:
    """``OMP_THREAD_LIMIT`` for the tesseract processes started inside (pytesseract passes os.environ)."""
    if not num_threads:
        yield
        return
    old = os.environ.get("OMP_THREAD_LIMIT")
    os.environ["OMP_THREAD_LIMIT"] = str(max(1, int(num_threads)))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OMP_THREAD_LIMIT", None)
        else:
            os.environ["OMP_THREAD_LIMIT"] = old


def _pytesseract() -> Any:
    try:
        import pytesseract
    except ImportError as err:
        raise TesseractUnavailable(f"the tesseract OCR engine needs the OCR extra: {OCR_EXTRA_HINT} ({err})") from None
    return pytesseract


def check(languages: str = "eng") -> str:
    """The binary's version, after checking that it runs and has every language pack asked for.

    Args:
        languages: Language packs joined by ``+``.

    Returns:
        The version, e.g. ``5.3.0``.

    Raises:
        TesseractUnavailable: With the reason and the install command.
    """
    found = installed_languages()
    missing = [lang for lang in (languages or "eng").split("+") if lang not in found]
    if missing:
        packs = " ".join(f"tesseract-ocr-{lang.replace('_', '-')}" for lang in missing)
        installed = ", ".join(sorted(found)) or "none"
        raise TesseractUnavailable(f"tesseract has no language pack for {', '.join(missing)} (installed: {installed}); "
                                   f"install it: apt-get install {packs}")
    return binary_version()


def binary_version() -> str:
    """The tesseract binary's version (``pytesseract.tesseract_cmd``).

    Raises:
        TesseractUnavailable: pytesseract or the binary is missing.
    """
    return _binary_version(_pytesseract().pytesseract.tesseract_cmd)


@functools.lru_cache(maxsize=8)
def _binary_version(cmd: str) -> str:
    pytesseract = _pytesseract()
    try:
        return str(pytesseract.get_tesseract_version())
    except pytesseract.TesseractNotFoundError:
        raise TesseractUnavailable(f"the tesseract binary {cmd!r} is not installed or not on PATH; "
                                   f"install it: {APT_HINT} (Debian/Ubuntu, as root)") from None


def installed_languages() -> dict[str, Path]:
    """Language pack name -> its ``.traineddata`` file, as the binary reports them.

    Raises:
        TesseractUnavailable: pytesseract or the binary is missing.
    """
    return dict(_installed_languages(_pytesseract().pytesseract.tesseract_cmd))


@functools.lru_cache(maxsize=8)
def _installed_languages(cmd: str) -> tuple[tuple[str, Path], ...]:
    binary_version()  # a clear error when the binary is missing
    out = subprocess.run([cmd, "--list-langs"], capture_output=True, text=True, check=False)
    lines = (out.stdout + out.stderr).splitlines()
    folder = next((Path(m.group(1)) for ln in lines if (m := _TESSDATA_LINE.search(ln))), None)
    names = [ln.strip() for ln in lines if re.fullmatch(r"[A-Za-z_]+", ln.strip())]
    return tuple((name, folder / f"{name}.traineddata") if folder else (name, Path(name)) for name in names)


def identity(languages: str = "") -> dict[str, str]:
    """What makes tesseract's text what it is: versions, settings and language packs.

    Args:
        languages: The packs used, joined by ``+``; "" names every installed pack.

    Returns:
        ``tesseract`` (binary version), ``pytesseract``, ``tesseract_config`` and one
        ``tessdata:<lang>`` sha256 prefix per pack; "absent" where the binary or a pack is missing.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        py_version = version("pytesseract")
    except PackageNotFoundError:
        py_version = "absent"
    out = {"pytesseract": py_version, "tesseract_config": CONFIG}
    try:
        out["tesseract"] = binary_version()
        packs = installed_languages()
    except TesseractUnavailable:
        return {**out, "tesseract": "absent"}
    for lang in (languages.split("+") if languages else sorted(packs)):
        out[f"tessdata:{lang}"] = _file_digest(packs[lang]) if lang in packs else "absent"
    return out


def _file_digest(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return "absent"
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 prefix of a language pack (size and mtime in the cache key: a reinstalled pack is re-read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def status() -> str:
    """"ok (tesseract X, packs: ...)" or why tesseract cannot run here."""
    try:
        version = check("eng")
        return f"ok (tesseract {version}; language packs: {', '.join(sorted(installed_languages()))})"
    except TesseractUnavailable as err:
        return str(err)
