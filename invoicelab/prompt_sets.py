"""Prompt sets: prompt variants generated along axes from one set file, and the check that each renders.

A set file (``<prompts_dir>/sets/<name>.yaml``) holds a base user template, the texts that fill its
set-level placeholders per language (a text is a string, or a mapping keyed by the levels of one
axis, e.g. ``{terse: ..., descriptive: ...}``), and the levels it declares per axis (``prompt_axes.AXES``).
``expand`` turns an experiment's ``prompt_set`` into ordinary ``Prompt`` objects: the full grid of
the chosen levels, or a seeded sample of it that always keeps the baseline, each with a readable
id (``<set>.<style>-desc1-ex3-rev-lines-de``) and its levels in ``Prompt.axes``.

``render_for`` renders one prompt for a model format (``chat``: the messages, through the model's
chat template when it is known; ``completion``: the turns flattened as the transformers backend does;
``vlm``: the page image placed in the last user turn, through the processor's template).
``render_problems`` lists what cannot be rendered for which variant, before any model is loaded.
This module reads files and renders templates only: it never loads a model, never imports Ray or
a backend, and never downloads anything.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

from invoicelab.config import AXES, ConfigError, FieldSpec, PromptSetSpec, level_name
from invoicelab.prompt_axes import declared_levels
from invoicelab.prompts import MAX_EXAMPLES, ORDERS, OUTPUTS, Prompt, check_settings

FIXED_LEVELS = {"descriptions": ("on", "off"), "examples": tuple(map(str, range(MAX_EXAMPLES + 1))),
                "order": ORDERS, "format": OUTPUTS}
"""Axes whose levels mean something to rendering; style and language levels are the set file's own."""
_ID_PART = {"descriptions": {"on": "desc1", "off": "desc0"}, "order": {"given": "given", "reversed": "rev",
            "shuffled": "shuf"}}
FORMATS = ("chat", "completion", "vlm")


@dataclass(frozen=True)
class PromptSet:
    """A parsed set file."""

    name: str
    version: int
    description: str
    user: str
    answer_prefix: bool
    levels: dict[str, list[str]]
    texts: dict[str, dict[str, Any]]
    path: Path

    def text(self, language: str, key: str, combo: dict[str, str]) -> str:
        """A set-level text in a language, picked by the level of the axis its mapping is keyed by."""
        value = self.texts[language][key]
        if isinstance(value, dict):
            value = value[combo[_keyed_by(value, self.levels)]]
        return str(value).strip()

    def prompt(self, combo: dict[str, str], seed: int) -> Prompt:
        """The prompt of one combination of levels (axis -> level)."""
        language = combo["language"]
        fills = {k: self.text(language, k, combo) for k in self.texts[language] if k != "system"}
        system = self.text(language, "system", combo) if "system" in self.texts[language] else ""
        return Prompt(
            id=variant_id(self.name, combo), version=self.version, system=system,
            user=Template(self.user).safe_substitute(fills), answer_prefix=self.answer_prefix,
            description=self.description, examples=int(combo["examples"]),
            describe_fields=combo["descriptions"] == "on", field_order=combo["order"], order_seed=seed,
            output=combo["format"], axes=dict(combo), source=f"set:{self.name}",
        )


def variant_id(set_name: str, combo: dict[str, str]) -> str:
    """A generated prompt's readable id: ``<set>.`` and one part per axis, e.g. ``axes.terse-desc0-ex1-given-json-en``."""
    parts = [_ID_PART.get(axis, {}).get(combo[axis], combo[axis]) for axis in AXES]
    parts[AXES.index("examples")] = f"ex{combo['examples']}"
    return f"{set_name}." + "-".join(parts)


def set_file(base: str, prompts_dir: Path) -> Path:
    """Where a set named ``base`` lives."""
    return Path(prompts_dir) / "sets" / f"{base}.yaml"


def load_set(base: str, prompts_dir: Path) -> PromptSet:
    """Read and check a set file.

    Raises:
        ConfigError: the file is missing or malformed (the message names the file and the key).
    """
    path = set_file(base, prompts_dir)
    if not path.is_file():
        found = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml"))) or "(none)"
        raise ConfigError(f"prompt_set.base: no set file {path}; available: {found}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        pset = PromptSet(name=str(data["name"]), version=int(data["version"]), description=str(data.get(
            "description", "")).strip(), user=str(data["user"]), answer_prefix=bool(data.get("answer_prefix", True)),
            levels=declared_levels(path), texts=_texts(data["texts"]), path=path)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ConfigError(f"{path}: a prompt set needs name, version, user, texts and axes ({err})") from None
    problems = _set_problems(pset)
    if problems:
        raise ConfigError(f"{path}:\n  " + "\n  ".join(problems))
    return pset


def _set_problems(pset: PromptSet) -> list[str]:
    problems = [] if re.fullmatch(r"[a-z0-9][a-z0-9-]*", pset.name) else [
        f"name {pset.name!r}: a-z, 0-9 and hyphens (it begins every generated id, which names files)"]
    for axis, levels in pset.levels.items():
        allowed = FIXED_LEVELS.get(axis)
        bad = [x for x in levels if (x not in allowed if allowed else not re.fullmatch(r"[a-z0-9]+", x))]
        if not levels or bad:
            what = ", ".join(allowed) if allowed else "names of a-z and 0-9"
            problems.append(f"axes.{axis}: levels {bad or '(none)'} not allowed; available: {what}")
    for language in pset.levels["language"]:
        if not isinstance(pset.texts.get(language), dict):
            problems.append(f"texts.{language}: missing (the language axis declares it)")
            continue
        for key, value in pset.texts[language].items():
            if isinstance(value, dict) and _keyed_by(value, pset.levels) is None:
                problems.append(f"texts.{language}.{key}: keys {sorted(map(str, value))} are not the levels of one "
                                "axis (" + "; ".join(f"{a}: {', '.join(v)}" for a, v in pset.levels.items()) + ")")
    return problems


def _texts(raw: Any) -> dict[str, dict[str, Any]]:
    """``texts`` with every key as text (YAML reads on/off as booleans, 0/3 as numbers)."""
    def keyed(value: Any) -> Any:
        return {level_name(k): v for k, v in value.items()} if isinstance(value, dict) else value

    return {level_name(lang): ({key: keyed(v) for key, v in block.items()} if isinstance(block, dict) else block)
            for lang, block in dict(raw).items()}


def _keyed_by(mapping: dict, levels: dict[str, list[str]]) -> str | None:
    """The axis whose every declared level is a key of ``mapping``."""
    return next((axis for axis in AXES if levels[axis] and set(levels[axis]) <= set(mapping)), None)


def expand(spec: PromptSetSpec, prompts_dir: Path, seed: int = 0) -> list[Prompt]:
    """The prompts an experiment's ``prompt_set`` generates, in grid order (deterministic).

    Args:
        spec: The experiment's prompt_set.
        prompts_dir: The experiment's prompts folder (the set file is ``sets/<base>.yaml`` in it).
        seed: The experiment's seed (``spec.seed`` wins when set): of the sample and of shuffled orders.

    Returns:
        One Prompt per combination of the chosen levels (axes left out keep their first declared
        level); with ``sample < 1``, ``max(1, round(sample * grid))`` of them, the baseline always among them.

    Raises:
        ConfigError: a malformed set file, an unknown level, or a baseline that is not generated.
    """
    pset = load_set(spec.base, prompts_dir)
    problems = spec.level_problems(pset.path)
    if problems:
        raise ConfigError("invalid experiment config:\n  " + "\n  ".join(problems))
    seed = spec.seed if spec.seed is not None else seed
    chosen = [spec.axes.get(axis) or pset.levels[axis][:1] for axis in AXES]
    prompts = [pset.prompt(dict(zip(AXES, combo)), seed) for combo in itertools.product(*chosen)]
    for prompt in prompts:
        check_settings(prompt, f"{pset.path} ({prompt.id})")
    base = baseline_id(spec, prompts)
    if spec.sample < 1:
        others = [p.id for p in prompts if p.id != base]
        keep = set(random.Random(seed).sample(others, max(1, round(spec.sample * len(prompts))) - 1))
        prompts = [p for p in prompts if p.id == base or p.id in keep]
    return prompts


def baseline_id(spec: PromptSetSpec, prompts: list[Prompt]) -> str:
    """The generated prompt the others are compared with: ``spec.baseline``, else the first.

    Raises:
        ConfigError: ``spec.baseline`` names no generated prompt.
    """
    ids = [p.id for p in prompts]
    if spec.baseline is not None and spec.baseline not in ids:
        shown = ", ".join(ids[:6]) + (f", ... ({len(ids)} in all)" if len(ids) > 6 else "")
        raise ConfigError(f"invalid experiment config:\n  prompt_set.baseline: no generated prompt "
                          f"{spec.baseline!r}; generated: {shown}")
    return spec.baseline or ids[0]


def variant_table(prompts: list[Prompt], fields: dict[str, FieldSpec]) -> list[dict[str, Any]]:
    """Generated prompts as rows: id, hash (``prompt_versions.prompt_hash``, what result rows carry) and levels."""
    from invoicelab.prompt_versions import prompt_hash  # the history side of prompts; only needed here

    return [{"prompt": p.id, "prompt_hash": prompt_hash(p, fields), **p.axes} for p in prompts if p.axes]


# --- rendering for a model format, and the check before a run ----------------------------------------


class RenderError(ValueError):
    """A prompt that cannot be rendered for a model format; the message says why."""


@dataclass(frozen=True)
class Rendered:
    """A prompt rendered for one model format.

    Attributes:
        messages: The conversation (chat, vlm: contents as typed parts, the image first in the last
            user turn); the flattened turns' messages for completion.
        prefix: The answer prefix.
        text: What the model reads, answer prefix included: the chat template's output (None when
            no template was given), or the flattened text for completion.
    """

    fmt: str
    messages: list[dict[str, Any]]
    prefix: str
    text: str | None


@dataclass(frozen=True)
class RenderTarget:
    """How one variant reads prompts: its format, decoding constraint and chat template if known here."""

    variant: str
    fmt: str
    structured: str | None = None
    template: str | None = None
    special_tokens: tuple[tuple[str, str], ...] = ()
    prompt_format: str | None = None


def render_for(prompt: Prompt, fmt: str, fields: dict[str, FieldSpec], text: str = "${text}",
               template: str | None = None, special_tokens: dict[str, str] | None = None) -> Rendered:
    """Render ``prompt`` for a model format.

    Args:
        prompt: The prompt.
        fmt: ``chat``, ``completion`` or ``vlm``.
        fields: The experiment's fields.
        text: The document text (vlm: ignored, the page image stands for it).
        template: The model's chat template (Jinja), if known; chat and vlm render through it.
        special_tokens: Values the template reads (``bos_token``, ``eos_token``...).

    Raises:
        RenderError: an unknown format, or a template that refuses or drops part of the conversation.
    """
    if fmt not in FORMATS:
        raise RenderError(f"unknown format {fmt!r}; available: {', '.join(FORMATS)}")
    messages, prefix = prompt.render(fields, "" if fmt == "vlm" else text)
    if fmt == "completion":  # as backends.hf.completion_text: each message's text, then a blank line
        return Rendered(fmt, messages, prefix, "".join(m["content"].strip() + "\n\n" for m in messages) + prefix)
    if fmt == "vlm":
        messages = with_image(messages)
    if template is None:
        return Rendered(fmt, messages, prefix, None)
    opened = render_chat_template(template, messages, special_tokens or {})
    if opened is None:
        return Rendered(fmt, messages, prefix, None)
    for message in messages:
        content = _plain_text(message["content"]).strip()
        if content and content not in opened:
            raise RenderError(f"the chat template leaves out the {message['role']} turn")
    if fmt == "vlm" and opened == render_chat_template(template, _without_images(messages), special_tokens or {}):
        raise RenderError("the chat template writes no place for the page image")
    return Rendered(fmt, messages, prefix, opened + prefix)


def render_problems(prompts: list[Prompt], fields: dict[str, FieldSpec], targets: list[RenderTarget]) -> list[str]:
    """Every (prompt, variant) pair that cannot be rendered, as ``prompt P, variant V: reason`` lines."""
    problems = []
    for target in targets:
        tokens = dict(target.special_tokens)
        for prompt in prompts:
            reason = None
            if target.fmt == "vlm" and target.prompt_format == "completion":
                reason = ("the page image is placed by the model's chat template, which prompt_format: completion "
                          "leaves out; use prompt_format auto or chat")
            elif prompt.output == "lines" and target.structured == "json-schema":
                reason = ("it asks for `name: value` lines but the variant's decoding is constrained to JSON "
                          "(structured: json-schema); use structured: prefix or none, or format json")
            else:
                try:
                    render_for(prompt, target.fmt, fields, template=target.template, special_tokens=tokens)
                except RenderError as err:
                    reason = f"{target.fmt}: {err}"
            if reason:
                problems.append(f"prompt {prompt.id!r}, variant {target.variant!r}: {reason}")
    return problems


def check_renders(prompts: list[Prompt], fields: dict[str, FieldSpec], targets: list[RenderTarget]) -> None:
    """Refuse the run when a prompt cannot be rendered for a variant.

    Raises:
        ConfigError: listing each prompt, variant and reason.
    """
    problems = render_problems(prompts, fields, targets)
    if problems:
        raise ConfigError("prompts that cannot be rendered for their model:\n  " + "\n  ".join(problems))


def with_image(messages: list[dict[str, str]], n_images: int = 1) -> list[dict[str, Any]]:
    """Messages with typed parts, the last user turn opened by the page images (as ``backends.vlm`` does)."""
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return [{"role": m["role"], "content": [{"type": "image"}] * n_images * (i == last_user)
             + [{"type": "text", "text": m["content"]}]} for i, m in enumerate(messages)]


def _without_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, "content": [p for p in m["content"] if p["type"] != "image"]} for m in messages]


def _plain_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


class _Refused(Exception):
    """A template's own ``raise_exception``."""


def render_chat_template(template: str, messages: list[dict[str, Any]],
                         special_tokens: dict[str, str]) -> str | None:
    """A Jinja chat template rendered as transformers renders it (sandboxed, generation prompt added).

    Returns:
        The rendered text, or None for a template this renderer cannot compile (transformers' own
        extensions, such as ``{% generation %}``): not refused here, the model's tokenizer judges it.

    Raises:
        RenderError: the template refused the conversation (its ``raise_exception``, e.g. "System role
            not supported") or failed on it.
    """
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def refuse(message: str) -> None:
        raise _Refused(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals.update(raise_exception=refuse, strftime_now=lambda fmt: "")
    try:
        compiled = env.from_string(template)
    except jinja2.TemplateSyntaxError:
        return None
    try:
        return compiled.render(messages=messages, add_generation_prompt=True, **special_tokens)
    except _Refused as err:
        raise RenderError(f"the chat template refuses this conversation: {err}") from None
    except Exception as err:  # noqa: BLE001 - a template's failure on these messages is this prompt's problem
        raise RenderError(f"the chat template fails on it: {type(err).__name__}: {err}") from None


def chat_template_in(folder: Path) -> tuple[str | None, dict[str, str]] | None:
    """A model folder's chat template and special tokens, from its files (no tokenizer is loaded).

    Returns:
        ``(template or None, special tokens)`` when the folder holds a tokenizer configuration
        (None as template: a base model without one), or None when it holds none at all.
    """
    folder = Path(folder)
    config_file = folder / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text(encoding="utf-8"))
    tokens = {k: (v.get("content") if isinstance(v, dict) else v) for k, v in config.items()
              if k.endswith("_token") and isinstance(v, (str, dict))}
    template = config.get("chat_template")
    for name in ("chat_template.jinja", "chat_template.json"):
        if not template and (folder / name).is_file():
            raw = (folder / name).read_text(encoding="utf-8")
            template = json.loads(raw).get("chat_template") if name.endswith(".json") else raw
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template or None, {k: v for k, v in tokens.items() if isinstance(v, str)}
