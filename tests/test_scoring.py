"""Field scoring: normalisation per type, validity, comparison, and the ground truth of real datasets."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invoicelab.config import FieldSpec
from invoicelab.scoring import gt_value, is_match, is_valid, normalize, parse_amount, parse_date, score_field

AMOUNT = FieldSpec(type="amount")
DATE_US = FieldSpec(type="date")
DATE_DMY = FieldSpec(type="date", day_first=True)
CURRENCY = FieldSpec(type="currency")
ID = FieldSpec(type="id")
TEXT = FieldSpec(type="text")
ALL_TYPES = [AMOUNT, DATE_US, DATE_DMY, CURRENCY, ID, TEXT]


def _data_root() -> Path | None:
    here = Path(__file__).resolve().parent.parent
    for root in (os.environ.get("INVOICELAB_SHARED_DATA"), here / "shared" / "data", here.parent / "shared" / "data"):
        if root and (Path(root) / "sroie" / "gt.jsonl").is_file():
            return Path(root)
    return None


DATA = _data_root()
needs_data = pytest.mark.skipif(DATA is None, reason="shared datasets not found (set INVOICELAB_SHARED_DATA)")


def _records(name: str) -> list[dict]:
    lines = (DATA / name / "gt.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# ---------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1234.5", "1234.50"),
        ("$6,680.00", "6680.00"),
        ("RM 29.70", "29.70"),
        ("RM8.35", "8.35"),
        ("EUR 1.234,56", "1234.56"),
        ("1 234,56 €", "1234.56"),
        ("1\u00a0234,56", "1234.56"),
        ("CHF 1'234.50", "1234.50"),
        ("1,234", "1234.00"),
        ("1.234.567", "1234567.00"),
        ("12,5", "12.50"),
        ("0,125", "0.13"),
        ("(12.00)", "-12.00"),
        ("($12.00)", "-12.00"),
        ("-$12.50", "-12.50"),
        ("- RM 3", "-3.00"),
        ("12.00-", "-12.00"),
        ("Sub-total 12.00", "12.00"),
        ("Total: 45.10 (incl. 6% GST)", "45.10"),
        ("１２.５０", "12.50"),  # full-width digits
        (279.84, "279.84"),
        (262.9, "262.90"),
        (319, "319.00"),
        ("-0.001", "0.00"),
        ("abc", None),
        ("", None),
        (None, None),
        (float("nan"), None),
        ("9" * 60, None),
    ],
)
def test_amount(raw, expected):
    assert normalize(raw, AMOUNT) == expected


def test_an_int_too_long_to_print_is_no_amount():
    assert normalize(10**5000, AMOUNT) is None
    assert normalize(10**5000, TEXT) is None


def test_parse_amount_returns_a_decimal():
    assert str(parse_amount("$1,234.5")) == "1234.5"


# ---------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("raw", "month_first", "day_first"),
    [
        ("2018-03-23", "2018-03-23", "2018-03-23"),
        ("2018/3/5", "2018-03-05", "2018-03-05"),
        ("2018-01-15 10:30:00", "2018-01-15", "2018-01-15"),
        ("20180428", "2018-04-28", "2018-04-28"),
        ("25/12/2018", "2018-12-25", "2018-12-25"),  # month 25 impossible: the other reading
        ("12/25/2018", "2018-12-25", "2018-12-25"),
        ("03/04/2020", "2020-03-04", "2020-04-03"),
        ("05.03.2024", "2024-05-03", "2024-03-05"),
        ("15-01-19", "2019-01-15", "2019-01-15"),
        ("4/7/20", "2020-04-07", "2020-07-04"),
        ("06 JAN 2018", "2018-01-06", "2018-01-06"),
        ("06-Jan-18", "2018-01-06", "2018-01-06"),
        ("5 Mar 2024", "2024-03-05", "2024-03-05"),
        ("3rd of June 2021", "2021-06-03", "2021-06-03"),
        ("March 5, 2024", "2024-03-05", "2024-03-05"),
        ("Sept. 4th, 2021", "2021-09-04", "2021-09-04"),
        ("Feb13/20", "2020-02-13", "2020-02-13"),
        ("2024 Mar 05", "2024-03-05", "2024-03-05"),
        ("29 maart 2014", "2014-03-29", "2014-03-29"),
        ("1er décembre 2020", "2020-12-01", "2020-12-01"),
        ("12. März 2021", "2021-03-12", "2021-03-12"),
        ("Date: 06/01/2018 Time: 13:05", "2018-06-01", "2018-01-06"),
        ("31/02/2020", None, None),
        ("JAN 2018", None, None),
        ("13/13/2020", None, None),
        ("no date", None, None),
        ("", None, None),
    ],
)
def test_date(raw, month_first, day_first):
    assert normalize(raw, DATE_US) == month_first
    assert normalize(raw, DATE_DMY) == day_first


def test_parse_date_takes_the_earliest_date_in_the_text():
    assert str(parse_date("from 5 Mar 2024 to 2024-04-01")) == "2024-03-05"


# ---------------------------------------------------------------- currencies, ids, text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$", "USD"), ("US$", "USD"), ("usd", "USD"), ("US dollars", "USD"), ("€", "EUR"), ("EUR", "EUR"),
        ("euro", "EUR"), ("Euros", "EUR"), ("£", "GBP"), ("Pound sterling", "GBP"), ("RM", "MYR"), ("MYR", "MYR"),
        ("ringgit", "MYR"), ("₹", "INR"), ("Rs.", "INR"), ("Rs", "INR"), ("CHF", "CHF"), ("Fr.", "CHF"),
        ("JPY", "JPY"), ("¥", "JPY"), ("S$", "SGD"), ("HK$ 3", "HKD"), ("12.00 RM", "MYR"), ("Total in euros", "EUR"),
        ("xyz", "XYZ"), ("  some  thing ", "SOME THING"), ("", None), (None, None),
    ],
)
def test_currency(raw, expected):
    assert normalize(raw, CURRENCY) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("No. 123", "123"),
        ("Invoice No: INV-5", "INV-5"),
        ("Invoice #123.", "123"),
        ("#BLR_WFLD20151000982590", "BLR_WFLD20151000982590"),
        ("INV/2023/03/0008", "INV/2023/03/0008"),
        ("inv/2023/03/0008", "INV/2023/03/0008"),
        ("9752880 (Rev 0)", "9752880(REV0)"),
        (" ab 12 ", "AB12"),
        ("№ 77", "77"),
        ("NOV-12", "NOV-12"),
        (2022089083, "2022089083"),
        ("", None),
    ],
)
def test_id(raw, expected):
    assert normalize(raw, ID) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  AEON CO. (M)  BHD. ", "aeon co. (m) bhd"),
        ("ＦＵＬＬ width!!", "full width"),
        ("Straße", "strasse"),
        ("line\nbreak\ttab", "line break tab"),
        ('"quoted"', "quoted"),
        ("...", None),
        ("", None),
    ],
)
def test_text(raw, expected):
    assert normalize(raw, TEXT) == expected


# ---------------------------------------------------------------- validity


@pytest.mark.parametrize(
    ("value", "spec", "valid"),
    [
        ("RM 12.00", AMOUNT, True), ("twelve", AMOUNT, False), (None, AMOUNT, False),
        ("25/12/2018", DATE_DMY, True), ("soon", DATE_US, False),
        ("€", CURRENCY, True), ("xyz", CURRENCY, True), ("dollarz", CURRENCY, False), ("", CURRENCY, False),
        ("A-1", ID, True), ("#", ID, False), ("  ", ID, False),
        ("ACME", TEXT, True), (" . ", TEXT, False),
    ],
)
def test_is_valid(value, spec, valid):
    assert is_valid(value, spec) is valid


# ---------------------------------------------------------------- comparison


@pytest.mark.parametrize(
    ("pred", "gt", "spec", "score"),
    [
        ("12.50", None, AMOUNT, None),
        ("12.50", "  ", AMOUNT, None),
        (None, "12.50", AMOUNT, 0.0),
        ("", "12.50", AMOUNT, 0.0),
        ("RM 12.50", "12.50", AMOUNT, 1.0),
        ("12.504", "12.50", AMOUNT, 1.0),
        ("12.51", "12.50", AMOUNT, 0.0),
        ("12.51", "12.50", FieldSpec(type="amount", tolerance=0.02), 1.0),
        ("n/a", "n/a", AMOUNT, 1.0),  # unreadable truth: the texts are compared
        ("06 JAN 2018", "2018-01-06", DATE_DMY, 1.0),
        ("01/06/2018", "2018-01-06", DATE_DMY, 0.0),
        ("€", "EUR", CURRENCY, 1.0),
        ("No. 123", "123", ID, 1.0),
        ("aeon co (m) bhd", "AEON CO. (M) BHD", TEXT, 0.0),
        ("AEON CO. (M) BHD.", "aeon co. (m) bhd", TEXT, 1.0),
        (" A-1 ", "A-1", FieldSpec(type="id", match="exact"), 1.0),
        ("a-1", "A-1", FieldSpec(type="id", match="exact"), 0.0),
        (12.5, "12.50", AMOUNT, 1.0),
    ],
)
def test_score_field(pred, gt, spec, score):
    assert score_field(pred, gt, spec) == score


def test_fuzzy_score_and_threshold():
    spec = FieldSpec(type="text", match="fuzzy", threshold=0.8)
    score = score_field("AEON CO (M) BHD", "AEON CO. (M) BHD", spec)
    assert 0.9 < score < 1.0 and is_match(score, spec)
    low = score_field("TESCO STORES", "AEON CO. (M) BHD", spec)
    assert low < 0.5 and is_match(low, spec) is False
    assert score_field("same", "SAME", spec) == 1.0


def test_is_match():
    assert is_match(None, AMOUNT) is None
    assert is_match(1.0, AMOUNT) is True
    assert is_match(0.99, AMOUNT) is False
    assert is_match(0.8, FieldSpec(match="fuzzy", threshold=0.8)) is True


def test_gt_value():
    fields = {"date": "25/12/2018", "total": 279.84, "lines": [1, {"a": 2}], "empty": "  ", "n": 5}
    normalized = {"date": "2018-12-25", "total": None}
    assert gt_value(fields, normalized, "date", DATE_DMY) == "2018-12-25"
    assert gt_value(fields, normalized, "total", AMOUNT) == "279.84"  # normalized null: the verbatim value
    assert gt_value(fields, None, "lines", TEXT) == '[1,{"a":2}]'
    assert gt_value(fields, None, "empty", TEXT) is None
    assert gt_value(fields, None, "missing", TEXT) is None
    assert gt_value(fields, {}, "n", ID) == "5"
    assert gt_value(fields, None, "when", FieldSpec(type="date", gt_key="date")) == "25/12/2018"
    assert gt_value(None, None, "x", TEXT) is None


# ---------------------------------------------------------------- real ground truth


@needs_data
@pytest.mark.parametrize(
    ("dataset", "key", "spec"),
    [
        ("sroie", "date", DATE_DMY),
        ("sroie", "total", AMOUNT),
        ("deepform_adbuy", "gross_amount", AMOUNT),
        ("deepform_adbuy", "flight_from", DATE_US),
        ("deepform_adbuy", "flight_to", DATE_US),
    ],
)
def test_real_verbatim_values_normalize_to_the_datasets_normalization(dataset, key, spec):
    pairs = [(r["fields"][key], r["normalized"][key]) for r in _records(dataset) if r["normalized"].get(key)]
    assert pairs
    misses = [(raw, want, normalize(raw, spec)) for raw, want in pairs if normalize(raw, spec) != want]
    assert not misses, f"{len(misses)}/{len(pairs)} differ: {misses}"
    assert all(normalize(want, spec) == want for _, want in pairs)  # idempotent on the normalized block


@needs_data
def test_real_invoice2data_values():
    records = _records("invoice2data")
    for r in records:
        f = r["fields"]
        assert normalize(f["amount"], AMOUNT) == f"{f['amount']:.2f}"
        assert normalize(f["date"], DATE_US) == f["date"] == normalize(f["date"], DATE_DMY)
        assert is_valid(f["currency"], CURRENCY) and normalize(f["currency"], CURRENCY) == f["currency"]
        assert is_valid(gt_value(f, None, "invoice_number", ID), ID)


@needs_data
def test_real_sroie_text_fields_match_themselves_and_fuzzily_their_variants():
    spec = FieldSpec(type="text", match="fuzzy")
    for r in _records("sroie"):
        company = r["fields"]["company"]
        assert score_field(company.lower(), company, TEXT) == 1.0
        assert is_match(score_field(company.replace(".", "").replace(",", ""), company, spec), spec)


# ---------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=120))
def test_normalize_never_raises_and_is_idempotent(text):
    for spec in ALL_TYPES:
        once = normalize(text, spec)
        assert once is None or (isinstance(once, str) and once)
        if once is not None:
            assert normalize(once, spec) == once, spec.type
        assert isinstance(is_valid(text, spec), bool)


DATEISH = st.text(alphabet=st.sampled_from(list("0123456789/-. ,janfebmarchdecSsept'")), max_size=30)
AMOUNTISH = st.text(alphabet=st.sampled_from(list("0123456789.,  -()$€RM'")), max_size=30)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(DATEISH, AMOUNTISH))
def test_idempotent_on_number_and_date_like_text(text):
    for spec in (AMOUNT, DATE_US, DATE_DMY):
        once = normalize(text, spec)
        if once is not None:
            assert normalize(once, spec) == once


@settings(max_examples=200, deadline=None)
@given(amount=st.decimals(min_value=-10**9, max_value=10**9, places=2, allow_nan=False, allow_infinity=False))
def test_amount_round_trips_through_common_renderings(amount):
    plain = f"{amount:.2f}"
    us = f"${abs(amount):,.2f}"
    eu = f"{abs(amount):,.2f}".replace(",", " ").replace(".", ",") + " €"
    sign = "-" if amount < 0 else ""
    expected = plain if amount != 0 else "0.00"
    assert normalize(plain, AMOUNT) == expected
    assert normalize(sign + us, AMOUNT) == expected
    assert normalize(sign + eu, AMOUNT) == expected


@settings(max_examples=200, deadline=None)
@given(day=st.dates(min_value=dt.date(1950, 1, 1), max_value=dt.date(2099, 12, 31)))
def test_date_round_trips_through_common_renderings(day):
    iso = day.isoformat()
    assert normalize(day.strftime("%d/%m/%Y"), DATE_DMY) == iso
    assert normalize(day.strftime("%m/%d/%Y"), DATE_US) == iso
    assert normalize(day.strftime("%d %b %Y"), DATE_US) == iso
    assert normalize(day.strftime("%B %d, %Y"), DATE_DMY) == iso
    assert normalize(day.strftime("%Y%m%d"), DATE_US) == iso
    if day.year >= 2000:
        assert normalize(day.strftime("%d-%m-%y"), DATE_DMY) == iso


@pytest.mark.parametrize("spec", ALL_TYPES, ids=lambda s: f"{s.type.value}{'-dmy' if s.day_first else ''}")
def test_100kb_garbage_normalizes_and_matches_itself(spec):
    # How fast this runs is measured by benchmarks/scoring_garbage.py, not asserted here.
    garbage = ("1-1 jan 12,5 $ (RM) " * 5000) + "1" + " " * 20_000 + "x" * 5
    once = normalize(garbage, spec)
    assert once is None or (isinstance(once, str) and normalize(once, spec) == once)
    assert score_field(garbage, garbage, spec) == 1.0
