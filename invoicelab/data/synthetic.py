"""Deterministic synthetic invoices: random but plausible data, rendered with Pillow, with exact ground truth.

``generate(out_dir, n, seed, spec)`` writes ``out_dir/images/synth_NNNNN.jpg`` and ``out_dir/gt.jsonl`` in the
same format as the shared SROIE set: one JSON object per line,
``{"doc_id", "file", "fields", "normalized", "meta"}``.

Fields (``SYNTHETIC_FIELDS`` holds their FieldSpec arguments):

- ``invoice_number``: the invoice id as printed (``INV-2024-0012``, ``2024/118``, ``A-99812``, ``F2024-00017``).
- ``invoice_date``, ``due_date``: printed in one of several formats (``2024-03-05``, ``05/03/2024``,
  ``March 5, 2024``, ``05.03.2024``, ``5 Mar 2024``); normalised to ISO. Numeric dates are always day-first.
- ``vendor_name``, ``customer_name``: company names as printed.
- ``currency``: printed as the symbol seen in the amounts (``$``, ``€``, ``RM``) or as the code where the invoice
  prints ``Currency: EUR`` or code-style amounts; normalised to the ISO code (USD, EUR, GBP, CHF, MYR, INR).
- ``subtotal``, ``tax``, ``total``: printed with currency and local number format (``$1,234.56``,
  ``1.234,56 €``, ``CHF 1'234.56``, ``Rs. 1,23,456.78``); normalised to ``"1234.56"``.

``fields`` holds the values exactly as drawn on the page; ``normalized`` the canonical values; ``meta`` the
layout, fonts, formats, line items and perturbations (informational). All arithmetic is exact in integer cents:
sum of line amounts = subtotal, tax = round_half_up(subtotal * rate), subtotal + tax = total.

The content and look of each invoice are drawn in ``synthetic_invoice`` from the tables of
``synthetic_regions``; ``synthetic_layout`` draws the page. This module perturbs the page and writes the files.

Determinism: document ``i`` of seed ``s`` depends only on ``(s, i)`` for its content and on ``(s, i, spec)`` for
its pixels; never on ``n``, the clock or global random state. This module never imports Ray, never reads the
network and writes only inside ``out_dir``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from invoicelab.config import SyntheticSpec
from invoicelab.data.synthetic_invoice import make_invoice, make_look, normalized_fields, printed_fields, to_printed
from invoicelab.data.synthetic_layout import Page, render
from invoicelab.data.synthetic_regions import decimal_string

SYNTHETIC_FIELDS: dict[str, dict] = {
    "invoice_number": {"type": "id", "description": "The invoice's number as printed next to its label "
                       "(Invoice No., Invoice #).", "example": "INV-2024-0012"},
    "invoice_date": {"type": "date", "description": "Date the invoice was issued.", "example": "05/03/2024",
                     "day_first": True},
    "due_date": {"type": "date", "description": "Date by which payment is due.", "example": "04/04/2024",
                 "day_first": True},
    "vendor_name": {"type": "text", "description": "Name of the company that issued the invoice (the seller).",
                    "example": "Northwind Logistics GmbH", "match": "fuzzy"},
    "customer_name": {"type": "text", "description": "Name of the company billed (Bill To).",
                      "example": "Harbor Design Ltd", "match": "fuzzy"},
    "currency": {"type": "currency", "description": "Currency of the amounts, as an ISO 4217 code.",
                 "example": "EUR"},
    "subtotal": {"type": "amount", "description": "Sum of the line items before tax.", "example": "1,234.50"},
    "tax": {"type": "amount", "description": "Tax amount (VAT, GST, sales tax).", "example": "98.76"},
    "total": {"type": "amount", "description": "Total amount due, tax included.", "example": "1,333.26"},
}
"""Field name -> ``FieldSpec`` keyword arguments for experiments on synthetic data."""

def perturb(image: Image.Image, spec: SyntheticSpec, rng: random.Random) -> tuple[Image.Image, dict]:
    """Rotate, blur and add noise to a page, each drawn uniformly up to the spec's maximum.

    Args:
        image: The clean RGB page.
        spec: Maximum rotation (degrees), blur radius (px) and noise amplitude (fraction of 255).
        rng: The document's perturbation generator (separate from its content generator).

    Returns:
        The perturbed page (same size) and the values applied.
    """
    applied = {"rotation": round(rng.uniform(-spec.rotation, spec.rotation), 3),
               "blur": round(rng.uniform(0, spec.blur), 3), "noise": round(rng.uniform(0, spec.noise), 4),
               "jpeg_quality": spec.jpeg_quality}
    noise_seed = rng.getrandbits(64)
    if applied["rotation"]:
        image = image.rotate(applied["rotation"], resample=Image.Resampling.BICUBIC, expand=False,
                             fillcolor=(255, 255, 255))
    if applied["blur"]:
        image = image.filter(ImageFilter.GaussianBlur(applied["blur"]))
    if applied["noise"]:
        amplitude = applied["noise"] * 255
        pixels = np.asarray(image, dtype=np.float32)
        grain = np.random.default_rng(noise_seed).random(pixels.shape[:2], dtype=np.float32) * 2 - 1
        pixels += (grain * amplitude)[..., None]  # grey grain, like scanner noise
        image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")
    return image, applied


def build_document(seed: int, i: int, spec: SyntheticSpec) -> tuple[Image.Image, dict, Page]:
    """Build document ``i`` of ``seed``: its page, its gt.jsonl record and the strings drawn.

    Args:
        seed: Generator seed.
        i: Document index; the content depends only on ``(seed, i)``.
        spec: Resolution and perturbations.

    Returns:
        (final page image, gt record, the clean rendered ``Page`` with the strings drawn and their boxes).
    """
    rng = random.Random(f"{seed}-{i}")
    inv = make_invoice(rng)
    look = make_look(rng, inv)
    page = render(to_printed(inv, look), spec.dpi)
    image, applied = perturb(page.image, spec, random.Random(f"{seed}-{i}-perturb"))
    doc_id = f"synth_{i:05d}"
    items = [{"description": it.description, "quantity": it.quantity, "unit_price": decimal_string(it.unit_cents),
              "amount": decimal_string(it.amount_cents)} for it in inv.items]
    meta = {"width": image.width, "height": image.height, "dpi": spec.dpi, "layout": look.layout,
            "font": look.family if look.layout != "ledger" else "mono", "date_format": look.date_format,
            "number_format": inv.region.number, "currency_style": "code" if look.code_style else "symbol",
            "tax_rate": f"{inv.rate.normalize():f}", "n_items": len(items), "items": items,
            "labels": look.labels, "perturbations": applied, "seed": seed, "index": i}
    record = {"doc_id": doc_id, "file": f"images/{doc_id}.jpg", "fields": printed_fields(inv, look),
              "normalized": normalized_fields(inv), "meta": meta}
    return image, record, page


def generate(out_dir: Path, n: int, seed: int, spec: SyntheticSpec | None = None) -> Path:
    """Write ``n`` synthetic invoices and their ground truth.

    Args:
        out_dir: Folder to write into (created if missing); existing files of the same names are replaced.
        n: Number of invoices.
        seed: Generator seed; same ``(n, seed, spec)`` gives byte-identical gt.jsonl and images.
        spec: Resolution and perturbation knobs (default: 100 dpi, clean pages, JPEG quality 90).

    Returns:
        The path of ``out_dir/gt.jsonl``.

    Raises:
        ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    spec = spec or SyntheticSpec()
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        image, record, _ = build_document(seed, i, spec)
        image.save(out_dir / record["file"], "JPEG", quality=spec.jpeg_quality)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    gt_path = out_dir / "gt.jsonl"
    gt_path.write_text("".join(lines), encoding="utf-8", newline="\n")
    return gt_path
