"""Field scoring: type-aware normalisation, validation and comparison of one predicted value with its truth.

Each field's rule is data (a ``FieldSpec``: type, match, threshold, day_first, tolerance); this module
applies it. Amounts become "1234.50" and dates ISO "YYYY-MM-DD" (both read by ``invoicelab.normalize``),
currencies ISO codes, ids and text comparable strings. Every function here is pure: it never raises on a
value, never reads files, never imports Ray or a model library, and never ``eval``s anything. A value that
cannot be read normalises to None.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from decimal import Decimal

from rapidfuzz import fuzz

from invoicelab.config import FieldSpec, FieldType
from invoicelab.normalize import (
    MONEY_SYMBOLS,
    as_str,
    format_amount,
    normalize_amount,
    normalize_date,
    parse_amount,
    parse_date,
)

__all__ = ["gt_value", "is_match", "is_valid", "normalize", "parse_amount", "parse_date", "score_field", "truth_value"]

# ---------------------------------------------------------------- shared text helpers

_SPACES = re.compile(r"\s+")


def _fixpoint(step: Callable[[str], str], text: str, rounds: int = 8) -> str:
    """Apply ``step`` until the text stops changing, so that normalising twice changes nothing."""
    for _ in range(rounds):
        nxt = step(text)
        if nxt == text:
            break
        text = nxt
    return text


# ---------------------------------------------------------------- currencies

_ISO_CODES = frozenset(
    "USD EUR GBP JPY CNY INR MYR SGD AUD CAD NZD HKD CHF SEK NOK DKK PLN CZK HUF RON BGN TRY RUB UAH BRL MXN ARS "
    "CLP COP PEN ZAR NGN KES EGP MAD AED SAR QAR KWD ILS IDR THB VND PHP KRW TWD PKR BDT LKR ISK".split()
)
_CURRENCY_ALIASES = {
    **{code: code for code in _ISO_CODES},
    "$": "USD", "US$": "USD", "USD$": "USD", "DOLLAR": "USD", "DOLLARS": "USD", "US DOLLAR": "USD",
    "US DOLLARS": "USD", "€": "EUR", "EURO": "EUR", "EUROS": "EUR", "£": "GBP", "POUND": "GBP", "POUNDS": "GBP",
    "POUND STERLING": "GBP", "STERLING": "GBP", "¥": "JPY", "YEN": "JPY", "円": "JPY", "RMB": "CNY", "元": "CNY",
    "YUAN": "CNY", "RENMINBI": "CNY", "₹": "INR", "RS": "INR", "RS.": "INR", "RUPEE": "INR", "RUPEES": "INR",
    "RM": "MYR", "RINGGIT": "MYR", "S$": "SGD", "SG$": "SGD", "A$": "AUD", "AU$": "AUD", "C$": "CAD", "CA$": "CAD",
    "NZ$": "NZD", "HK$": "HKD", "SFR": "CHF", "FR.": "CHF", "SWISS FRANC": "CHF", "SWISS FRANCS": "CHF",
    "₩": "KRW", "WON": "KRW", "฿": "THB", "BAHT": "THB", "₱": "PHP", "PESO": "PHP", "R$": "BRL", "REAL": "BRL",
    "ZŁ": "PLN", "ZLOTY": "PLN", "KČ": "CZK", "₺": "TRY", "₽": "RUB", "₫": "VND", "₪": "ILS", "₦": "NGN",
    "RP": "IDR", "RUPIAH": "IDR",
}
_CURRENCY_PIECE = re.compile(r"[^\W\d_]+\$?|[" + re.escape(MONEY_SYMBOLS) + "]")


def _currency_in(text: str) -> str | None:
    """The first currency named inside a longer text ("TOTAL IN EUROS", "USD 12.00"), one word at a time."""
    pieces = list(_CURRENCY_PIECE.finditer(text))
    for i, piece in enumerate(pieces):
        word, after = piece.group(), text[piece.end() : piece.end() + 1]
        names = [word + "." if after == "." else word, word]
        if i + 1 < len(pieces) and pieces[i + 1].start() == piece.end() + 1:
            names.insert(0, word + " " + pieces[i + 1].group())  # "POUND STERLING", "US DOLLARS"
        for name in names:
            if name in _CURRENCY_ALIASES:
                return _CURRENCY_ALIASES[name]
    return None


def _clean_upper(text: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).upper()).strip()


def _normalize_currency(value: object) -> str | None:
    text = _fixpoint(_clean_upper, as_str(value) or "")
    if not text:
        return None
    bare = text.strip(" :")
    if bare in _CURRENCY_ALIASES:
        return _CURRENCY_ALIASES[bare]
    return _currency_in(text) or text


# ---------------------------------------------------------------- ids and text

_ID_LABEL = re.compile(
    r"^(?:(?:INVOICE|INV|ORDER|CONTRACT|RECEIPT|BILL|REFERENCE|REF|DOCUMENT|DOC|FACTURE|RECHNUNG|FACTUUR"
    r"|NUMBER|NUMERO|NUM|NBR|NO|NR|N°|№)(?=[\s.:#])|[\s.:#])[\s.:#]*"
)


def _id_step(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).upper().strip()
    for _ in range(8):  # "INVOICE NO. #123": one label at a time
        stripped = _ID_LABEL.sub("", text, count=1)
        if stripped == text or not stripped:
            break
        text = stripped
    return _SPACES.sub("", text).rstrip(".,;:")


def _text_step(text: str) -> str:
    text = _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    start, end = 0, len(text)
    while start < end and _is_edge_junk(text[start]):
        start += 1
    while end > start and _is_edge_junk(text[end - 1]):
        end -= 1
    return text[start:end]


def _is_edge_junk(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


def _normalize_id(value: object) -> str | None:
    return _fixpoint(_id_step, as_str(value) or "") or None


def _normalize_text(value: object) -> str | None:
    return _fixpoint(_text_step, as_str(value) or "") or None


# ---------------------------------------------------------------- the public rules


def normalize(value: str | float | int | None, spec: FieldSpec) -> str | None:
    """The comparable form of a value for its field type.

    Args:
        value: A predicted or true value (text, or a number from a JSON ground truth).
        spec: The field's rule; ``type`` picks the normalisation, ``day_first`` reads ambiguous dates.

    Returns:
        amount "1234.50", date "YYYY-MM-DD", currency an ISO code (or the upper-cased text), id upper-case
        without spaces or labels, text casefolded NFKC with collapsed spaces; None when nothing is readable.
        Normalising a normalised value returns it unchanged.
    """
    if spec.type == FieldType.amount:
        return normalize_amount(value)
    if spec.type == FieldType.date:
        return normalize_date(value, spec.day_first)
    if spec.type == FieldType.currency:
        return _normalize_currency(value)
    if spec.type == FieldType.id:
        return _normalize_id(value)
    return _normalize_text(value)


def is_valid(value: str | None, spec: FieldSpec) -> bool:
    """Whether a value is present and readable as its type (amount has a number, date parses, ...).

    A currency must be a known one or three letters; an id needs a letter or digit.
    """
    norm = normalize(value, spec)
    if norm is None:
        return False
    if spec.type == FieldType.currency:
        return norm in _ISO_CODES or re.fullmatch(r"[A-Z]{3}", norm) is not None
    if spec.type == FieldType.id:
        return any(c.isalnum() for c in norm)
    return True


def _is_blank(value: object) -> bool:
    text = as_str(value)
    return text is None or not text.strip()


def _comparable(value: object, spec: FieldSpec) -> str | None:
    """The normalised value, or its normalised text where the type cannot read it."""
    norm = normalize(value, spec)
    return norm if norm is not None else _normalize_text(value)


def _amounts_equal(pred: object, gt: object, spec: FieldSpec) -> bool | None:
    """None when either side has no number (then the texts are compared)."""
    a, b = parse_amount(pred), parse_amount(gt)
    if a is None or b is None:
        return None
    a, b = Decimal(format_amount(a) or "NaN"), Decimal(format_amount(b) or "NaN")
    return bool(abs(a - b) <= Decimal(repr(spec.tolerance)))


def score_field(pred: object, gt: object, spec: FieldSpec, truth: object = None) -> float | None:
    """Score one predicted value against the truth.

    Args:
        pred: The predicted value (None when the model gave none).
        gt: The true value (None or empty when the document has none): the dataset's ``normalized`` form
            where it has one (see ``gt_value``).
        spec: ``match`` selects exact (trimmed strings equal), normalized (type-aware equality; amounts
            within ``tolerance``) or fuzzy (rapidfuzz ratio of the normalised values, 0..1).
        truth: The verbatim true value (``truth_value``). exact compares with it where given, since the
            normalised form ("1234.50") is not what the document says ("$1,234.50"); the other rules
            normalise both sides anyway and keep ``gt``.

    Returns:
        None when there is no truth to score against; 0.0 for a missing prediction; else 0..1.
    """
    if spec.match == "exact" and not _is_blank(truth):
        gt = truth
    if _is_blank(gt):
        return None
    if _is_blank(pred):
        return 0.0
    if spec.match == "exact":
        return float(as_str(pred).strip() == as_str(gt).strip())
    if spec.match == "fuzzy":
        return fuzz.ratio(_comparable(pred, spec) or "", _comparable(gt, spec) or "") / 100.0
    if spec.type == FieldType.amount:
        same = _amounts_equal(pred, gt, spec)
        if same is not None:
            return float(same)
        return float(_normalize_text(pred) == _normalize_text(gt))
    return float(_comparable(pred, spec) == _comparable(gt, spec))


def is_match(score: float | None, spec: FieldSpec) -> bool | None:
    """Whether a score counts as a correct field: fuzzy needs ``threshold``, the others 1.0; None stays None."""
    if score is None:
        return None
    return score >= spec.threshold if spec.match == "fuzzy" else score == 1.0


def gt_value(record_fields: dict | None, record_normalized: dict | None, name: str, spec: FieldSpec) -> str | None:
    """The true value of a field in a gt.jsonl record, in the form the configured rules compare with.

    Args:
        record_fields: The record's verbatim ``fields``.
        record_normalized: Its ``normalized`` block, if any (preferred where it holds a non-null value).
        name: The field's name in the experiment.
        spec: Its rule; ``gt_key`` names the key in the record when it differs from ``name``.

    Returns:
        The value as text (numbers as text, lists/objects as compact JSON), trimmed, or None if absent or empty.
    """
    key = spec.gt_key or name
    value = (record_normalized or {}).get(key) if isinstance(record_normalized, dict) else None
    if value is None and isinstance(record_fields, dict):
        value = record_fields.get(key)
    text = _record_text(value)
    return text.strip() if text is not None else None


def truth_value(record_fields: dict | None, name: str, spec: FieldSpec) -> str | None:
    """The verbatim true value of a field: what the record's ``fields`` say, as the document writes it.

    Exact matching and published benchmarks (SROIE Task 3) compare with this, not the normalised form.

    Args:
        record_fields: The record's verbatim ``fields``.
        name: The field's name in the experiment.
        spec: Its rule; ``gt_key`` names the key in the record when it differs from ``name``.

    Returns:
        The value as text exactly as stored (numbers as text, lists/objects as compact JSON); None if the
        record has none or it is blank.
    """
    if not isinstance(record_fields, dict):
        return None
    return _record_text(record_fields.get(spec.gt_key or name))


def _record_text(value: object) -> str | None:
    """A ground-truth value as text; None when absent or blank."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = as_str(value)
    return text if text is not None and text.strip() else None
