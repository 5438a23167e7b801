"""Prompt templates: one YAML file per prompt in ``prompts/``, with an id and a version.

A template has a system message, a user message with ``${placeholders}`` and whether the
assistant turn is begun with the answer's first key. Rendering fills in the experiment's field
list and the document text, in the prompt's field order, with its worked examples as chat turns
and its answer format (a JSON object, or ``name: value`` lines). Prompts generated from a set file
(``prompt_sets.py``) are the same dataclass with their axis levels in ``axes``. This module never
calls a model and never imports Ray.

Placeholders: ``${fields}`` (comma-separated names), ``${field_lines}`` (one line per field with
type and description, or names only), ``${example}`` (the answer for the fields' example values),
``${text}``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from string import Template

import yaml

from invoicelab.config import ConfigError, FieldSpec, FieldType, default_prompts_dir

PLACEHOLDERS = ("fields", "field_lines", "example", "text")
OUTPUTS = ("json", "lines")
ORDERS = ("given", "reversed", "shuffled")
MAX_EXAMPLES = 5
_TYPE_HINTS = {
    "amount": "amount as printed",
    "date": "date as printed",
    "id": "identifier as printed",
    "text": "text as printed",
    "currency": "currency code or symbol",
}


@dataclass(frozen=True)
class Prompt:
    """A prompt template.

    Attributes:
        id: Name used in experiment configs (generated prompts: ``<set>.<level>-<level>-...``).
        version: Bumped whenever the wording changes, so results stay comparable.
        system: System message ("" for none: the instruction is all in the user turn).
        user: User message template.
        answer_prefix: Begin the assistant turn with the first key (``{"<field>": "`` or ``<field>: ``).
        description: What the prompt is for.
        example_turn: Show one worked example first (same as ``examples: 1``), as a user turn (a tiny
            document made from the fields' example values) and the assistant's answer to it. Small
            models copy an example that sits inside the instruction; as a separate turn they learn the mapping.
        examples: Worked examples, each its own user/assistant pair of turns, each a different
            document (the fields' example values, then deterministic variations of them).
        describe_fields: ``${field_lines}`` gives each field's type and description (else its name only).
        field_order: ``given``, ``reversed`` or ``shuffled`` (with ``order_seed``): the order fields
            are listed and answered in.
        order_seed: Seed of a shuffled field order.
        output: ``json`` (one object) or ``lines`` (``name: value`` per line): the answer format the
            examples and the prefix use (the instruction text says it).
        axes: Axis -> level, for prompts generated from a set ({} for a hand-written file).
        source: The file it was read from (``<folder name>/<file name>``: the same in every checkout),
            or ``set:<name>`` for a generated prompt.
    """

    id: str
    version: int
    system: str
    user: str
    answer_prefix: bool = True
    description: str = ""
    example_turn: bool = False
    examples: int = 0
    describe_fields: bool = True
    field_order: str = "given"
    order_seed: int = 0
    output: str = "json"
    axes: dict[str, str] = field(default_factory=dict, hash=False)
    source: str = ""

    @property
    def n_examples(self) -> int:
        """How many worked examples precede the document."""
        return self.examples or int(self.example_turn)

    def render(self, fields: dict[str, FieldSpec], text: str) -> tuple[list[dict[str, str]], str]:
        """Messages for one document, and the text that begins the assistant's answer.

        Args:
            fields: The experiment's fields, in order.
            text: The document text (OCR output).

        Returns:
            ``(messages, prefix)``: chat messages (system if any, example user/assistant pairs, user)
            and the answer prefix ("" if none).
        """
        order = self.ordered(fields)
        values = {
            "fields": ", ".join(order),
            "field_lines": "\n".join(_field_line(n, s, self.describe_fields) for n, s in order.items()),
            "example": self.answer(example_values(order, 0)),  # field_lines has no examples: they get copied
            "text": text,
        }
        messages = [{"role": "system", "content": self.system.strip()}] if self.system.strip() else []
        for k in range(self.n_examples):
            shown = example_values(order, k)
            messages += [
                {"role": "user", "content": Template(self.user).safe_substitute(values, text=_example_text(shown))},
                {"role": "assistant", "content": self.answer(shown)},
            ]
        messages.append({"role": "user", "content": Template(self.user).safe_substitute(values).strip()})
        return messages, self.prefix(order)

    def ordered(self, fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        """The fields in this prompt's order."""
        names = list(fields)
        if self.field_order == "reversed":
            names.reverse()
        elif self.field_order == "shuffled":
            random.Random(self.order_seed).shuffle(names)
        return {n: fields[n] for n in names}

    def answer(self, values: dict[str, str | None]) -> str:
        """A complete answer in this prompt's format (what a worked example's assistant turn says)."""
        if self.output == "lines":
            return "\n".join(f"{name}: {'null' if v is None else v}" for name, v in values.items())
        return json.dumps(values, ensure_ascii=False)

    def prefix(self, ordered: dict[str, FieldSpec]) -> str:
        """The beginning of the answer put in the assistant turn ("" when ``answer_prefix`` is off)."""
        if not self.answer_prefix:
            return ""
        first = next(iter(ordered))
        return f"{first}: " if self.output == "lines" else '{"' + first + '": "'


def _field_line(name: str, spec: FieldSpec, describe: bool = True) -> str:
    if not describe:
        return f"- {name}"
    line = f"- {name} ({_TYPE_HINTS[spec.type.value]})"
    if spec.description:
        line += f": {spec.description}"
    return line


def _example_text(values: dict[str, str | None]) -> str:
    """A tiny document holding example values, for a worked example."""
    return "\n".join(f"{name.replace('_', ' ').title()}: {v}" for name, v in values.items() if v)


# --- example documents: the fields' example values, then deterministic variations ------------------

_TYPE_EXAMPLES = {"amount": "1,234.50", "date": "2024-03-05", "id": "INV-2024-0042", "currency": "EUR"}
_NAMES = ("Northwind", "Globex", "Initech", "Umbrella", "Stark", "Wayne")
_CODES = ("EUR", "USD", "GBP", "CHF", "JPY", "SEK")
_SYMBOLS = ("€", "$", "£", "¥")
_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%Y/%m/%d", "%d %b %Y", "%d %B %Y",
                 "%b %d, %Y", "%B %d, %Y")


def example_values(fields: dict[str, FieldSpec], k: int) -> dict[str, str]:
    """The values of worked example ``k``: the fields' own examples for 0, varied alike for every later one.

    Variations keep each value's shape (digits shifted, dates moved by weeks, another company name or
    currency), so three examples are three different documents a model cannot answer by copying.
    """
    return {name: vary(name, spec, k) for name, spec in fields.items()}


def vary(name: str, spec: FieldSpec, k: int) -> str:
    """Variation ``k`` of a field's example value (``k = 0``: the value itself).

    A field without an example gets one of its type's (a text field: "Example <Name>"), so that no
    worked example teaches the model to answer null.
    """
    value = spec.example or _TYPE_EXAMPLES.get(spec.type.value) or f"Example {name.replace('_', ' ').title()}"
    if k == 0:
        return value
    if spec.type == FieldType.date:
        moved = _move_date(value, 17 * k, spec.day_first)  # 17 weeks: month and day both change
        if moved:
            return moved
    if spec.type == FieldType.currency:
        pool = _SYMBOLS if value in _SYMBOLS else _CODES
        others = [c for c in pool if c != value]
        return others[(k - 1) % len(others)] if others else value
    if any(c.isdigit() for c in value):
        return re.sub(r"\d+", lambda m: _shift_digits(m.group(), k), value)
    words = value.split(" ", 1)
    return " ".join([_NAMES[(k - 1) % len(_NAMES)], *words[1:]])


def _shift_digits(run: str, k: int) -> str:
    """Each digit moved by ``3k`` (mod 10); a leading non-zero digit stays non-zero (no new leading zeros)."""
    out = [str((int(d) + 3 * k) % 10) for d in run]
    if run[0] != "0":
        out[0] = str((int(run[0]) - 1 + 3 * k) % 9 + 1)
    return "".join(out)


def _move_date(value: str, weeks: int, day_first: bool) -> str | None:
    formats = _DATE_FORMATS if day_first else tuple(sorted(_DATE_FORMATS, key=lambda f: f != "%m/%d/%Y"))
    for fmt in formats:
        try:
            return (datetime.strptime(value, fmt) + timedelta(weeks=weeks)).strftime(fmt)
        except ValueError:
            continue
    return None


# --- files ------------------------------------------------------------------------------------------


def available(prompts_dir: Path) -> list[str]:
    """Prompt ids found in a folder."""
    return sorted(p.stem for p in Path(prompts_dir).glob("*.yaml"))


def unknown_placeholders(template: str) -> set[str]:
    """``${names}`` in a template that rendering does not fill."""
    return {m.group("named") or m.group("braced") for m in Template.pattern.finditer(template)} - {None} \
        - set(PLACEHOLDERS)


def check_settings(prompt: Prompt, where: str) -> None:
    """Refuse a prompt whose rendering settings are out of range.

    Raises:
        ConfigError: naming ``where``, the setting and what is allowed.
    """
    unknown = unknown_placeholders(prompt.user)
    if unknown:
        raise ConfigError(f"{where}: unknown placeholders {sorted(unknown)}; available: {', '.join(PLACEHOLDERS)}")
    if prompt.output not in OUTPUTS:
        raise ConfigError(f"{where}: unknown output {prompt.output!r}; available: {', '.join(OUTPUTS)}")
    if prompt.field_order not in ORDERS:
        raise ConfigError(f"{where}: unknown field_order {prompt.field_order!r}; available: {', '.join(ORDERS)}")
    if not 0 <= prompt.examples <= MAX_EXAMPLES:
        raise ConfigError(f"{where}: examples must be 0..{MAX_EXAMPLES}, got {prompt.examples}")


def load_prompt(prompt_id: str, prompts_dir: Path | None = None) -> Prompt:
    """Load and check one prompt template.

    Raises:
        ConfigError: unknown id (the message lists those that exist) or a malformed template.
    """
    folder = Path(prompts_dir) if prompts_dir else default_prompts_dir()
    path = folder / f"{prompt_id}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown prompt {prompt_id!r}; available: {', '.join(available(folder)) or '(none)'}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        prompt = Prompt(
            id=str(data["id"]), version=int(data["version"]), system=str(data["system"]), user=str(data["user"]),
            answer_prefix=bool(data.get("answer_prefix", True)), description=str(data.get("description", "")),
            example_turn=bool(data.get("example_turn", False)), examples=int(data.get("examples", 0)),
            describe_fields=bool(data.get("describe_fields", True)),
            field_order=str(data.get("field_order", "given")), order_seed=int(data.get("order_seed", 0)),
            output=str(data.get("output", "json")), source=f"{folder.name}/{path.name}",  # not where the checkout is
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: a prompt needs id, version, system and user ({err})") from None
    if prompt.id != prompt_id:
        raise ConfigError(f"{path}: id {prompt.id!r} does not match the file name")
    check_settings(prompt, str(path))
    return prompt
