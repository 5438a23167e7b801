"""Amounts and dates read out of text: the one parser that scoring and the rules baseline share.

``parse_amount`` finds the number in an amount ("RM 1.234,50", "(12.00)", "$6,680.00") as a Decimal;
``parse_date`` finds the earliest date in a text (explicit patterns in several languages, no dateutil).
``normalize_amount`` and ``normalize_date`` give their canonical forms, "1234.50" and "YYYY-MM-DD".
Every function here is pure: it never raises on a value, never reads files, never imports Ray or a
model library. A value that cannot be read gives None.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext


def as_str(value: object) -> str | None:
    """The text of a value; None for None, NaN, infinities and ints too long to print."""
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

MONEY_SYMBOLS = "$€£¥₹₩฿₱₪₦₫₺₽"
"""Currency signs that may stand next to an amount."""

_NUM_TOKEN = re.compile(r"[0-9]{1,3}(?:[ \u00a0\u202f'’][0-9]{3})+(?:[.,][0-9]+)?|[0-9][0-9.,]*")
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
    lead = before.rstrip().rstrip(MONEY_SYMBOLS).rstrip()
    code = _TRAILING_CODE.search(lead[-5:])  # 5 > the longest code, so its left neighbour is in view
    if code:
        lead = lead[: len(lead) - len(code.group())].rstrip().rstrip(MONEY_SYMBOLS).rstrip()
    if lead.endswith(_MINUS):
        return True
    return (lead.endswith("(") and ")" in after) or after.strip() in _MINUS


def _safe_decimal(text: str) -> Decimal | None:
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def parse_amount(value: object) -> Decimal | None:
    """The number in an amount ("RM 1.234,50", "(12.00)", "$6,680.00", 279.84), or None if it has none.

    Args:
        value: The text (or a number from a JSON ground truth).

    Returns:
        The first number in the text, negative where a minus or parentheses mark it; None when the
        text has no number or its whole part has more than 30 digits.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = as_str(value)
        return None if text is None else _safe_decimal(text)
    text = unicodedata.normalize("NFKC", as_str(value) or "")
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


def format_amount(value: Decimal) -> str | None:
    """``Decimal("1234.5")`` -> ``"1234.50"`` (half up; ``"0.00"`` for zero and minus zero)."""
    with localcontext() as ctx:
        ctx.prec = 64
        try:
            cents = value.quantize(_CENT, rounding=ROUND_HALF_UP)
        except InvalidOperation:
            return None
    return "0.00" if cents == 0 else f"{cents:f}"


def normalize_amount(value: object) -> str | None:
    """The canonical amount "1234.50" of a value, or None where it has no number."""
    number = parse_amount(value)
    return None if number is None else format_amount(number)


# ---------------------------------------------------------------- dates

MONTH_ABBREVIATIONS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
"""English month abbreviations, January first; the rules baseline finds dates by them too."""

_MONTHS = {
    **{m: i for i, m in enumerate(
        "january february march april may june july august september october november december".split(), 1)},
    **{m: i for i, m in enumerate(MONTH_ABBREVIATIONS, 1)},
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
    text = unicodedata.normalize("NFKC", as_str(value) or "").casefold()
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


def normalize_date(value: object, day_first: bool = False) -> str | None:
    """The ISO date "YYYY-MM-DD" in a text, or None (see ``parse_date``)."""
    found = parse_date(value, day_first)
    return found.isoformat() if found else None
