"""Answers written as ``name: value`` lines, the answer format of prompts with ``output: lines``.

``parse_fields`` (``parsing.py``) asks this module only when an answer holds no JSON object at all.
A line is a requested field's name (any case, spaces, hyphens; after an optional list bullet or
Markdown bold) followed by ``:`` or ``=`` and its value; quotes, backticks and a trailing comma
around the value are dropped, and ``null``/``none``/``n/a``/empty mean no value. Like the JSON
reader it never raises, never evaluates the text, and stays linear in the answer's length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from invoicelab.parsing import _NULL_TEXTS, Parsed, key_name

_LINE = re.compile(r"\s*(?:[-*\u2022]\s+)?\**\s*(?P<key>[A-Za-z_][\w .\-]{0,80}?)\s*\**\s*[:=]\s*(?P<value>.*)")
_QUOTES = "\"'`"


def parse_lines(text: str, fields: Sequence[str]) -> Parsed | None:
    """Read requested fields from ``name: value`` lines.

    Args:
        text: The answer (the answer prefix, if any, already in front).
        fields: Field names to return.

    Returns:
        A Parsed (error None; ``repaired`` when other lines surround the pairs), or None when no line
        names a requested field. A field named twice keeps its first non-empty value.
    """
    wanted = {key_name(f): f for f in fields}
    found: dict[str, str | None] = {}
    other_lines = 0
    for line in text.splitlines():
        m = _LINE.fullmatch(line)
        name = wanted.get(key_name(m.group("key"))) if m else None
        if name is None:
            other_lines += bool(line.strip())
            continue
        if found.get(name) is None:
            found[name] = _value(m.group("value"))
    if not found:
        return None
    return Parsed({f: found.get(f) for f in fields}, None, other_lines > 0)


def _value(raw: str) -> str | None:
    value = raw.strip().removesuffix(",").strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in _QUOTES:
        value = value[1:-1].strip()
    return None if value.casefold() in _NULL_TEXTS else value
