"""Prompt templates: one YAML file per prompt in ``prompts/``, with an id and a version.

A template has a system message, a user message with ``${placeholders}`` and whether the
assistant turn is begun with the answer's first JSON key. Rendering fills in the experiment's
field list and the document text. This module never calls a model and never imports Ray.

Placeholders: ``${fields}`` (comma-separated names), ``${field_lines}`` (one line per field with
type, description and example), ``${example}`` (a JSON object of example values), ``${text}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from string import Template

import yaml

from invoicelab.config import ConfigError, FieldSpec

PLACEHOLDERS = ("fields", "field_lines", "example", "text")
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
        id: Name used in experiment configs.
        version: Bumped whenever the wording changes, so results stay comparable.
        system: System message.
        user: User message template.
        answer_prefix: Begin the assistant turn with ``{"<first field>": "``.
        description: What the prompt is for.
        example_turn: Show one worked example first, as a user turn (a tiny document made from the
            fields' example values) and the assistant's JSON answer to it. Small models copy an
            example that sits inside the instruction; as a separate turn they learn the mapping.
    """

    id: str
    version: int
    system: str
    user: str
    answer_prefix: bool = True
    description: str = ""
    example_turn: bool = False

    def render(self, fields: dict[str, FieldSpec], text: str) -> tuple[list[dict[str, str]], str]:
        """Messages for one document, and the text that begins the assistant's answer.

        Args:
            fields: The experiment's fields, in order.
            text: The document text (OCR output).

        Returns:
            ``(messages, prefix)``: chat messages (system, user) and the answer prefix ("" if none).
        """
        values = {
            "fields": ", ".join(fields),
            "field_lines": "\n".join(_field_line(name, spec) for name, spec in fields.items()),  # no examples: copied
            "example": json.dumps({n: s.example for n, s in fields.items()}, ensure_ascii=False),
            "text": text,
        }
        messages = [{"role": "system", "content": self.system.strip()}]
        if self.example_turn:
            messages += [
                {"role": "user", "content": Template(self.user).safe_substitute(values, text=_example_text(fields))},
                {"role": "assistant", "content": values["example"]},
            ]
        messages.append({"role": "user", "content": Template(self.user).safe_substitute(values).strip()})
        prefix = '{"' + next(iter(fields)) + '": "' if self.answer_prefix else ""
        return messages, prefix


def _field_line(name: str, spec: FieldSpec) -> str:
    line = f"- {name} ({_TYPE_HINTS[spec.type.value]})"
    if spec.description:
        line += f": {spec.description}"
    return line


def _example_text(fields: dict[str, FieldSpec]) -> str:
    """A tiny document holding the fields' example values, for the worked example."""
    return "\n".join(f"{name.replace('_', ' ').title()}: {spec.example}" for name, spec in fields.items()
                     if spec.example)


def default_prompts_dir() -> Path:
    """The repo's ``prompts/`` folder (beside the package), else ``./prompts``."""
    beside = Path(__file__).resolve().parents[1] / "prompts"
    return beside if beside.is_dir() else Path("prompts")


def available(prompts_dir: Path) -> list[str]:
    """Prompt ids found in a folder."""
    return sorted(p.stem for p in Path(prompts_dir).glob("*.yaml"))


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
            example_turn=bool(data.get("example_turn", False)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: a prompt needs id, version, system and user ({err})") from None
    if prompt.id != prompt_id:
        raise ConfigError(f"{path}: id {prompt.id!r} does not match the file name")
    unknown = {m.group("named") or m.group("braced") for m in Template.pattern.finditer(prompt.user)} - {None}
    unknown -= set(PLACEHOLDERS)
    if unknown:
        raise ConfigError(f"{path}: unknown placeholders {sorted(unknown)}; available: {', '.join(PLACEHOLDERS)}")
    return prompt
