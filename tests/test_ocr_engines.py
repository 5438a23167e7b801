"""The second OCR engine (tesseract) beside rapidocr: reading, PDFs, the OCR cache key, set-up errors.

Tests marked ``model`` run the real Debian ``tesseract-ocr`` binary (and rapidocr's bundled models) on
synthetic invoices; they skip, saying why, where the binary is not installed. The missing-binary tests
point pytesseract at a path that does not exist, so they run everywhere pytesseract is installed.
"""

from __future__ import annotations

import json
import shutil
import stat
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from invoicelab.actors.pages import PageReader, TextSetting, engine_versions
from invoicelab.backends import ocr_tesseract
from invoicelab.backends.ocr import ocr_engines_status, page_text
from invoicelab.config import SyntheticSpec
from invoicelab.data.synthetic import generate

pytesseract = pytest.importorskip("pytesseract", reason="needs the OCR extra: pip install 'invoicelab[ocr]'")
TESSERACT = ocr_tesseract.status()
needs_tesseract = pytest.mark.skipif(not TESSERACT.startswith("ok"), reason=f"tesseract cannot run here: {TESSERACT}")


@pytest.fixture(scope="module")
def invoices(tmp_path_factory) -> list[dict]:
    """Three clean synthetic invoices (A4 at 150 dpi), with their ground truth and absolute paths."""
    folder = tmp_path_factory.mktemp("synthetic")
    gt = generate(folder, 3, seed=5, spec=SyntheticSpec(dpi=150))
    records = [json.loads(line) for line in gt.read_text().splitlines()]
    return [{**r, "path": str(folder / r["file"])} for r in records]


def amount_digits(value: str) -> str:
    """The printed amount without currency: 'USD 31,885.80' -> '31,885.80'."""
    return next(part for part in value.split() if any(ch.isdigit() for ch in part))


def reads(value: str, text: str) -> bool:
    """``value`` is in ``text``, spacing aside (tesseract spaces out monospaced 'INV- 2025 -7442')."""
    return "".join(value.split()) in "".join(text.split())


def doc_rows(paths: list[str]) -> pa.Table:
    """Document records as the page stage receives them."""
    schema = pa.schema([("doc_id", pa.string()), ("path", pa.string()), ("error", pa.string())])
    return pa.Table.from_pylist([{"doc_id": f"d{i}", "path": p, "error": None} for i, p in enumerate(paths)], schema)


def setting(engine: str, languages: str = "") -> dict:
    return asdict(TextSetting(engine, dpi=150, max_pages=2, max_pixels=40_000_000, ocr_languages=languages))


# --- tesseract reads images and PDFs --------------------------------------------------------------


@pytest.mark.model
@needs_tesseract
def test_tesseract_reads_the_invoice_number_and_total(invoices):
    for inv in invoices:
        text = page_text(Path(inv["path"]), engine="tesseract", languages="eng", num_threads=1)
        assert reads(inv["fields"]["invoice_number"], text), text
        assert reads(amount_digits(inv["fields"]["total"]), text), text


@pytest.mark.model
@needs_tesseract
def test_tesseract_reads_a_scanned_pdf_page(invoices, tmp_path):
    inv = invoices[0]
    pdf = tmp_path / "scan.pdf"
    Image.open(inv["path"]).convert("RGB").save(pdf, resolution=150)  # an image-only PDF: no text layer
    text = page_text(pdf, engine="tesseract", dpi=150, num_threads=1)
    assert reads(inv["fields"]["invoice_number"], text), text
    assert reads(amount_digits(inv["fields"]["total"]), text), text


@pytest.mark.model
@needs_tesseract
def test_a_missing_language_pack_names_its_debian_package(invoices):
    with pytest.raises(ocr_tesseract.TesseractUnavailable, match="apt-get install tesseract-ocr-xyz"):
        page_text(Path(invoices[0]["path"]), engine="tesseract", languages="eng+xyz")


# --- the OCR cache key ----------------------------------------------------------------------------


@pytest.mark.model
@needs_tesseract
def test_cache_entries_are_per_engine_and_languages_and_reused_for_the_same_setting(invoices, tmp_path):
    batch = doc_rows([invoices[0]["path"]])
    tess = PageReader(setting("tesseract", "eng"), cache_dir=str(tmp_path), num_threads=1)
    first = tess(batch).to_pylist()[0]
    again = PageReader(setting("tesseract", "eng"), cache_dir=str(tmp_path), num_threads=1)(batch).to_pylist()[0]
    assert first["error"] is None and not first["ocr_cached"]
    assert again["ocr_cached"] and again["text"] == first["text"]
    rapid = PageReader(setting("rapidocr"), cache_dir=str(tmp_path), num_threads=1)(batch).to_pylist()[0]
    assert not rapid["ocr_cached"] and rapid["text"] != first["text"]
    other_langs = PageReader(setting("tesseract", "eng+osd"), cache_dir=str(tmp_path))
    sha = first["doc_sha256"]
    keys = {tess._key(sha), other_langs._key(sha), PageReader(setting("rapidocr"), str(tmp_path))._key(sha)}
    assert len(keys) == 3
    assert len(list((tmp_path / "ocr").rglob("*.json"))) == 2  # one entry per engine


@needs_tesseract
def test_a_new_tesseract_binary_or_language_pack_changes_the_cache_key(tmp_path, monkeypatch):
    real = ocr_tesseract.binary_version()
    before = engine_versions("tesseract", "eng")
    assert before["tesseract"] == real and before["pytesseract"] != "absent"
    assert len(before["tessdata:eng"]) == 16 and before["tesseract_config"] == ocr_tesseract.CONFIG
    assert engine_versions("tesseract", "eng+xyz")["tessdata:xyz"] == "absent"
    newer = tmp_path / "tesseract"  # the same binary, reporting another version
    real_cmd = shutil.which(pytesseract.pytesseract.tesseract_cmd)
    newer.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "tesseract 9.9.9"; exit 0; fi\n'
                     f'exec {real_cmd} "$@"\n')
    newer.chmod(newer.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(newer))
    after = engine_versions("tesseract", "eng")
    assert after["tesseract"] == "9.9.9" and after["tessdata:eng"] == before["tessdata:eng"]
    sha = "0" * 64
    monkeypatch.undo()
    old_key = PageReader(setting("tesseract", "eng"), str(tmp_path))._key(sha)
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(newer))
    assert PageReader(setting("tesseract", "eng"), str(tmp_path))._key(sha) != old_key


# --- tesseract missing ----------------------------------------------------------------------------


@pytest.fixture
def no_tesseract(tmp_path, monkeypatch):
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "no" / "tesseract"))


def test_missing_binary_names_the_apt_package(no_tesseract, tmp_path):
    image = tmp_path / "page.png"
    Image.new("RGB", (200, 100), "white").save(image)
    with pytest.raises(ocr_tesseract.TesseractUnavailable, match=r"apt-get install tesseract-ocr"):
        page_text(image, engine="tesseract")
    assert "apt-get install tesseract-ocr" in ocr_engines_status()["tesseract"]
    assert engine_versions("tesseract", "eng")["tesseract"] == "absent"


def test_missing_binary_makes_every_document_an_ocr_error_row(no_tesseract, tmp_path):
    image = tmp_path / "page.png"
    Image.new("RGB", (200, 100), "white").save(image)
    reader = PageReader(setting("tesseract", "eng"), cache_dir=str(tmp_path / "cache"))
    assert "apt-get install tesseract-ocr" in reader.setup_error
    rows = reader(doc_rows([str(image), str(image), str(tmp_path / "absent.png")])).to_pylist()
    assert [r["error_stage"] for r in rows] == ["ocr", "ocr", "ocr"]
    assert all(r["error"] == reader.setup_error for r in rows)
    assert not (tmp_path / "cache" / "ocr").exists()


def test_engines_status_reports_each_engine(no_tesseract):
    status = ocr_engines_status()
    assert set(status) == {"rapidocr", "tesseract", "pdf-text"}
    assert not status["tesseract"].startswith("ok")
    assert status["rapidocr"].startswith("ok") or "invoicelab[ocr]" in status["rapidocr"]


@needs_tesseract
def test_engines_status_names_the_tesseract_version_here():
    assert ocr_engines_status()["tesseract"] == TESSERACT
    assert TESSERACT.startswith(f"ok (tesseract {ocr_tesseract.binary_version()}")


# --- both engines through the Ray pipeline --------------------------------------------------------


@pytest.mark.ray
@pytest.mark.model
@needs_tesseract
def test_rules_per_engine_end_to_end(ray_cluster, private_cache, tmp_path):
    from invoicelab.config import parse_experiment
    from invoicelab.orchestrator.pipeline import run_experiment
    from invoicelab.orchestrator.plan import text_setting

    exp = parse_experiment({
        "name": "ocr-engines", "kind": "model", "output_dir": str(tmp_path / "{name}"),
        "dataset": {"source": "synthetic", "n": 3, "seed": 5},
        "fields": {"invoice_number": "id", "total": "amount"},
        "page_stage": {"num_cpus": 1, "actors": 1},
        "variants": [{"name": "rules-rapidocr", "backend": "rules", "ocr": {"engine": "rapidocr"}},
                     {"name": "rules-tesseract", "backend": "rules", "ocr": {"engine": "tesseract"}}],
    })
    df = pd.read_parquet(run_experiment(exp).results)
    assert df["error"].isna().all(), df["error"].dropna().tolist()
    for name in ("rules-rapidocr", "rules-tesseract"):
        docs = df[df["variant"] == name]["doc_id"]
        assert docs.is_unique and len(docs) == 3
    by_variant = df.groupby("variant")["match_total"].sum()
    assert by_variant["rules-rapidocr"] >= 2 and by_variant["rules-tesseract"] >= 2, by_variant.to_dict()
    texts = {}
    for v in exp.variants:  # the OCR text each engine gave, from the page stage's cache
        reader = PageReader(asdict(text_setting(exp, v)), cache_dir=str(private_cache))
        for sha in sorted(set(df["doc_sha256"])):
            texts.setdefault(v.name, []).append(json.loads(reader._key(sha).read_text())["text"])
    assert all(a != b for a, b in zip(texts["rules-rapidocr"], texts["rules-tesseract"]))
