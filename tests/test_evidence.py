"""Evidence: whether a field's truth occurs in the text the model saw, per type, and the result rows that carry it."""

from __future__ import annotations

import json
from dataclasses import asdict

import pyarrow as pa
import pytest

from invoicelab.actors.extractor import Extractor, seen_text
from invoicelab.actors.llm_rows import RequestRows, ResultRows
from invoicelab.config import FieldSpec, parse_experiment
from invoicelab.evidence import in_text
from invoicelab.prompts import load_prompt
from invoicelab.variants import OcrLlmVariant, VllmVariant

AMOUNT = FieldSpec(type="amount")
DATE_DMY = FieldSpec(type="date", day_first=True)
DATE_MDY = FieldSpec(type="date")
ID = FieldSpec(type="id")
TEXT = FieldSpec(type="text")
CURRENCY = FieldSpec(type="currency")


@pytest.mark.parametrize(("page", "found"), [
    ("TOTAL RM 1,234.50", True),
    ("Total due: 1.234,50 EUR", True),
    ("Gesamt 1 234,50 €", True),
    ("TOTAL:1234.5", True),
    ("TOTAL 1,234.05", False),
    ("TOTAL 11234.50", False),  # digits around the truth do not make it present
    ("Tel 1234-50", False),
])
def test_amounts_are_found_as_numbers(page, found):
    assert in_text(page, "$1,234.50", "1234.50", AMOUNT) is found


def test_a_credit_note_amount_is_present_without_its_sign():
    assert in_text("CREDIT (12.00)", "-12.00", "-12.00", AMOUNT) is True


@pytest.mark.parametrize(("page", "found"), [
    ("Date: 12/03/2024 10:31", True),
    ("Date 2024-03-12", True),
    ("Issued 12 Mar 2024", True),
    ("Issued March 12, 2024", True),
    ("12.03.24", True),
    ("Date: 13/03/2024", False),
    ("Date: 03/12/2024", False),  # read day-first, as the field says: 3 December
    ("Paid 2024", False),
])
def test_dates_are_found_as_days(page, found):
    assert in_text(page, "12/03/2024", "2024-03-12", DATE_DMY) is found


def test_a_date_written_verbatim_counts_even_when_day_first_reads_it_otherwise():
    # SROIE writes 11/03/2018 for 11 March; with day_first off the page still holds the verbatim truth
    assert in_text("DATE 11/03/2018", "11/03/2018", "2018-03-11", DATE_MDY) is True


def test_ids_ignore_case_and_spacing():
    assert in_text("Invoice No: inv - 00123\nDate", "INV-00123", None, ID) is True
    assert in_text("Invoice No: INV-00124", "INV-00123", None, ID) is False


def test_text_is_a_casefolded_substring_across_line_breaks():
    address = "S117, SECOND FLOOR, AEON TEBRAU CITY"
    assert in_text("YHM AEON\ns117, second floor,\n  aeon tebrau city\nTEL", address, None, TEXT) is True
    assert in_text("S117, SECOND FLOOR, AEON TEBRAU", address, None, TEXT) is False


def test_currencies_as_written_or_as_their_code():
    assert in_text("TOTAL RM 13.10", "RM", "MYR", CURRENCY) is True
    assert in_text("Amount in EUR", "€", "EUR", CURRENCY) is True
    assert in_text("TOTAL $ 13.10", "RM", "MYR", CURRENCY) is False


@pytest.mark.parametrize(("page", "verbatim", "normalized"), [
    ("", "5.00", "5.00"), ("   ", "5.00", "5.00"), (None, "5.00", None), ("TOTAL 5.00", None, None),
    ("TOTAL 5.00", " ", ""),
])
def test_no_text_or_no_truth_is_unknown(page, verbatim, normalized):
    assert in_text(page, verbatim, normalized, AMOUNT) is None


@pytest.mark.parametrize("spec", [AMOUNT, DATE_DMY, ID, TEXT, CURRENCY])
def test_odd_values_never_raise(spec):
    for page in ("\x00\ud800 ", "9" * 5000, "1.2.3.4,5,6" * 100, "31/02/2024 99/99/9999"):
        assert in_text(page, "garbage ¤", "1e999", spec) in (True, False)


# ---------------------------------------------------------------- the text a model saw


def test_seen_text_is_what_the_backend_gives_its_model():
    vllm = VllmVariant(name="v", backend="vllm", model="org/m", ocr={"max_chars": 100})
    assert seen_text(vllm, "x" * 150) == "x" * 100
    assert seen_text(VllmVariant(name="v", backend="vllm", model="org/m", input="image"), "OCR text") is None
    assert seen_text(OcrLlmVariant(name="o", backend="ocr-llm", model="m", ocr={"max_chars": 100}), "y" * 150) == \
        "y" * 100
    assert seen_text(vllm, "") is None and seen_text(vllm, None) is None


# ---------------------------------------------------------------- result rows carry truth and evidence

FIELDS = {"invoice_number": "id", "total": {"type": "amount", "match": "exact"}}
TRUTH = {"invoice_number": "INV-7", "total": "$1,234.50"}
NORMALIZED = {"total": "1234.50"}
PAGES = {"seen": "Invoice INV-7\nTotal 1,234.50", "lost": "Invoice INV-7\nTotal 1,284.50", "blank": ""}


def _pages(**extra) -> pa.Table:
    return pa.Table.from_pylist([
        {"doc_id": doc_id, "path": f"/nowhere/{doc_id}.png", "error": "", "text": text,
         "fields_json": json.dumps(TRUTH), "normalized_json": json.dumps(NORMALIZED), "doc_sha256": "ab" * 32,
         "images_png": None, "ocr_s": 0.1, "ocr_cached": False, "error_stage": None, **extra}
        for doc_id, text in PAGES.items()])


def test_extractor_rows_carry_the_verbatim_truth_and_whether_the_text_held_it():
    exp = parse_experiment({"name": "ev", "dataset": {"source": "synthetic", "n": 3}, "fields": FIELDS,
                            "variants": [{"name": "echo", "backend": "fake"}]})
    prompt = load_prompt("terse-json")
    extractor = Extractor(exp.model_dump_json(), "echo", {prompt.id: asdict(prompt)})
    rows = {r["doc_id"]: r for r in extractor(_pages(), [(d, prompt.id, f"k-{d}") for d in PAGES]).to_pylist()}
    seen = rows["seen"]
    assert (seen["truth_total"], seen["gt_total"], seen["truth_invoice_number"]) == ("$1,234.50", "1234.50", "INV-7")
    # the fake echoes the normalised truth; exact compares with the verbatim one, so it is not a match
    assert seen["pred_total"] == "1234.50" and seen["match_total"] is False
    assert seen["in_text_total"] is True and seen["in_text_invoice_number"] is True
    assert rows["lost"]["in_text_total"] is False and rows["lost"]["in_text_invoice_number"] is True
    assert rows["blank"]["in_text_total"] is None and rows["blank"]["truth_total"] == "$1,234.50"


def test_vllm_result_rows_carry_truth_and_evidence_from_the_request_text(tmp_path):
    exp = parse_experiment({"name": "ev", "output_dir": str(tmp_path / "{name}"),
                            "dataset": {"source": "folder", "path": str(tmp_path)}, "fields": FIELDS,
                            "variants": [{"name": "v", "backend": "vllm", "model": "org/model"}]})
    prompts = {"terse-json": asdict(load_prompt("terse-json"))}
    units = {d: [("terse-json", f"k-{d}")] for d in PAGES}
    requests = [r for page in _pages().to_pylist() for r in RequestRows(exp.model_dump_json(), "v", prompts,
                                                                         units)(page)]
    answer = json.dumps({"invoice_number": "INV-7", "total": "$1,234.50"})
    engine = pa.Table.from_pylist([{**r, "messages": None, "sampling_params": None, "generated_text": answer,
                                    "num_input_tokens": 10, "num_generated_tokens": 5, "time_taken_llm": 0.1,
                                    "__inference_error__": ""} for r in requests])
    rows = {r["doc_id"]: r for r in ResultRows(exp.model_dump_json(), "v", prompts, "{}")(engine).to_pylist()}
    assert rows["seen"]["match_total"] is True and rows["seen"]["truth_total"] == "$1,234.50"
    assert [rows[d]["in_text_total"] for d in PAGES] == [True, False, None]
