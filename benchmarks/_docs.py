"""Shared inputs for the benchmarks: OCR text of a few synthetic invoices (cached), and the fields."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FIELDS = {
    "invoice_number": {"type": "id"},
    "invoice_date": {"type": "date", "day_first": True},
    "vendor_name": {"type": "text", "match": "fuzzy"},
    "total": {"type": "amount"},
}


def ocr_texts(n: int, seed: int = 7) -> list[str]:
    """OCR text of ``n`` synthetic invoices, as the page stage would produce it."""
    from invoicelab.backends.ocr import page_text
    from invoicelab.data.synthetic import generate

    folder = Path(tempfile.mkdtemp(prefix="invoicelab-bench-"))
    generate(folder, n=n, seed=seed)
    images = sorted((folder / "images").glob("*.jpg"))
    return [page_text(p, engine="rapidocr", num_threads=os.cpu_count()) for p in images]
