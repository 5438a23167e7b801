"""Bulk operations on prompt files: list, copy, bulk-edit with a preview, and render for a document and model.

Everything works on the plain YAML files in a prompts folder, so git stays the source of truth: an edit
rewrites only the top-level keys it changes (``system`` and ``user`` as literal blocks, ``version`` bumped
by one) and leaves every other line, comment and style of the file as it was. ``plan_edits`` computes the
new texts without writing; ``write_changes`` writes them. Rendering for a model applies its tokenizer's
chat template (or the plain completion format) exactly as the transformers backend does.

This module never imports Ray and never writes a file outside ``write_changes`` and ``new_from``; it loads a
tokenizer (transformers) and reads a document's text (the page stage's code) only inside ``render_for_model``
and ``document_text``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from invoicelab.config import ConfigError, Experiment, FieldSpec, VariantSpec
from invoicelab.prompt_versions import prompt_hash, unified_diff
from invoicelab.prompts import Prompt, available, load_prompt

DEFAULT_FIELDS = {
    "invoice_number": FieldSpec(type="id", description="the invoice's number or id", example="INV-2024-0042"),
    "invoice_date": FieldSpec(type="date", description="date the invoice was issued", example="2024-03-05"),
    "vendor_name": FieldSpec(type="text", description="company that issued the invoice", example="Acme Supplies Ltd"),
    "total": FieldSpec(type="amount", description="total amount due, tax included", example="1,234.50"),
}
"""The fields prompts are hashed and rendered for when no config is given (those of configs/quickstart.yaml)."""
BLOCK_KEYS = ("system", "user")
"""Keys written as literal blocks (``|``), so that a template reads as it renders."""
PROMPT_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:")


# --- reading ------------------------------------------------------------------------------------


def prompt_path(folder: Path, prompt_id: str) -> Path:
    """The file of a prompt id.

    Raises:
        ConfigError: no such prompt (the message lists those that exist).
    """
    path = Path(folder) / f"{prompt_id}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown prompt {prompt_id!r}; available: {', '.join(available(folder)) or '(none)'}")
    return path


def listing(folder: Path, fields: dict[str, FieldSpec] | None = None) -> list[dict[str, Any]]:
    """Every prompt file of a folder: id, version, hash for ``fields`` (default ``DEFAULT_FIELDS``), description.

    A file that does not load is listed with its ``error`` instead of stopping the listing.
    """
    out = []
    for prompt_id in available(folder):
        try:
            p = load_prompt(prompt_id, folder)
        except ConfigError as err:
            out.append({"id": prompt_id, "version": None, "hash": None, "description": "", "error": str(err)})
            continue
        out.append({"id": p.id, "version": p.version, "hash": prompt_hash(p, fields or DEFAULT_FIELDS),
                    "description": " ".join(p.description.split()), "error": None})
    return out


# --- writing YAML without disturbing it -------------------------------------------------------


class _Block(str):
    """A string written as a YAML literal block."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Block, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style="|"))


def dump_key(key: str, value: Any) -> str:
    """``key: value`` as YAML, ``system`` and ``user`` as literal blocks, no line folding."""
    value = _Block(value) if key in BLOCK_KEYS and isinstance(value, str) else value
    return yaml.dump({key: value}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)


def set_keys(text: str, updates: dict[str, Any]) -> str:
    """A YAML file's text with some top-level keys given new values; every other line stays as it was.

    A key's lines run from its ``key:`` line to the next top-level key; blank and comment lines at the end
    of that span belong to what follows and are kept. A key not in the file is appended.
    """
    segments: list[list[Any]] = [[None, []]]
    for line in text.splitlines(keepends=True):
        match = _TOP_KEY.match(line)
        if match:
            segments.append([match.group(1), []])
        segments[-1][1].append(line)
    for key, value in updates.items():
        found = [s for s in segments if s[0] == key]
        if not found:
            last = segments[-1][1]
            if last and not last[-1].endswith("\n"):
                last[-1] += "\n"
            segments.append([key, [dump_key(key, value)]])
            continue
        lines = found[0][1]
        tail = len(lines)
        while tail > 1 and (not lines[tail - 1].strip() or lines[tail - 1].startswith("#")):
            tail -= 1
        found[0][1] = [dump_key(key, value), *lines[tail:]]
    return "".join(line for _, lines in segments for line in lines)


def _rewrite(text: str, updates: dict[str, Any], where: Path) -> str:
    """``set_keys``, checked: the new text must load as the old data with the updates."""
    new = set_keys(text, updates)
    if yaml.safe_load(new) != {**yaml.safe_load(text), **updates}:
        raise ConfigError(f"{where}: cannot rewrite {', '.join(updates)} and keep the file's other lines")
    return new


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def new_from(folder: Path, new_id: str, from_id: str) -> Path:
    """Copy a prompt file under a new id, at version 1 (its other lines as they were).

    Raises:
        ConfigError: the source does not exist, the new id is not filename-safe, or it exists already.
    """
    if not PROMPT_ID.match(new_id):
        raise ConfigError(f"prompt id {new_id!r}: use lower-case letters, digits, '.', '_' and '-'")
    source = prompt_path(folder, from_id)
    target = Path(folder) / f"{new_id}.yaml"
    if target.exists():
        raise ConfigError(f"prompt {new_id!r} exists already: {target}")
    _write(target, _rewrite(source.read_text(encoding="utf-8"), {"id": new_id, "version": 1}, source))
    load_prompt(new_id, folder)  # the copy loads as a prompt, or this says why not
    return target


# --- bulk edits ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """One change applied to many prompt files.

    Attributes:
        append_system: A sentence added at the end of the system message (skipped where it is there already).
        replace: ``(old, new)``: text replaced in the system and user messages.
        rename_field: ``(old, new)``: a field name renamed, as a whole word, in the system and user messages
            (``${placeholders}`` untouched).
    """

    append_system: str | None = None
    replace: tuple[str, str] | None = None
    rename_field: tuple[str, str] | None = None

    def apply(self, data: dict[str, Any]) -> dict[str, str]:
        """The messages this edit changes in a prompt's data (``{}``: nothing to change)."""
        texts = {k: str(data.get(k) or "") for k in BLOCK_KEYS}
        if self.append_system:
            texts["system"] = _append(texts["system"], self.append_system)
        for key in BLOCK_KEYS:
            if self.replace:
                texts[key] = texts[key].replace(*self.replace)
            if self.rename_field:
                old, new = self.rename_field
                texts[key] = re.sub(rf"(?<![\w${{]){re.escape(old)}(?![\w}}])", new, texts[key])
        return {k: v for k, v in texts.items() if v != str(data.get(k) or "")}


def _append(system: str, sentence: str) -> str:
    """The system message with a sentence added to its last paragraph (its final newline kept)."""
    sentence, body = sentence.strip(), system.rstrip()
    if not sentence or body.endswith(sentence):
        return system
    return body + (" " if body else "") + sentence + system[len(body):]


@dataclass(frozen=True)
class Change:
    """A prompt file's text before and after an edit."""

    path: Path
    old: str
    new: str

    def diff(self) -> list[str]:
        """The change as unified diff lines."""
        return unified_diff(self.old, self.new, f"a/{self.path.name}", f"b/{self.path.name}")


def plan_edits(folder: Path, ids: list[str] | None, edit: Edit) -> list[Change]:
    """The new text of every prompt file the edit changes (version bumped by 1); nothing is written.

    Args:
        folder: The prompts folder.
        ids: The prompts to edit; None: every prompt file of the folder.
        edit: The change.

    Raises:
        ConfigError: an unknown id, or a file that cannot be rewritten.
    """
    paths = [prompt_path(folder, i) for i in ids] if ids is not None else sorted(Path(folder).glob("*.yaml"))
    changes = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        updates: dict[str, Any] = edit.apply(data)
        if updates:
            updates["version"] = int(data.get("version") or 0) + 1
            changes.append(Change(path, text, _rewrite(text, updates, path)))
    return changes


def write_changes(changes: list[Change]) -> None:
    """Write each changed file (atomically: a temporary file renamed into place)."""
    for change in changes:
        _write(change.path, change.new)


# --- rendering for a document and a model -------------------------------------------------------


def experiment_prompt(exp: Experiment, prompt_id: str) -> Prompt:
    """A prompt of an experiment: a file of its prompts folder, or a variant its ``prompt_set`` generates.

    Raises:
        ConfigError: neither (the message lists what exists).
    """
    folder = exp.prompts_path()
    try:
        return load_prompt(prompt_id, folder)
    except ConfigError as err:
        if exp.prompt_set is None:
            raise
        from invoicelab.prompt_sets import expand

        generated = {p.id: p for p in expand(exp.prompt_set, folder, exp.seed)}
        if prompt_id in generated:
            return generated[prompt_id]
        raise ConfigError(f"{err}; the prompt_set generates: {', '.join(generated)}") from None



def document_text(exp: Experiment, variant: VariantSpec, doc_id: str | None = None) -> tuple[str, str]:
    """A document of the experiment's dataset and the text the variant's model is given for it.

    The text comes from the variant's text engine as a run reads it (the OCR cache is used), cut as the
    backend cuts it; "" for a variant that reads page images.

    Returns:
        ``(doc_id, text)``.

    Raises:
        ConfigError: no such document, or it cannot be read.
    """
    import pyarrow as pa

    from invoicelab.actors.extractor import seen_text
    from invoicelab.actors.pages import PageReader
    from invoicelab.data.sources import cache_root, load_documents
    from invoicelab.orchestrator.plan import text_setting

    docs = load_documents(exp)
    chosen = [d for d in docs if doc_id is None or d.doc_id == doc_id][:1]
    if not chosen:
        names = ", ".join(d.doc_id for d in docs[:8]) + (" ..." if len(docs) > 8 else "")
        raise ConfigError(f"no document {doc_id!r} in the dataset; it has: {names}")
    if variant.images is not None:
        return chosen[0].doc_id, ""
    setting = text_setting(exp, variant)
    reader = PageReader(asdict(setting), str(cache_root()))
    row = reader(pa.Table.from_pylist([chosen[0].row()])).to_pylist()[0]
    if row["error"]:
        raise ConfigError(f"document {chosen[0].doc_id}: {row['error']}")
    return chosen[0].doc_id, seen_text(variant, row["text"]) or ""


def render_for_model(prompt: Prompt, fields: dict[str, FieldSpec], text: str, variant: VariantSpec,
                     template: bool = True) -> tuple[str, str]:
    """The prompt as the variant's model receives it for a document's text.

    ocr-llm: the tokenizer's chat template with the assistant turn opened and the answer prefix
    (``prompt_format: completion``: the messages' plain text), as ``backends.hf`` builds it. Other backends,
    or ``template=False``: the chat messages, saying what applies the template.

    Returns:
        ``(format, text)``: how it was rendered, and the rendered prompt.

    Raises:
        ConfigError: the variant's backend takes no prompt, or its tokenizer cannot be loaded.
    """
    from invoicelab.backends import backend_class

    if not backend_class(variant.backend).uses_prompt:
        raise ConfigError(f"variant {variant.name!r} ({variant.backend}) takes no prompt")
    messages, prefix = prompt.render(fields, "" if variant.images is not None else text)
    if variant.backend == "ocr-llm" and template:
        return _templated(messages, prefix, variant)
    shown: list[dict[str, Any]] = messages
    note = {"transformers-vlm": "the model's processor applies its chat template; page images open the last user turn",
            "vllm": "vLLM applies the model's chat template", "openai-http": "the server applies its chat template",
            "fake": "the fake backend reads no prompt text",
            "ocr-llm": "the tokenizer's chat template, or the completion format, applies"}.get(variant.backend, "chat")
    if variant.images is not None:
        from invoicelab.backends.vlm import with_images

        shown = with_images(messages, 1)
    if prefix:
        shown = [*shown, {"role": "assistant", "content": prefix}]
    return f"messages ({note})", json.dumps(shown, indent=2, ensure_ascii=False)


def _templated(messages: list[dict[str, str]], prefix: str, variant: VariantSpec) -> tuple[str, str]:
    from invoicelab.backends.hf import completion_text, load_tokenizer, resolve_prompt_format
    from invoicelab.backends.models import resolve_model

    try:
        tokenizer = load_tokenizer(resolve_model(variant.model_source), getattr(variant, "revision", None))
        chosen = resolve_prompt_format(getattr(variant, "prompt_format", "auto"), tokenizer)
    except Exception as err:  # noqa: BLE001 - any loading failure is a message for the user, not a traceback
        raise ConfigError(f"tokenizer of {variant.model_source!r}: {type(err).__name__}: {err}") from None
    if chosen == "completion":
        return "completion (plain text, no chat template)", completion_text(messages) + prefix
    opened = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"chat template of {variant.model_source}", opened + prefix
