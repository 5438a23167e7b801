"""Money rules of the rules baseline: the total, subtotal and tax amounts, and the currency.

Amounts are found after their keywords and returned as written ("1,234.56", "4.904,94"); their values,
needed only to compare candidates, come from ``invoicelab.normalize.parse_amount``, the parser scoring
uses. This module never imports a model, an OCR engine or Ray, and never raises on odd text: an
amount it cannot find is ``None``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from invoicelab.backends.rules_doc import Doc
from invoicelab.normalize import parse_amount

# Keyword patterns per role (case-insensitive).
TOTAL_KEYS = re.compile(
    r"total|totaal|amount\s*(?:due|payable)|balance\s*due|net[t]?\s*payable|\bgross\b|jumlah|gesamtbetrag|\bttc\b", re.I)
STRONG_TOTAL_KEYS = re.compile(
    r"grand\s*total|rounded\s*total|total\s*rounded|after\s*adj|total\s*payable|amount\s*(?:due|payable)|"
    r"balance\s*due|net[t]?\s*payable|total\s*due|total\s*amount", re.I)
NOT_TOTAL_KEYS = re.compile(
    r"sub[\s\-.]*tot|total\s*(?:qty|quantity|items?|count|pcs|discount|saving|gst\b|tax\b|vat\b|spots|ratings?|grp|cpp)|"
    r"\b(?:excl|excluding|exclusive|excluded|before)\b|\bitem\s*discount|\bnet[t]?\s*(?:amount|total)", re.I)
SUBTOTAL_KEYS = re.compile(
    r"sub[\s\-.]*tot|\bnet[t]?\s*(?:amount|total)|untaxed|total\s*\(?\s*excl|excl(?:uding|\.)?\s*(?:gst|tax|vat)|"
    r"before\s*(?:gst|tax|vat)|total\s*ht\b|\bhors\s*taxes?|zwischensumme|exclusief|netto", re.I)
TAX_KEYS = re.compile(r"\b(?:tax|gst|vat|tva|btw|mwst|sst)\b", re.I)
NOT_TAX_KEYS = re.compile(
    r"invoice|\b(?:reg|id|no|number|summary|code)\b|incl|excl|inclusive|exclusive|relief|@|sub[\s\-.]*total", re.I)
CURRENCY_CODES = re.compile(r"\b(USD|EUR|GBP|MYR|INR|SGD|AUD|CAD|CHF|JPY|CNY|HKD|NZD|SEK|NOK|DKK|PLN)\b")
CURRENCY_SYMBOLS = re.compile(r"[$€£¥₹]|\bRM(?=\s?\d)|\bRs\.?(?=\s?\d)")

AMOUNT_RE = re.compile(
    r"(?<![\w.,])(?:[$€£]\s?)?(?:\d{1,3}(?:,\d{3})+|\d+)\.\d{2}(?![.,]?\d)(?!\s?%)"  # 1,234.56
    r"|(?<![\w.,])(?:\d{1,3}(?:\.\d{3})+|\d+),\d{2}(?![.,]?\d)(?!\s?%)"  # 1.234,56
    r"|(?<=[$€£])\s?\d{1,3}(?:,\d{3})*(?![.,]?\d)")  # $40
CURRENCY_PREFIX = re.compile(r"\b(RM|MYR|USD|EUR|GBP|SGD|INR|Rs\.?)(?=\d)")
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")  # a decimal digit of another script: "٣", "३"


def amounts(line: str) -> list[str]:
    """Money amounts in a line, as written (currency symbol or code dropped; RM8.35 -> 8.35)."""
    return [value for value, _, _ in _amount_spans(CURRENCY_PREFIX.sub(r"\1 ", line))]


def amount_value(text: str) -> float:
    """``1,234.56`` / ``1.234,56`` / ``40`` as a float (0.0 where scoring's parser reads no amount).

    Digits of any script count (``AMOUNT_RE`` finds them with ``\\d``), so they become ASCII first.
    """
    return float(parse_amount(_OTHER_DIGIT.sub(lambda m: str(unicodedata.digit(m.group())), text)) or 0)


def _amount_spans(text: str) -> list[tuple[str, int, int]]:
    """(amount, start, end) in ``text``, which must already have CURRENCY_PREFIX spaced out."""
    return [(m.group().lstrip("$€£ ").strip(), m.start(), m.end()) for m in AMOUNT_RE.finditer(text)]


def _amount_run(text: str, spans: list[tuple[str, int, int]]) -> list[str]:
    """The amounts right after a keyword: the first one and those following it with no word between."""
    run: list[str] = []
    end = 0
    for value, start, stop in spans:
        if run and re.search(r"[A-Za-z]{3,}", text[end:start]):
            break  # "Excl. VAT 4.053,67 Subtotal 4.904,94": the second amount belongs to another label
        run.append(value)
        end = stop
    return run


def _keyed_amounts(doc: Doc, keys: re.Pattern[str], skip: re.Pattern[str] | None) -> list[tuple[int, str]]:
    """(line index, amount) for amounts after a keyword on its line (or the next line's first amount).

    ``skip`` is tested on the label only (the line up to its first amount after the keyword), so
    "Gross Total $425.00 Total Spots 3" is a total line while "Total Spots 3" is not.
    """
    found = []
    for i, line in enumerate(doc.lines):
        match = keys.search(line)
        if not match:
            continue
        tail = CURRENCY_PREFIX.sub(r"\1 ", line[match.start():])
        spans = _amount_spans(tail)
        if skip and skip.search(line[:match.start()] + (tail[:spans[0][1]] if spans else tail)):
            continue
        values = _amount_run(tail, spans)
        if not values and i + 1 < len(doc.lines) and not keys.search(doc.lines[i + 1]):
            values = amounts(doc.lines[i + 1])[:1]
        found += [(i, v) for v in values]
    return found


def total(doc: Doc) -> str | None:
    """The last amount near the largest on the strongest TOTAL-like lines.

    "Last" prefers the rounded total over the one before rounding; "near the largest" drops the
    tax and net columns of summary lines that also say "Total".
    """
    found = _keyed_amounts(doc, TOTAL_KEYS, NOT_TOTAL_KEYS)
    if not found:
        return None
    named = [w for w in doc.words if len(w) >= 3 and w not in {"total", "amount"}]

    def strength(i: int) -> int:
        line = doc.lines[i].lower()
        return 3 if any(w in line for w in named) else 2 if STRONG_TOTAL_KEYS.search(line) else 1

    best = max(strength(i) for i, _ in found)
    tier = [(i, v) for i, v in found if strength(i) == best]
    top = max(amount_value(v) for _, v in tier)
    return [v for _, v in tier if amount_value(v) >= 0.95 * top][-1]


def last_keyed(keys: re.Pattern[str], skip: re.Pattern[str] | None = None) -> Callable[[Doc], str | None]:
    """The last amount after the keyword (an invoice's final subtotal follows its section subtotals)."""

    def extract(doc: Doc) -> str | None:
        found = _keyed_amounts(doc, keys, skip)
        return found[-1][1] if found else None

    return extract


def currency(doc: Doc) -> str | None:
    """The first ISO code in the text, else the first currency symbol (or RM / Rs before a number)."""
    text = "\n".join(doc.lines)
    match = CURRENCY_CODES.search(text) or CURRENCY_SYMBOLS.search(text)
    return match.group().strip() if match else None
