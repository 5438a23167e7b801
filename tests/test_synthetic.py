"""Synthetic invoice generator: determinism, exact arithmetic, ground truth on the page, perturbations."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invoicelab.config import FieldSpec, SyntheticSpec
from invoicelab.data.synthetic import SYNTHETIC_FIELDS, build_document, generate
from invoicelab.data.synthetic_layout import LAYOUTS, a4_size
from invoicelab.data.synthetic_regions import DATE_FORMATS, REGIONS, format_money, format_number

CLEAN = SyntheticSpec()


def _records(gt: Path) -> list[dict]:
    return [json.loads(line) for line in gt.read_text(encoding="utf-8").splitlines()]


def _images(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "images").glob("*.jpg"))}


def test_same_seed_gives_identical_bytes(tmp_path):
    spec = SyntheticSpec(rotation=2, blur=1, noise=0.05)
    a = generate(tmp_path / "a", 4, seed=7, spec=spec)
    b = generate(tmp_path / "b", 4, seed=7, spec=spec)
    assert a == tmp_path / "a" / "gt.jsonl"
    assert a.read_bytes() == b.read_bytes()
    assert _images(tmp_path / "a") == _images(tmp_path / "b")
    assert len(_images(tmp_path / "a")) == 4


def test_different_seed_gives_different_documents(tmp_path):
    a = _records(generate(tmp_path / "a", 4, seed=1))
    b = _records(generate(tmp_path / "b", 4, seed=2))
    assert [r["fields"] for r in a] != [r["fields"] for r in b]
    assert _images(tmp_path / "a") != _images(tmp_path / "b")


def test_document_does_not_depend_on_n(tmp_path):
    small = generate(tmp_path / "small", 3, seed=11)
    large = generate(tmp_path / "large", 12, seed=11)
    assert small.read_text().splitlines() == large.read_text().splitlines()[:3]
    big_images = _images(tmp_path / "large")
    for name, data in _images(tmp_path / "small").items():
        assert big_images[name] == data


def test_gt_format_matches_shared_datasets(tmp_path):
    records = _records(generate(tmp_path, 3, seed=0))
    for k, rec in enumerate(records):
        assert list(rec) == ["doc_id", "file", "fields", "normalized", "meta"]
        assert rec["doc_id"] == f"synth_{k:05d}"
        assert rec["file"] == f"images/{rec['doc_id']}.jpg"
        assert (tmp_path / rec["file"]).is_file()
        assert set(rec["fields"]) == set(rec["normalized"]) == set(SYNTHETIC_FIELDS)


def test_synthetic_fields_are_valid_field_specs():
    for name, kwargs in SYNTHETIC_FIELDS.items():
        assert FieldSpec(**kwargs).description, name
    required = {"invoice_number", "invoice_date", "due_date", "vendor_name", "customer_name", "currency",
                "subtotal", "tax", "total"}
    assert required <= set(SYNTHETIC_FIELDS)


def _cents(text: str) -> int:
    value = Decimal(text)
    assert value == value.quantize(Decimal("0.01")) and text.count(".") == 1 and len(text.split(".")[1]) == 2
    return int(value * 100)


@pytest.mark.parametrize("seed", range(4))
def test_arithmetic_is_exact(seed):
    for i in range(40):
        rec = build_document(seed, i, CLEAN)[1]
        norm, meta = rec["normalized"], rec["meta"]
        items = meta["items"]
        assert 1 <= len(items) == meta["n_items"] <= 15
        for item in items:
            assert item["quantity"] * _cents(item["unit_price"]) == _cents(item["amount"])
        subtotal, tax, total = _cents(norm["subtotal"]), _cents(norm["tax"]), _cents(norm["total"])
        assert sum(_cents(item["amount"]) for item in items) == subtotal
        expected_tax = (Decimal(subtotal) * Decimal(meta["tax_rate"]) / 100).quantize(Decimal(1), "ROUND_HALF_UP")
        assert tax == int(expected_tax)
        assert subtotal + tax == total


def test_dates_are_iso_and_due_not_before_issue():
    for i in range(60):
        norm = build_document(3, i, CLEAN)[1]["normalized"]
        issued = dt.date.fromisoformat(norm["invoice_date"])
        due = dt.date.fromisoformat(norm["due_date"])
        assert due >= issued
        assert norm["invoice_date"] == issued.isoformat()


def test_printed_values_match_normalized_values():
    for i in range(60):
        rec = build_document(4, i, CLEAN)[1]
        fields, norm, meta = rec["fields"], rec["normalized"], rec["meta"]
        fmt = DATE_FORMATS[meta["date_format"]]
        assert fields["invoice_date"] == fmt(dt.date.fromisoformat(norm["invoice_date"]))
        assert fields["due_date"] == fmt(dt.date.fromisoformat(norm["due_date"]))
        region = REGIONS[norm["currency"]]
        assert fields["currency"] in (region.code, region.symbol)
        for key in ("subtotal", "tax", "total"):
            assert fields[key] == format_money(_cents(norm[key]), region, meta["currency_style"] == "code")
        for key in ("invoice_number", "vendor_name", "customer_name"):
            assert fields[key] == norm[key]


def test_every_printed_field_is_drawn_on_the_page():
    for i in range(40):
        _, rec, page = build_document(5, i, CLEAN)
        for name, value in rec["fields"].items():
            assert any(value in text for text in page.drawn), (i, name, value)


def test_drawn_text_stays_on_page_and_never_overlaps():
    for i in range(40):
        image, rec, page = build_document(6, i, CLEAN)
        boxes = page.boxes
        for a, (x0, y0, x1, y1) in enumerate(boxes):
            assert x0 >= 0 and y0 >= 0 and x1 <= image.width and y1 <= image.height, page.drawn[a]
            for b in range(a + 1, len(boxes)):
                X0, Y0, X1, Y1 = boxes[b]
                overlap = min(x1, X1) - max(x0, X0) > 1 and min(y1, Y1) - max(y0, Y0) > 1
                assert not overlap, (rec["meta"]["layout"], page.drawn[a], page.drawn[b])


def test_number_formats():
    assert format_number(123456, "us") == "1,234.56"
    assert format_number(123456, "eu") == "1.234,56"
    assert format_number(123456, "ch") == "1'234.56"
    assert format_number(12345678, "in") == "1,23,456.78"
    assert format_number(5, "us") == "0.05"
    assert format_money(123456, REGIONS["USD"], False) == "$1,234.56"
    assert format_money(123456, REGIONS["EUR"], False) == "1.234,56 €"
    assert format_money(123456, REGIONS["MYR"], False) == "RM 1,234.56"
    assert format_money(123456, REGIONS["GBP"], True) == "GBP 1,234.56"


@pytest.mark.parametrize("dpi", [100, 150])
def test_images_open_with_a4_size(tmp_path, dpi):
    gt = generate(tmp_path, 3, seed=0, spec=SyntheticSpec(dpi=dpi))
    for rec in _records(gt):
        with Image.open(tmp_path / rec["file"]) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == a4_size(dpi) == (rec["meta"]["width"], rec["meta"]["height"])
    assert a4_size(100) == (827, 1169)


def test_clean_pages_are_unperturbed():
    image, rec, page = build_document(0, 0, CLEAN)
    assert rec["meta"]["perturbations"] == {"rotation": 0.0, "blur": 0.0, "noise": 0.0, "jpeg_quality": 90}
    assert image.tobytes() == page.image.tobytes()


def test_perturbations_change_pixels_but_keep_size():
    spec = SyntheticSpec(rotation=3, blur=1.5, noise=0.1)
    for i in range(3):
        clean = build_document(9, i, CLEAN)
        noisy = build_document(9, i, spec)
        assert noisy[1]["fields"] == clean[1]["fields"]
        assert noisy[0].size == clean[0].size
        diff = np.abs(np.asarray(noisy[0], dtype=np.int16) - np.asarray(clean[0], dtype=np.int16))
        assert diff.mean() > 1.0
        applied = noisy[1]["meta"]["perturbations"]
        assert abs(applied["rotation"]) <= 3 and 0 <= applied["blur"] <= 1.5 and 0 <= applied["noise"] <= 0.1


def test_several_layouts_and_fonts_appear():
    metas = [build_document(0, i, CLEAN)[1]["meta"] for i in range(30)]
    assert len({m["layout"] for m in metas}) >= 3
    assert {m["layout"] for m in metas} <= set(LAYOUTS)
    assert len({m["font"] for m in metas}) >= 3
    assert len({m["date_format"] for m in metas}) >= 3


def test_negative_n_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="n must be"):
        generate(tmp_path, -1, seed=0)
