"""The rules baseline: keyword and pattern heuristics over page text, one small rule per field role.

A field's role (total, subtotal, tax, date, due date, start/end date, vendor, customer, address,
number, currency) comes from its name hints and its type; a name it does not know falls back to
its type, and a text field with no role is looked up as a label named like the field. Each role is
a short function over the text lines driven by a table of keyword patterns. Values are returned as
they appear in the text; scoring normalises them.

This module must never import a model, an OCR engine or Ray, and never raise on odd text: a field
it cannot find is ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from invoicelab.config import FieldSpec, FieldType

AMOUNT, DATE, ID, TEXT, CURRENCY = (FieldType.amount, FieldType.date, FieldType.id, FieldType.text,
                                    FieldType.currency)

# (role, name hints, field types the role applies to). First match wins, so specific roles come first.
# A hint of 4+ letters matches anywhere in the name; a shorter one must be a whole name word.
ROLES: list[tuple[str, tuple[str, ...], tuple[FieldType, ...]]] = [
    ("subtotal", ("subtotal", "untaxed", "net", "pretax"), (AMOUNT,)),
    ("tax", ("tax", "vat", "gst"), (AMOUNT,)),
    ("total", ("total", "amount", "gross", "due", "sum", "paid"), (AMOUNT,)),
    ("due_date", ("due",), (DATE,)),
    ("start_date", ("from", "start", "begin"), (DATE,)),
    ("end_date", ("to", "end", "until"), (DATE,)),
    ("currency", ("currency",), (CURRENCY, TEXT, ID)),
    ("address", ("address", "street"), (TEXT,)),
    ("customer", ("customer", "client", "buyer", "advertiser", "billto", "soldto", "recipient"), (TEXT,)),
    ("vendor", ("vendor", "company", "issuer", "seller", "supplier", "merchant", "store", "shop"), (TEXT,)),
    ("number", ("number", "num", "no", "nr", "id", "invoice", "order", "contract", "receipt", "ref"), (ID, TEXT)),
]
TYPE_ROLES = {AMOUNT: "total", DATE: "date", ID: "number", CURRENCY: "currency"}

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
DUE_KEYS = re.compile(r"\bdue\b|vervaldatum|f[äa]llig|[ée]ch[ée]ance", re.I)
DATE_KEYS = re.compile(r"\bdate\b|\bdated\b|datum|\bdate\s*:|issued|factuurdatum", re.I)
RANGE_KEYS = re.compile(r"flight|schedule|period|dates|from|start|begin", re.I)
_PARTY = r"(?:customer|client|advertiser|buyer)(?:\s*name)?"
CUSTOMER_KEYS = re.compile(  # "Bill To", "Customer:", or a party word that starts its line (not in a sentence)
    rf"\b(?:bill(?:ed)?\s*to|sold\s*to|invoice\s*to)\b\s*:?|\b{_PARTY}\s*:|"
    rf"^\W*{_PARTY}\b(?!\s*(?:code|ref|external|id|service|copy|saving|'s))", re.I)
NUMBER_KEYS: list[tuple[str, re.Pattern[str]]] = [  # (what the number is, its label)
    ("invoice", re.compile(
        r"\binv(?:oice)?\s*(?:no\.?|nr\.?|number|num|#|n°)|\binvoice\s*[:#]|^\W*invoice(?=\s+\S*\d)|"
        r"factuur\s*(?:nummer|nr\.?|no\.?)|factur[ae]\s*n[°o]|rechnungs?\s*(?:nummer|nr\.?)", re.I)),
    ("contract", re.compile(r"\bcontract\s*(?:no\.?|number|#|/\s*revision)?", re.I)),
    ("order", re.compile(r"\border\s*(?:no\.?|number|#|/\s*rev)|\bord\s*#|ordernummer", re.I)),
    ("receipt", re.compile(r"\breceipt\s*(?:no\.?|number|#)", re.I)),
    ("bill", re.compile(r"\bbill\s*(?:no\.?|#)|\bb[i1l]{3}\s*#", re.I)),
    ("doc", re.compile(r"\bdoc(?:ument)?\s*(?:no\.?|#)", re.I)),
    ("ref", re.compile(r"\bref(?:erence)?\s*(?:no\.?|#|:)", re.I)),
]
NUMBER_VALUE = re.compile(r"[\s.:#°]*([A-Z0-9#][A-Z0-9\-/_.]*\d[A-Z0-9\-/_.]*)", re.I)
LEGAL_SUFFIX = re.compile(  # the legal entity is the company; a brand line above it is not
    r"\b(?:sdn\.?\s*bhd|bhd|berhad|ltd|limited|llc|inc|gmbh|corp(?:oration)?|co\.|b\.\s?v\.|s\.a\.r\.l|pvt|plc|llp|"
    r"s\.?a\.?s|s\.?a\.?|ag|sarl)(?:\W|$)", re.I)
TRADE_WORDS = re.compile(r"\b(?:company|enterprise|trading|restaurant|restoran|store|hardware|station|group|mart)\b", re.I)
NOT_NAME_LINE = re.compile(
    r"[:@]|\b(?:tax\s*invoice|invoice|receipt|welcome|tel|fax|phone|www|http|gst|page|date|cashier|table|"
    r"description|qty|quantity|price|amount|signatory)\b", re.I)
# Words of form labels: a "value" made mostly of them is the next label, not a value.
LABEL_WORDS = {"agency", "agy", "product", "code", "ref", "estimate", "number", "date", "invoice", "order",
               "contract", "name", "address", "advertiser", "customer", "client", "id", "no", "type"}
ADDRESS_STOP = re.compile(
    r"\b(?:tel|telephone|phone|fax|gst|tax\s*invoice|invoice|receipt|date|cashier|www|e-?mail|vat|hours?)\b|@", re.I)
REG_LINE = re.compile(r"^\W*(?:co\.?[\s-]*reg|company\s*(?:reg|no)|roc|reg\.?\s*no)|^\(?[A-Z0-9]*\d[\w\-]*\)?\.?$", re.I)
POSTCODE = re.compile(r"(?<!lot\s)(?<!no\s)(?<!no\.\s)\b\d{5}\b", re.I)  # a lot number is not one
CURRENCY_CODES = re.compile(r"\b(USD|EUR|GBP|MYR|INR|SGD|AUD|CAD|CHF|JPY|CNY|HKD|NZD|SEK|NOK|DKK|PLN)\b")
CURRENCY_SYMBOLS = re.compile(r"[$€£¥₹]|\bRM(?=\s?\d)|\bRs\.?(?=\s?\d)")

AMOUNT_RE = re.compile(
    r"(?<![\w.,])(?:[$€£]\s?)?(?:\d{1,3}(?:,\d{3})+|\d+)\.\d{2}(?![.,]?\d)(?!\s?%)"  # 1,234.56
    r"|(?<![\w.,])(?:\d{1,3}(?:\.\d{3})+|\d+),\d{2}(?![.,]?\d)(?!\s?%)"  # 1.234,56
    r"|(?<=[$€£])\s?\d{1,3}(?:,\d{3})*(?![.,]?\d)")  # $40
CURRENCY_PREFIX = re.compile(r"\b(RM|MYR|USD|EUR|GBP|SGD|INR|Rs\.?)(?=\d)")
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
DATE_RE = re.compile(
    r"(?<!\d)(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"  # 2018-03-23
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}"  # 25/12/2018 (also when a time is glued on)
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2}(?!\d)"  # 15-01-19
    rf"|\d{{1,2}}\s?{_MONTH}\s?,?\s?\d{{2,4}}(?!\d)"  # 06 JAN 2018
    rf"|{_MONTH}\s?\d{{1,2}}(?:,\s?|\s|/)\d{{2,4}}(?!\d))", re.I)  # Jan 6, 2018 / Feb13/20


@dataclass(frozen=True)
class Doc:
    """The text as non-empty stripped lines, and the field's name words (preferred labels)."""

    lines: list[str]
    words: tuple[str, ...]


def extract_rules(text: str, fields: dict[str, FieldSpec]) -> dict[str, str | None]:
    """Extract each field from page text with keyword and pattern heuristics.

    Args:
        text: Page text (OCR or a PDF text layer), lines separated by newlines.
        fields: Fields to extract, by output name.

    Returns:
        Each field's value as it appears in the text, or None where no rule finds one.
    """
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    out: dict[str, str | None] = {}
    for name, spec in fields.items():
        doc = Doc(lines, tuple(name_words(name)))
        extractor = EXTRACTORS.get(field_role(name, spec.type), _by_label)
        out[name] = extractor(doc)
    return out


def name_words(name: str) -> list[str]:
    """Lowercase words of a field name: ``contract_num`` -> contract, num; ``dateDue`` -> date, due."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def field_role(name: str, ftype: FieldType) -> str | None:
    """The role a field plays, from its name hints and type (None: look it up as a label)."""
    words = name_words(name)
    joined = "".join(words)
    for role, hints, types in ROLES:
        if ftype in types and any(h in words or (len(h) >= 4 and h in joined) for h in hints):
            return role
    return TYPE_ROLES.get(ftype)


# --- amounts --------------------------------------------------------------------------------


def amounts(line: str) -> list[str]:
    """Money amounts in a line, as written (currency symbol or code dropped; RM8.35 -> 8.35)."""
    return [value for value, _, _ in _amount_spans(CURRENCY_PREFIX.sub(r"\1 ", line))]


def amount_value(text: str) -> float:
    """``1,234.56`` / ``1.234,56`` / ``40`` as a float."""
    digits = re.sub(r"[^\d.,]", "", text)
    if re.search(r",\d{2}$", digits):
        digits = digits.replace(".", "").replace(",", ".")
    return float(digits.replace(",", "") or 0)


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


def _total(doc: Doc) -> str | None:
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


def _last_keyed(keys: re.Pattern[str], skip: re.Pattern[str] | None = None) -> Callable[[Doc], str | None]:
    """The last amount after the keyword (an invoice's final subtotal follows its section subtotals)."""

    def extract(doc: Doc) -> str | None:
        found = _keyed_amounts(doc, keys, skip)
        return found[-1][1] if found else None

    return extract


# --- dates ----------------------------------------------------------------------------------


def dates(line: str) -> list[str]:
    """Plausible dates in a line, as written."""
    return [m.group().strip() for m in DATE_RE.finditer(line) if _plausible(m.group())]


def _plausible(text: str) -> bool:
    nums = [int(n) for n in re.findall(r"\d+", text)]
    if len(nums) < 3:
        return len(nums) == 2  # month-name dates
    day_month = [n for n in nums if n < 100][:2] if nums[0] >= 1000 else nums[:2]
    return len(day_month) == 2 and min(day_month) >= 1 and min(day_month) <= 12 and max(day_month) <= 31


def _dates_after(doc: Doc, keys: re.Pattern[str], skip: re.Pattern[str] | None = None) -> list[str]:
    """Dates after a keyword on its line (or on the next line), in text order."""
    found = []
    for i, line in enumerate(doc.lines):
        match = keys.search(line)
        if match and not (skip and skip.search(line)):
            found += dates(line[match.start():]) or (dates(doc.lines[i + 1])[:1] if i + 1 < len(doc.lines) else [])
    return found


def _name_keys(doc: Doc, fallback: re.Pattern[str], drop: set[str]) -> re.Pattern[str]:
    """A keyword pattern from the field's own name words (``flight_from`` -> flight), else the fallback."""
    words = [w for w in doc.words if len(w) >= 3 and w not in drop]
    return re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")", re.I) if words else fallback


def _date(doc: Doc) -> str | None:
    found = _dates_after(doc, DATE_KEYS, DUE_KEYS) or [d for line in doc.lines for d in dates(line)]
    return found[0] if found else None


def _due_date(doc: Doc) -> str | None:
    found = _dates_after(doc, DUE_KEYS)
    return found[0] if found else None


def _range_dates(doc: Doc) -> list[str]:
    keys = _name_keys(doc, RANGE_KEYS, {"date", "from", "start", "begin", "end", "until"})
    return _dates_after(doc, keys) or _dates_after(doc, RANGE_KEYS)


def _start_date(doc: Doc) -> str | None:
    found = _range_dates(doc)
    return found[0] if found else None


def _end_date(doc: Doc) -> str | None:
    found = _range_dates(doc)
    return found[1] if len(found) > 1 else None


# --- names, addresses, numbers ----------------------------------------------------------------


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


def _vendor(doc: Doc) -> str | None:
    i = _vendor_index(doc)
    return (_clean_name(doc.lines[i]) or doc.lines[i]) if i is not None else None


def _address(doc: Doc) -> str | None:
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


def _after_label(line: str, match: re.Match[str]) -> str:
    """The value after a label, cut at the next ``Label:`` / ``Label #`` on the same line."""
    return _cut_at_label(line[match.end():].lstrip(" :#.-|\t"))


def _cut_at_label(text: str) -> str:
    return re.split(r"\s+\S+\s?[:#](?:\s|$)", text)[0].strip(" ,;|")


def _is_value(text: str) -> bool:
    """Not empty, has letters, and is not itself a row of form labels ("Agency Code Product")."""
    words = re.findall(r"[a-z]+", text.lower())
    return (sum(c.isalpha() for c in text) >= 2 and len(text) <= 80 and not text.endswith(":")
            and sum(w in LABEL_WORDS for w in words) * 2 < len(words))


def _labelled(doc: Doc, keys: re.Pattern[str], prefer: tuple[str, ...] = ()) -> str | None:
    """The first labelled value; with ``prefer``, only labels containing one of those words."""
    for i, line in enumerate(doc.lines):
        match = keys.search(line)
        if match and (not prefer or any(w in match.group().lower() for w in prefer)):
            value = _after_label(line, match)
            if not value and i + 1 < len(doc.lines) and not keys.search(doc.lines[i + 1]):
                value = _cut_at_label(doc.lines[i + 1].lstrip(" |\u201c\"'"))
            if _is_value(value):
                return value
    return None


def _customer(doc: Doc) -> str | None:
    return _labelled(doc, CUSTOMER_KEYS, prefer=doc.words) or _labelled(doc, CUSTOMER_KEYS)


def _number(doc: Doc) -> str | None:
    preferred = [(what, keys) for what, keys in NUMBER_KEYS if what in doc.words]
    for _, keys in preferred + NUMBER_KEYS:
        for line in doc.lines:
            for match in keys.finditer(line):
                value = NUMBER_VALUE.match(line, match.end())
                if value:
                    return value.group(1).rstrip(".-/")
    return None


def _currency(doc: Doc) -> str | None:
    text = "\n".join(doc.lines)
    match = CURRENCY_CODES.search(text) or CURRENCY_SYMBOLS.search(text)
    return match.group().strip() if match else None


def _by_label(doc: Doc) -> str | None:
    """A field without a role: the value after a label spelled like the field's name."""
    if not doc.words:
        return None
    label = re.compile(r"\b" + r"[\s_\-]*".join(map(re.escape, doc.words)) + r"\b\s*[:#]?", re.I)
    return _labelled(doc, label)


EXTRACTORS: dict[str, Callable[[Doc], str | None]] = {
    "total": _total,
    "subtotal": _last_keyed(SUBTOTAL_KEYS),
    "tax": _last_keyed(TAX_KEYS, NOT_TAX_KEYS),
    "date": _date,
    "due_date": _due_date,
    "start_date": _start_date,
    "end_date": _end_date,
    "vendor": _vendor,
    "address": _address,
    "customer": _customer,
    "number": _number,
    "currency": _currency,
}
