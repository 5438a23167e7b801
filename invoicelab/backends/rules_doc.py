"""The page as the rules baseline reads it, and values read after a label ("Invoice No: 123").

``Doc`` is the text as lines plus the field's name words; the helpers here find a labelled value on a
label's line or the next one, and cut it at the next label. They never raise on odd text: a value
that is not there is ``None``. This module never imports a model, an OCR engine or Ray.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Doc:
    """The text as non-empty stripped lines, and the field's name words (preferred labels)."""

    lines: list[str]
    words: tuple[str, ...]


# Words of form labels: a "value" made mostly of them is the next label, not a value.
LABEL_WORDS = {"agency", "agy", "product", "code", "ref", "estimate", "number", "date", "invoice", "order",
               "contract", "name", "address", "advertiser", "customer", "client", "id", "no", "type"}
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


def name_keys(doc: Doc, fallback: re.Pattern[str], drop: set[str]) -> re.Pattern[str]:
    """A keyword pattern from the field's own name words (``flight_from`` -> flight), else the fallback."""
    words = [w for w in doc.words if len(w) >= 3 and w not in drop]
    return re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")", re.I) if words else fallback


def after_label(line: str, match: re.Match[str]) -> str:
    """The value after a label, cut at the next ``Label:`` / ``Label #`` on the same line."""
    return cut_at_label(line[match.end():].lstrip(" :#.-|\t"))


def cut_at_label(text: str) -> str:
    """The text up to the next ``Label:`` / ``Label #``, without edge separators."""
    return re.split(r"\s+\S+\s?[:#](?:\s|$)", text)[0].strip(" ,;|")


def is_value(text: str) -> bool:
    """Not empty, has letters, and is not itself a row of form labels ("Agency Code Product")."""
    words = re.findall(r"[a-z]+", text.lower())
    return (sum(c.isalpha() for c in text) >= 2 and len(text) <= 80 and not text.endswith(":")
            and sum(w in LABEL_WORDS for w in words) * 2 < len(words))


def labelled(doc: Doc, keys: re.Pattern[str], prefer: tuple[str, ...] = ()) -> str | None:
    """The first labelled value; with ``prefer``, only labels containing one of those words."""
    for i, line in enumerate(doc.lines):
        match = keys.search(line)
        if match and (not prefer or any(w in match.group().lower() for w in prefer)):
            value = after_label(line, match)
            if not value and i + 1 < len(doc.lines) and not keys.search(doc.lines[i + 1]):
                value = cut_at_label(doc.lines[i + 1].lstrip(" |\u201c\"'"))
            if is_value(value):
                return value
    return None


def number(doc: Doc) -> str | None:
    """The id after a number label, trying first the kinds the field's name mentions (``order_no``)."""
    preferred = [(what, keys) for what, keys in NUMBER_KEYS if what in doc.words]
    for _, keys in preferred + NUMBER_KEYS:
        for line in doc.lines:
            for match in keys.finditer(line):
                value = NUMBER_VALUE.match(line, match.end())
                if value:
                    return value.group(1).rstrip(".-/")
    return None


def by_label(doc: Doc) -> str | None:
    """A field without a role: the value after a label spelled like the field's name."""
    if not doc.words:
        return None
    label = re.compile(r"\b" + r"[\s_\-]*".join(map(re.escape, doc.words)) + r"\b\s*[:#]?", re.I)
    return labelled(doc, label)
