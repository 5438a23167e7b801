"""Model output parsing: a model's raw text becomes one string (or None) per requested field.

A small, forgiving JSON-ish reader written by hand. It finds the object among prose or code fences,
accepts trailing or missing commas, single quotes, bare keys and bare words, and an output cut off
by the token limit (the complete pairs are kept), and matches keys whatever their case, spaces,
hyphens or camelCase. It must never raise, never ``eval`` the text, never import a model library,
and stays linear in the length of the output: a text it cannot read becomes ``Parsed.error``.
An answer without any JSON object is read as ``name: value`` lines (``parsing_lines.py``) when
such lines name requested fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

_MAX_DEPTH = 64  # deeper nesting is not an answer about invoice fields; it also bounds recursion
_MAX_CANDIDATES = 32  # '{' positions tried at most
_NULL_TEXTS = frozenset({"", "null", "none", "n/a", "[]", "{}"})

_WS = re.compile(r"\s*")
_STRING_RUN = {'"': re.compile(r'[^"\\]*'), "'": re.compile(r"[^'\\]*")}
_BARE_VALUE = re.compile(r"[^,{}\[\]\n]*")
_BARE_KEY = re.compile(r"[A-Za-z_][\w \-.]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD = re.compile(r"[\W_]+")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_BARE_WORDS = {"true": True, "false": False, "null": None, "none": None}


@dataclass(frozen=True)
class Parsed:
    """What a model's answer says about the requested fields.

    Attributes:
        fields: Every requested field name, mapped to its value as text, or None where the answer
            has no (or an empty/null) value for it.
        error: None when a JSON object was found; else a short reason such as "no JSON object in output".
        repaired: True when the answer was not exactly one strict JSON object (prose, code fences,
            trailing commas, single quotes, a cut-off end... had to be tolerated).
    """

    fields: dict[str, str | None]
    error: str | None
    repaired: bool


class _Truncated(Exception):
    """The text ended inside a value."""


class _Malformed(Exception):
    """Something that is not JSON-ish stood where a key or value was expected."""


class _Number(str):
    """A numeric token kept verbatim, so that ``1234.50`` stays "1234.50"."""


class _Scanner:
    """A recursive-descent reader of one JSON-ish object, starting at a '{'."""

    def __init__(self, text: str, pos: int) -> None:
        self.text, self.pos, self.depth = text, pos, 0

    def peek(self) -> str:
        """Skip whitespace and return the next character (raises _Truncated at the end)."""
        self.pos = _WS.match(self.text, self.pos).end()
        if self.pos >= len(self.text):
            raise _Truncated
        return self.text[self.pos]

    def object_into(self, out: dict) -> None:
        """Read an object, adding each complete pair to ``out`` as soon as it is read."""
        self._enter()
        while True:
            c = self.peek()
            if c == "}":
                self.pos += 1
                break
            if c == ",":  # leading, doubled or trailing comma
                self.pos += 1
                continue
            key = self._key()
            if self.peek() not in ":=":
                raise _Malformed
            self.pos += 1
            out[key] = self.value()
        self.depth -= 1

    def value(self) -> object:
        c = self.peek()
        if c == "{":
            out: dict = {}
            self.object_into(out)
            return out
        if c == "[":
            return self._array()
        if c in "\"'":
            return self._string()
        if c in "}]:":
            raise _Malformed
        return self._bare()

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Malformed
        self.pos += 1  # the opening bracket

    def _array(self) -> list:
        self._enter()
        out = []
        while True:
            c = self.peek()
            if c == "]":
                self.pos += 1
                break
            if c == ",":
                self.pos += 1
                continue
            out.append(self.value())
        self.depth -= 1
        return out

    def _key(self) -> str:
        if self.text[self.pos] in "\"'":
            return self._string()
        m = _BARE_KEY.match(self.text, self.pos)
        if not m:
            raise _Malformed
        self.pos = m.end()
        return m.group().strip()

    def _bare(self) -> object:
        """A value without quotes: a number, true/false/null, or a word up to , } ] or a newline."""
        m = _BARE_VALUE.match(self.text, self.pos)
        self.pos = m.end()
        if self.pos >= len(self.text):
            raise _Truncated  # the token may have been cut
        token = m.group().strip()
        if _NUMBER.fullmatch(token):
            return _Number(token)
        return _BARE_WORDS.get(token.casefold(), token) if token else None

    def _string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        parts = []
        while True:
            m = _STRING_RUN[quote].match(self.text, self.pos)
            parts.append(m.group())
            self.pos = m.end()
            if self.pos >= len(self.text):
                raise _Truncated
            if self.text[self.pos] == "\\":
                parts.append(self._escape())
            elif self._closes(self.pos + 1):
                self.pos += 1
                return _fix_surrogates("".join(parts))
            else:  # an unescaped quote inside the value: `"JOE "THE BEST" SHOP"`, `'Joe's'`
                parts.append(quote)
                self.pos += 1

    def _closes(self, i: int) -> bool:
        """Whether a quote just before ``i`` ends the string: what follows must be able to follow a string."""
        j = _WS.match(self.text, i).end()
        if j >= len(self.text) or self.text[j] in ",:}]":
            return True
        return j > i and self.text[j] in "\"'"  # a missing comma before the next key

    def _escape(self) -> str:
        nxt = self.text[self.pos + 1 : self.pos + 2]
        if not nxt:
            raise _Truncated
        if nxt == "u":
            digits = self.text[self.pos + 2 : self.pos + 6]
            if _HEX4.fullmatch(digits):
                self.pos += 6
                return chr(int(digits, 16))
            if len(digits) < 4 and self.pos + 6 > len(self.text):
                raise _Truncated
        self.pos += 2
        return _ESCAPES.get(nxt, nxt)


def _fix_surrogates(text: str) -> str:
    """Join \\ud83d\\ude00-style pairs into one character; lone halves become U+FFFD."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@dataclass
class _Candidate:
    pairs: dict
    start: int
    end: int
    complete: bool
    truncated: bool

    @property
    def is_object(self) -> bool:
        return self.complete or bool(self.pairs)


def _read_object(text: str, start: int) -> _Candidate:
    scanner, pairs = _Scanner(text, start), {}
    try:
        scanner.object_into(pairs)
        return _Candidate(pairs, start, scanner.pos, True, False)
    except _Truncated:
        return _Candidate(pairs, start, len(text), False, True)
    except (_Malformed, RecursionError):
        return _Candidate(pairs, start, max(scanner.pos, start + 1), False, False)


def key_name(key: object) -> str:
    """The comparable form of a key: ``Invoice Number``, ``invoice-number``, ``invoiceNumber`` -> invoice_number."""
    spaced = _CAMEL.sub("_", str(key).strip())
    return _NON_WORD.sub("_", spaced.casefold()).strip("_")


def _field_source(obj: dict, wanted: set[str]) -> dict | None:
    """The object itself if it has a wanted key, else its first nested object that has one."""
    for source in (obj, *(v for v in obj.values() if isinstance(v, dict))):
        if any(key_name(k) in wanted for k in source):
            return source
    return None


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, _Number):
        try:
            return json.loads(value)
        except ValueError:  # an integer too long for int(): keep its digits
            return str(value)
    return value


def _as_text(value: object) -> str | None:
    """A field value as text: numbers verbatim, lists/objects as compact JSON, null/empty as None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str):
        value = json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"))
    text = value.strip()
    return None if text.casefold() in _NULL_TEXTS else text


def _is_strict(text: str, cand: _Candidate) -> bool:
    """Whether the whole text is exactly this one object in strict JSON."""
    span = text[cand.start : cand.end]
    if not cand.complete or span != text.strip():
        return False
    try:
        json.loads(span)
    except (ValueError, RecursionError):
        return False
    return True


def _parse(text: str, fields: Sequence[str]) -> Parsed:
    """Try objects from successive '{' positions; the first holding a requested key wins, else the first."""
    wanted = {key_name(f) for f in fields}
    first, cut_off, pos, scanned = None, False, 0, 0
    for _ in range(_MAX_CANDIDATES):
        start = text.find("{", pos)
        if start < 0 or scanned > 2 * len(text) + 16_384:  # bounds the work on brace-and-quote garbage
            break
        cand = _read_object(text, start)
        scanned, cut_off = scanned + cand.end - start, cut_off or cand.truncated
        if cand.is_object:
            source = _field_source(cand.pairs, wanted)
            if source is not None:
                return Parsed(_pick(source, fields), None, not _is_strict(text, cand))
            first = first or cand
        pos = start + 1  # an object without requested keys may still hold one, or be prose misread
    if first is not None:
        return Parsed(_pick(first.pairs, fields), None, not _is_strict(text, first))
    return Parsed(dict.fromkeys(fields), _no_object_reason(text, cut_off), False)


def _pick(source: dict, fields: Sequence[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for key, value in source.items():
        name, text = key_name(key), _as_text(value)
        if text is not None or name not in found:
            found[name] = text
    return {f: found.get(key_name(f)) for f in fields}


def _no_object_reason(text: str, cut_off: bool) -> str:
    if not text.strip():
        return "empty output"
    if cut_off:
        return "JSON object cut off before any complete field"
    return "no JSON object in output"


def _count(parsed: Parsed) -> int:
    return sum(v is not None for v in parsed.fields.values())


def parse_fields(text: str, fields: Sequence[str], prefix: str = "") -> Parsed:
    """Read the requested fields from a model's answer.

    Args:
        text: The generated text, as the model wrote it.
        fields: Field names to return (each appears as a key of ``Parsed.fields``).
        prefix: Text put in the assistant turn before generation (e.g. ``{"invoice_number": "``);
            it is read as the start of the answer.

    Returns:
        A Parsed. Where several objects appear, the first one holding any requested key is used (else
        the first one). An answer cut off by the token limit keeps its complete pairs. Never raises.
    """
    text = text if isinstance(text, str) else ("" if text is None else str(text))
    prefix = prefix if isinstance(prefix, str) else ""
    fields = [str(f) for f in fields]
    parsed = _parse(prefix + text, fields)
    if prefix and text.lstrip().startswith("{"):
        # The model may have begun a whole object of its own after the prefilled prefix.
        alone = _parse(text, fields)
        if _count(alone) > _count(parsed):
            return Parsed(alone.fields, alone.error, True)
    if parsed.error == "no JSON object in output":  # prompts may ask for `name: value` lines instead
        from invoicelab.parsing_lines import parse_lines  # here: that module reads this one's Parsed

        return parse_lines(prefix + text, fields) or parsed
    return parsed
