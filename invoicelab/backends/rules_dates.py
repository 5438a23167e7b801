"""Date rules of the rules baseline: the issue date, the due date and the two ends of a date range.

Dates are returned as written in the text ("25/12/2018", "06 JAN 2018"); scoring reads them with
``invoicelab.normalize``, whose month abbreviations this module shares. This module never imports a
model, an OCR engine or Ray, and never raises on odd text: a date it cannot find is ``None``.
"""

from __future__ import annotations

import re

from invoicelab.backends.rules_doc import Doc, name_keys
from invoicelab.normalize import MONTH_ABBREVIATIONS

DUE_KEYS = re.compile(r"\bdue\b|vervaldatum|f[äa]llig|[ée]ch[ée]ance", re.I)
DATE_KEYS = re.compile(r"\bdate\b|\bdated\b|datum|\bdate\s*:|issued|factuurdatum", re.I)
RANGE_KEYS = re.compile(r"flight|schedule|period|dates|from|start|begin", re.I)
_MONTH = "(?:" + "|".join(MONTH_ABBREVIATIONS) + r")[a-z]*\.?"  # "sept", "January": the abbreviation and more
DATE_RE = re.compile(
    r"(?<!\d)(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"  # 2018-03-23
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}"  # 25/12/2018 (also when a time is glued on)
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2}(?!\d)"  # 15-01-19
    rf"|\d{{1,2}}\s?{_MONTH}\s?,?\s?\d{{2,4}}(?!\d)"  # 06 JAN 2018
    rf"|{_MONTH}\s?\d{{1,2}}(?:,\s?|\s|/)\d{{2,4}}(?!\d))", re.I)  # Jan 6, 2018 / Feb13/20


def dates(line: str) -> list[str]:
    """Plausible dates in a line, as written."""
    return [m.group().strip() for m in DATE_RE.finditer(line) if _plausible(m.group())]


def _plausible(text: str) -> bool:
    """Day and month could be read from the numbers (month lengths are scoring's business)."""
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


def date(doc: Doc) -> str | None:
    """The first date after a date label (not a due date), else the first date in the text."""
    found = _dates_after(doc, DATE_KEYS, DUE_KEYS) or [d for line in doc.lines for d in dates(line)]
    return found[0] if found else None


def due_date(doc: Doc) -> str | None:
    """The first date after a due label."""
    found = _dates_after(doc, DUE_KEYS)
    return found[0] if found else None


def _range_dates(doc: Doc) -> list[str]:
    keys = name_keys(doc, RANGE_KEYS, {"date", "from", "start", "begin", "end", "until"})
    return _dates_after(doc, keys) or _dates_after(doc, RANGE_KEYS)


def start_date(doc: Doc) -> str | None:
    """The first date of a range ("Flight Dates 01/28/20 - 02/03/20")."""
    found = _range_dates(doc)
    return found[0] if found else None


def end_date(doc: Doc) -> str | None:
    """The second date of a range."""
    found = _range_dates(doc)
    return found[1] if len(found) > 1 else None
