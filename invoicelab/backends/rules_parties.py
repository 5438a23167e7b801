"""Party rules of the rules baseline: the vendor's name and address at the top, the customer after its label.

The vendor is the legal name near the top of the page (a brand line above it is not); its address is
the lines after it up to a phone, tax or date line. This module never imports a model, an OCR engine
or Ray, and never raises on odd text: a party it cannot find is ``None``.
"""

from __future__ import annotations

import re

from invoicelab.backends.rules_dates import dates
from invoicelab.backends.rules_doc import Doc, labelled

_PARTY = r"(?:customer|client|advertiser|buyer)(?:\s*name)?"
CUSTOMER_KEYS = re.compile(  # "Bill To", "Customer:", or a party word that starts its line (not in a sentence)
    rf"\b(?:bill(?:ed)?\s*to|sold\s*to|invoice\s*to)\b\s*:?|\b{_PARTY}\s*:|"
    rf"^\W*{_PARTY}\b(?!\s*(?:code|ref|external|id|service|copy|saving|'s))", re.I)
LEGAL_SUFFIX = re.compile(  # the legal entity is the company; a brand line above it is not
    r"\b(?:sdn\.?\s*bhd|bhd|berhad|ltd|limited|llc|inc|gmbh|corp(?:oration)?|co\.|b\.\s?v\.|s\.a\.r\.l|pvt|plc|llp|"
    r"s\.?a\.?s|s\.?a\.?|ag|sarl)(?:\W|$)", re.I)
TRADE_WORDS = re.compile(r"\b(?:company|enterprise|trading|restaurant|restoran|store|hardware|station|group|mart)\b", re.I)
NOT_NAME_LINE = re.compile(
    r"[:@]|\b(?:tax\s*invoice|invoice|receipt|welcome|tel|fax|phone|www|http|gst|page|date|cashier|table|"
    r"description|qty|quantity|price|amount|signatory)\b", re.I)
ADDRESS_STOP = re.compile(
    r"\b(?:tel|telephone|phone|fax|gst|tax\s*invoice|invoice|receipt|date|cashier|www|e-?mail|vat|hours?)\b|@", re.I)
REG_LINE = re.compile(r"^\W*(?:co\.?[\s-]*reg|company\s*(?:reg|no)|roc|reg\.?\s*no)|^\(?[A-Z0-9]*\d[\w\-]*\)?\.?$", re.I)
POSTCODE = re.compile(r"(?<!lot\s)(?<!no\s)(?<!no\.\s)\b\d{5}\b", re.I)  # a lot number is not one


def _is_name_line(line: str) -> bool:
    letters = sum(c.isalpha() for c in line)
    digits = sum(c.isdigit() for c in line)
    return letters >= 3 and letters > 2 * digits and not NOT_NAME_LINE.search(line) and not dates(line)


def _clean_name(line: str) -> str:
    """Drop a trailing registration number in brackets: ``AEON CO. (M) BHD (126926-H)``."""
    return re.sub(r"\s*\([^()]*\d[^()]*\)\s*$", "", line).strip()


def _vendor_index(doc: Doc, window: int = 8) -> int | None:
    head = [(i, ln) for i, ln in enumerate(doc.lines[:window]) if _is_name_line(_clean_name(ln))]
    for suffix in (LEGAL_SUFFIX, TRADE_WORDS):
        named = [i for i, ln in head if suffix.search(ln)]
        if named:
            return named[0]
    return head[0][0] if head else None


def vendor(doc: Doc) -> str | None:
    """The legal (or trade) name among the top lines, else the first name-like line."""
    i = _vendor_index(doc)
    return (_clean_name(doc.lines[i]) or doc.lines[i]) if i is not None else None


def address(doc: Doc) -> str | None:
    """Lines after the vendor until a phone/tax/date line, or through the postcode line."""
    start = _vendor_index(doc)
    if start is None:
        return None
    parts: list[str] = []
    for line in doc.lines[start + 1:start + 9]:
        if REG_LINE.search(line) or (not parts and ADDRESS_STOP.search(line)):
            continue  # registration numbers and GST ids sit between name and address
        if ADDRESS_STOP.search(line) or dates(line) or len(parts) >= 5:
            break
        parts.append(line)
        if POSTCODE.search(line):
            break
    return " ".join(parts) or None


def customer(doc: Doc) -> str | None:
    """The value after a Bill To / Customer label, preferring labels that name the field's own words."""
    return labelled(doc, CUSTOMER_KEYS, prefer=doc.words) or labelled(doc, CUSTOMER_KEYS)
