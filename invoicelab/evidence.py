"""Evidence: does a field's true value occur in the document text a model was given?

When a model gets a value wrong, this tells the two causes apart: the truth never reached the model
(OCR lost or garbled it, or the text was cut before it), or the model had it and chose wrongly. Each
field type looks for its truth in its own way: amounts as numbers ("1.234,50" in the text is the
truth "1234.50"), dates as calendar days ("12 Mar 2024" is "2024-03-12"), ids, texts and currencies
as casefolded substrings, whitespace ignored. Every reading is lenient, so that "not in the text"
is only claimed when no reasonable reading finds the value. Everything here is pure: it never raises
on a value, never reads files, never imports Ray or a model library.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from invoicelab.config import FieldSpec, FieldType
from invoicelab.normalize import as_str, normalize_amount, normalize_date

__all__ = ["in_text"]

_SPACES = re.compile(r"\s+")
# A number with spaces or apostrophes between groups of three ("1 234,50", "1'234.50"), or digits with
# dots and commas ("1,234.50", "1.234,50", "13.10"); both are tried, since a space may also part two numbers.
_GROUPED_NUMBER = re.compile(r"(?<![0-9])[0-9]{1,3}(?:[ \u00a0\u202f'’][0-9]{3})+(?:[.,][0-9]+)?(?![0-9])")
_PLAIN_NUMBER = re.compile(r"[0-9][0-9.,]*")
_SWAP_SEPARATORS = str.maketrans(".,", ",.")
_WORD = r"[^\W\d_]{3,10}\.?"  # a month name ("Mar", "March", "févr.")
_DATE_TOKENS = (
    r"[0-9]{1,4}\s*[-/.]\s*[0-9]{1,2}\s*[-/.]\s*[0-9]{2,4}",  # 12/03/2024, 2024-03-12, 12.03.24
    r"[0-9]{8}",  # 20240312
    r"[0-9]{1,2}(?:st|nd|rd|th|er)?[\s\-/.,]*(?:of\s+)?" + _WORD + r"[\s\-/.,']*[0-9]{2,4}",  # 12 Mar 2024
    _WORD + r"[\s\-/.]*[0-9]{1,2}(?:st|nd|rd|th)?[\s,\-/.']*[0-9]{2,4}",  # March 12, 2024
    r"[0-9]{4}[\s\-/.]*" + _WORD + r"[\s\-/.]*[0-9]{1,2}",  # 2024 Mar 12
)
# Every start position, not only non-overlapping matches: one greedy token must not hide the next.
_DATE_CANDIDATE = re.compile(r"(?<![0-9])(?=(" + "|".join(f"(?:{t})" for t in _DATE_TOKENS) + r"))", re.IGNORECASE)


def in_text(text: object, truth_verbatim: object, truth_normalized: object, spec: FieldSpec) -> bool | None:
    """Whether a field's true value occurs in a document's text.

    Args:
        text: The document text the model was given (OCR or a PDF text layer).
        truth_verbatim: The true value as the dataset writes it (``scoring.truth_value``).
        truth_normalized: Its normalised form, where the dataset has one (``scoring.gt_value``).
        spec: The field's rule: ``type`` picks the reading, ``day_first`` reads ambiguous dates.

    Returns:
        None when there is no text or no truth; else True when the text holds the value: amounts as any
        number in the text with the same amount (either reading of "." and ","), dates as any date-like
        token that reads as the same day (or the verbatim truth itself), ids/text/currencies as a
        casefolded substring with all whitespace removed on both sides (OCR and annotators space
        punctuation and line breaks differently: "T2,SKY", "T2, SKY", a line break after the comma).
    """
    page = as_str(text)
    truths = [t for t in (as_str(truth_verbatim), as_str(truth_normalized)) if t and t.strip()]
    if not page or not page.strip() or not truths:
        return None
    if spec.type == FieldType.amount:
        return _amount_in(page, truths)
    if spec.type == FieldType.date:
        return _date_in(page, truths, spec.day_first)
    return _phrase_in(page, truths)


def _amount_in(page: str, truths: list[str]) -> bool:
    wanted = {_unsigned(normalize_amount(t)) for t in truths} - {None}
    return bool(wanted & _page_amounts(page)) if wanted else _phrase_in(page, truths)


@lru_cache(maxsize=256)
def _page_amounts(page: str) -> frozenset[str]:
    """Every amount a page's numbers can be read as (cached: a page is asked once per amount field and prompt)."""
    page = unicodedata.normalize("NFKC", page)
    tokens = {m.group() for m in _GROUPED_NUMBER.finditer(page)} | set(_PLAIN_NUMBER.findall(page))
    # "1.234" is 1234 in one convention and 1.234 in the other: either reading counts as present.
    readings = (_unsigned(normalize_amount(r)) for t in tokens for r in (t, t.translate(_SWAP_SEPARATORS)))
    return frozenset(r for r in readings if r)


def _unsigned(amount: str | None) -> str | None:
    """The amount without its sign: a credit note's "-12.00" is present where the page prints "12.00"."""
    return amount.lstrip("-") if amount else None


def _date_in(page: str, truths: list[str], day_first: bool) -> bool:
    wanted = {normalize_date(t, day_first) for t in truths} - {None}
    if not wanted:
        return _phrase_in(page, truths)
    if wanted & _page_dates(page, day_first):
        return True
    # The verbatim truth itself, digits not glued on (a date read with the other day_first is still there).
    return any(re.search(r"(?<![0-9])" + re.escape(t.strip()) + r"(?![0-9])", page) for t in truths)


@lru_cache(maxsize=256)
def _page_dates(page: str, day_first: bool) -> frozenset[str]:
    """Every ISO date that a date-like token of the page reads as."""
    page = unicodedata.normalize("NFKC", page)
    tokens = {m.group(1) for m in _DATE_CANDIDATE.finditer(page)}
    return frozenset(d for d in (normalize_date(t, day_first) for t in tokens) if d)


def _phrase_in(page: str, truths: list[str]) -> bool:
    # Compared with all whitespace removed: "T2,SKY AVENUE" is on the page as "T2, SKY AVENUE" or "T2,\nSKY".
    packed = _packed(page)
    return any(_packed(truth) and _packed(truth) in packed for truth in truths)


def _packed(text: str) -> str:
    """Casefolded NFKC text without whitespace (collapsing whitespace first would change nothing more)."""
    return _SPACES.sub("", unicodedata.normalize("NFKC", text).casefold())
