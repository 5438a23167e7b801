"""The rules baseline: keyword and pattern heuristics over page text, one small rule per field role.

A field's role (total, subtotal, tax, date, due date, start/end date, vendor, customer, address,
number, currency) comes from its name hints and its type; a name it does not know falls back to
its type, and a text field with no role is looked up as a label named like the field. Each role is
a short function over the text lines driven by a table of keyword patterns; the roles live in
``rules_money`` (amounts, currency), ``rules_dates``, ``rules_parties`` (vendor, address, customer)
and ``rules_doc`` (the lines, labelled values, numbers). Values are returned as they appear in the
text; scoring normalises them.

This module must never import a model, an OCR engine or Ray, and never raise on odd text: a field
it cannot find is ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from invoicelab.backends import rules_dates, rules_money, rules_parties
from invoicelab.backends.rules_doc import Doc, by_label, number
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

EXTRACTORS: dict[str, Callable[[Doc], str | None]] = {
    "total": rules_money.total,
    "subtotal": rules_money.last_keyed(rules_money.SUBTOTAL_KEYS),
    "tax": rules_money.last_keyed(rules_money.TAX_KEYS, rules_money.NOT_TAX_KEYS),
    "currency": rules_money.currency,
    "date": rules_dates.date,
    "due_date": rules_dates.due_date,
    "start_date": rules_dates.start_date,
    "end_date": rules_dates.end_date,
    "vendor": rules_parties.vendor,
    "address": rules_parties.address,
    "customer": rules_parties.customer,
    "number": number,
}


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
        extractor = EXTRACTORS.get(field_role(name, spec.type), by_label)
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
