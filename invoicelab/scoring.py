"""Field scoring: type-aware normalisation, validation and comparison of one predicted value with its truth.

Each field's rule is data (a ``FieldSpec``: type, match, threshold, day_first, tolerance); this module
applies it. Amounts become "1234.50", dates ISO "YYYY-MM-DD" (explicit patterns, no dateutil), currencies
ISO codes, ids and text comparable strings. Every function here is pure: it never raises on a value,
never reads files, never imports Ray or a model library, and never ``eval``s anything. A value that
cannot be read normalises to None.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext

from rapidfuzz import fuzz

from invoicelab.config import FieldSpec, FieldType

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


def _as_str(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return None if value != value or value in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except ValueError:  # an int too long to print (Python's int_max_str_digits)
        return None


# ---------------------------------------------------------------- amounts

_NUM_TOKEN = re.compile(r"[0-9]{1,3}(?:[ \u00a0\u202f'’][0-9]{3})+(?:[.,][0-9]+)?|[0-9][0-9.,]*")
_SYMBOLS = "$€£¥₹₩฿₱₪₦₫₺₽"
_TRAILING_CODE = re.compile(r"(?<![A-Za-z])[A-Za-z]{1,3}\.?$")  # "RM", "Rs.", "EUR" between a sign and digits
_MINUS = ("-", "\u2212", "\u2013")
_CENT = Decimal("0.01")


def _decimal_string(token: str) -> str:
    """"1,234.56" / "1.234,56" / "1 234,56" / "1,234" -> plain "1234.56"-style digits."""
    token = re.sub(r"[^0-9.,]", "", token).rstrip(".,")
    seps = [i for i, c in enumerate(token) if c in ".,"]
    if not seps:
        return token
    last = seps[-1]
    whole, frac = re.sub(r"[^0-9]", "", token[:last]), token[last + 1 :]
    if len({token[i] for i in seps}) == 1:
        groups_of_three = len(frac) == 3 and whole not in ("", "0")
        if (len(seps) > 1 and len(frac) == 3) or (token[last] == "," and len(seps) == 1 and groups_of_three):
            return whole + frac  # thousands separators only: "1,234", "1.234.567"
    return f"{whole or '0'}.{frac}"


def _is_negative(before: str, after: str) -> bool:
    """A minus before the number (currency may stand between), parentheses around it, or a trailing minus."""
    lead = before.rstrip().rstrip(_SYMBOLS).rstrip()
    code = _TRAILING_CODE.search(lead[-5:])  # 5 > the longest code, so its left neighbour is in view
    if code:
        lead = lead[: len(lead) - len(code.group())].rstrip().rstrip(_SYMBOLS).rstrip()
    if lead.endswith(_MINUS):
        return True
    return (lead.endswith("(") and ")" in after) or after.strip() in _MINUS


def _format_amount(value: Decimal) -> str | None:
    with localcontext() as ctx:
        ctx.prec = 64
        try:
            cents = value.quantize(_CENT, rounding=ROUND_HALF_UP)
        except InvalidOperation:
            return None
    return "0.00" if cents == 0 else f"{cents:f}"


def parse_amount(value: object) -> Decimal | None:
    """The number in an amount ("RM 1.234,50", "(12.00)", "$6,680.00", 279.84), or None if it has none."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = _as_str(value)
        return None if text is None else _safe_decimal(text)
    text = unicodedata.normalize("NFKC", _as_str(value) or "")
    m = _NUM_TOKEN.search(text)
    if not m:
        return None
    digits = _decimal_string(m.group())
    if len(digits.partition(".")[0]) > 30:  # not an amount; also keeps Decimal arithmetic exact
        return None
    number = _safe_decimal(digits)
    if number is not None and _is_negative(text[: m.start()], text[m.end() :]):
        number = -number
    return number


def _safe_decimal(text: str) -> Decimal | None:
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _normalize_amount(value: object) -> str | None:
    number = parse_amount(value)
    return None if number is None else _format_amount(number)


# ---------------------------------------------------------------- dates

_MONTHS = {
    **{m: i for i, m in enumerate(
        "january february march april may june july august september october november december".split(), 1)},
    **{m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)},
    "sept": 9,
    # French, German, Dutch, Spanish names seen on European invoices
    **{m: i for i, m in enumerate(
        "janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split(), 1)},
    **{m: i for i, m in enumerate(
        "januar februar märz april mai juni juli august september oktober november dezember".split(), 1)},
    **{m: i for i, m in enumerate(
        "januari februari maart april mei juni juli augustus september oktober november december".split(), 1)},
    **{m: i for i, m in enumerate(
        "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre".split(), 1)},
    "fevrier": 2, "aout": 8, "decembre": 12, "marz": 3, "maerz": 3, "mrt": 3, "okt": 10, "mei": 5, "dez": 12,
}
_MONTH = "(" + "|".join(sorted(map(re.escape, _MONTHS), key=len, reverse=True)) + r")\.?"
_YEAR = r"([0-9]{4}|[0-9]{2})(?![0-9])"
_DAY = r"(?<![0-9])([0-9]{1,2})(?![0-9])(?:st|nd|rd|th|er)?"
_NAME = r"(?<![^\W\d_])" + _MONTH + r"(?![^\W\d_])"  # a month name that is a whole word (or next to digits)
_DATE_PATTERNS = (  # (pattern, order of the groups): y=year, m=month number, d=day, n=month name, a=ambiguous pair
    (re.compile(r"(?<![0-9])([0-9]{4})[-/.]([0-9]{1,2})[-/.]([0-9]{1,2})(?![0-9])"), "ymd"),  # 2018-03-23
    (re.compile(r"(?<![0-9])([0-9]{4})([0-9]{2})([0-9]{2})(?![0-9])"), "ymd"),  # 20180428
    (re.compile(r"(?<![0-9])([0-9]{1,2})\s*([-/.])\s*([0-9]{1,2})\s*\2\s*" + _YEAR), "a"),  # 25/12/2018, 15-01-19
    (re.compile(_DAY + r"[\s\-/.,]*(?:of\s+)?" + _NAME + r"[\s\-/.,']*" + _YEAR), "dny"),  # 06 JAN 2018
    (re.compile(_NAME + r"[\s\-/.]*" + _DAY + r"[\s,\-/.']*" + _YEAR), "ndy"),  # March 5, 2024; Feb13/20
    (re.compile(r"(?<![0-9])([0-9]{4})[\s\-/.]*" + _NAME + r"[\s\-/.]*" + _DAY), "ynd"),  # 2024 Mar 05
)


def _make_date(year: int, month: int, day: int, two_digit_year: bool) -> dt.date | None:
    if two_digit_year:
        year += 2000
    if not 1900 <= year <= 2199:
        return None
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _date_from_match(m: re.Match, order: str, day_first: bool) -> dt.date | None:
    g = m.groups()
    if order == "a":  # 03/04/2020: day_first decides; the other reading if that one is impossible
        first, second, year = int(g[0]), int(g[2]), g[3]
        readings = [(second, first), (first, second)] if day_first else [(first, second), (second, first)]
        for month, day in readings:
            found = _make_date(int(year), month, day, len(year) == 2)
            if found:
                return found
        return None
    parts = dict(zip(order, g))
    month = _MONTHS[parts["n"].casefold()] if "n" in parts else int(parts["m"])
    return _make_date(int(parts["y"]), month, int(parts["d"]), len(parts["y"]) == 2)


def parse_date(value: object, day_first: bool = False) -> dt.date | None:
    """The date in a text ("25/12/2018", "06 JAN 2018", "Feb13/20", "20180428", ...), or None.

    Args:
        value: The text (or anything with a text form).
        day_first: Read ambiguous numeric dates (03/04/2020) as day/month.

    Returns:
        The earliest date found in the text; two-digit years are 20YY.
    """
    text = unicodedata.normalize("NFKC", _as_str(value) or "").casefold()
    best: tuple[int, dt.date] | None = None
    for pattern, order in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if best is not None and m.start() >= best[0]:
                break
            found = _date_from_match(m, order, day_first)
            if found:
                best = (m.start(), found)
                break
    return best[1] if best else None


def _normalize_date(value: object, spec: FieldSpec) -> str | None:
    found = parse_date(value, spec.day_first)
    return found.isoformat() if found else None


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
_CURRENCY_PIECE = re.compile(r"[^\W\d_]+\$?|[" + re.escape(_SYMBOLS) + "]")


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
    text = _fixpoint(_clean_upper, _as_str(value) or "")
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
    return _fixpoint(_id_step, _as_str(value) or "") or None


def _normalize_text(value: object) -> str | None:
    return _fixpoint(_text_step, _as_str(value) or "") or None


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
        return _normalize_amount(value)
    if spec.type == FieldType.date:
        return _normalize_date(value, spec)
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
    text = _as_str(value)
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
    a, b = Decimal(_format_amount(a) or "NaN"), Decimal(_format_amount(b) or "NaN")
    return bool(abs(a - b) <= Decimal(repr(spec.tolerance)))


def score_field(pred: object, gt: object, spec: FieldSpec) -> float | None:
    """Score one predicted value against the truth.

    Args:
        pred: The predicted value (None when the model gave none).
        gt: The true value (None or empty when the document has none).
        spec: ``match`` selects exact (trimmed strings equal), normalized (type-aware equality; amounts
            within ``tolerance``) or fuzzy (rapidfuzz ratio of the normalised values, 0..1).

    Returns:
        None when there is no truth to score against; 0.0 for a missing prediction; else 0..1.
    """
    if _is_blank(gt):
        return None
    if _is_blank(pred):
        return 0.0
    if spec.match == "exact":
        return float(_as_str(pred).strip() == _as_str(gt).strip())
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
    """The true value of a field in a gt.jsonl record.

    Args:
        record_fields: The record's verbatim ``fields``.
        record_normalized: Its ``normalized`` block, if any (preferred where it holds a non-null value).
        name: The field's name in the experiment.
        spec: Its rule; ``gt_key`` names the key in the record when it differs from ``name``.

    Returns:
        The value as text (numbers as text, lists/objects as compact JSON), or None if absent or empty.
    """
    key = spec.gt_key or name
    value = (record_normalized or {}).get(key) if isinstance(record_normalized, dict) else None
    if value is None and isinstance(record_fields, dict):
        value = record_fields.get(key)
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = _as_str(value)
    return (text.strip() or None) if text is not None else None
