"""Prompt identity and history: the hash of what a prompt renders, and each version that produced results.

A prompt's identity is ``prompt_hash(prompt, fields)``: the first 16 hex digits of the sha256 of its
rendered template (the chat messages rendered with the placeholder ``${text}`` standing for the document,
and the text that begins the answer) and of the field specifications it renders for (names in order,
types, descriptions, examples: what a prompt can show; the scoring rules are not). Its id, version
number, description and the YAML's formatting are not part of it, so the same text has the same hash in
any file, and any change of what the model reads gives a new one. Every result row carries it
(``prompt_hash``), beside the id and the hand-set ``prompt_version``.

The history store (``invoicelab.history``) keeps, per recorded run, one row per (prompt, version, hash)
of its results, with the fields and the rendered text (table ``prompts``, filled by ``prompt_rows``).
``versions`` reads a prompt's versions back for ``invoicelab prompts log``; ``check_versions`` names a
version number that covers two texts (the file was edited and ``version`` not bumped).

This module never imports Ray or a model, and never fails a run: the checks return warning lines.
DuckDB and pyarrow come in inside functions (through ``history`` and ``store``).
"""

from __future__ import annotations

import difflib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from invoicelab.config import ConfigError, Experiment, FieldSpec
from invoicelab.identity import digest
from invoicelab.prompts import Prompt, load_prompt
from invoicelab.results import NO_PROMPT

TEXT_PLACEHOLDER = "${text}"
"""What stands for the document's text in a rendered template."""
HASH_LENGTH = 16
PROMPTS_FILE = "prompts.json"
"""A run folder's copy of the prompts it ran (id -> the prompt's fields), written by ``save_prompts``."""
_SHOWN = ("type", "description", "example")
"""The parts of a field's specification that a prompt can show the model."""


def field_specs(fields: dict[str, FieldSpec]) -> list[list[Any]]:
    """The field specifications a prompt renders for: ``[[name, {type, description, example}], ...]`` in order."""
    return [[name, {k: v for k, v in spec.model_dump(mode="json").items() if k in _SHOWN}]
            for name, spec in fields.items()]


def fields_of(specs: list[list[Any]]) -> dict[str, FieldSpec]:
    """Fields back from ``field_specs`` (as the history stores them)."""
    return {name: FieldSpec.model_validate(spec) for name, spec in specs}


def fields_digest(fields: dict[str, FieldSpec]) -> str:
    """A short hash of the field specifications a prompt renders for."""
    return digest(field_specs(fields))[:HASH_LENGTH]


def prompt_hash(prompt: Prompt | None, fields: dict[str, FieldSpec]) -> str | None:
    """The prompt's identity for these fields (None for backends without a prompt).

    Args:
        prompt: The prompt.
        fields: The experiment's fields, in order.

    Returns:
        16 hex digits: sha256 of the rendered messages (document text ``${text}``), the answer prefix and
        the field specifications.
    """
    if prompt is None:
        return None
    messages, prefix = prompt.render(fields, TEXT_PLACEHOLDER)
    return digest({"messages": messages, "prefix": prefix, "fields": field_specs(fields)})[:HASH_LENGTH]


def hashes(prompts: dict[str, Prompt | None], fields: dict[str, FieldSpec]) -> dict[str, str | None]:
    """Prompt id -> its hash, each computed once (for the stages that stamp every row with it)."""
    return {pid: prompt_hash(p, fields) for pid, p in prompts.items()}


def rendered_text(prompt: Prompt, fields: dict[str, FieldSpec]) -> str:
    """The rendered template as readable text, one ``### role`` section per message (for diffs and the history)."""
    messages, prefix = prompt.render(fields, TEXT_PLACEHOLDER)
    parts = [f"### {m['role']}\n{m['content']}\n" for m in messages]
    if prefix:
        parts.append(f"### assistant (answer begins with)\n{prefix}\n")
    return "\n".join(parts)


def unified_diff(a: str, b: str, label_a: str, label_b: str) -> list[str]:
    """Lines of a unified diff from text ``a`` to text ``b`` (empty when they are equal)."""
    return [line.rstrip("\n") for line in difflib.unified_diff(
        a.splitlines(keepends=True), b.splitlines(keepends=True), fromfile=label_a, tofile=label_b)]


def save_prompts(run_dir: Path, prompts: list[Prompt]) -> Path:
    """Write the prompts a run uses to ``<run_dir>/prompts.json``, so that its history has their texts
    even when a file is edited before the run is recorded again (``invoicelab report``)."""
    path = Path(run_dir) / PROMPTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({p.id: asdict(p) for p in prompts}, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


# --- what the history records ------------------------------------------------------------------


def prompt_rows(run_id: str, run_dir: Path, experiment: dict[str, Any]) -> list[list[Any]]:
    """The history's ``prompts`` rows of a run: one per (prompt, version, hash) among its result rows.

    The rendered text is recorded when a prompt of that hash is at hand: the run's ``prompts.json``, else
    the prompt's file or the experiment's prompt_set as they are now (used only if the prompt still renders
    to the hash the rows carry; else the text is None).

    Returns:
        Rows ``[run_id, prompt, prompt_version, prompt_hash, fields_digest, fields_json, rendered, n_rows]``.
    """
    found = _hashes_in(Path(run_dir))
    if not found:
        return []
    fields = {name: FieldSpec.model_validate({"type": s} if isinstance(s, str) else s)
              for name, s in (experiment.get("fields") or {}).items()}
    known = _known_prompts(Path(run_dir), experiment, {pid for pid, _, _ in found}) if fields else {}
    specs = json.dumps(field_specs(fields), ensure_ascii=False)
    rows = []
    for (pid, version, h), n in sorted(found.items()):
        prompt = known.get(pid)
        text = rendered_text(prompt, fields) if prompt is not None and prompt_hash(prompt, fields) == h else None
        rows.append([run_id, pid, version, h, fields_digest(fields), specs, text, n])
    return rows


def _hashes_in(run_dir: Path) -> Counter:
    """(prompt, version, hash) -> result rows, for rows that have a prompt and a hash (older rows have none)."""
    from invoicelab.store import read_columns, results_dir

    table = read_columns(results_dir(run_dir), ["prompt", "prompt_version", "prompt_hash"])
    if table is None or "prompt_hash" not in table.column_names:
        return Counter()
    cols = [table.column(c).to_pylist() for c in ("prompt", "prompt_version", "prompt_hash")]
    return Counter((p, int(v or 0), h) for p, v, h in zip(*cols) if h and p != NO_PROMPT)


def _known_prompts(run_dir: Path, experiment: dict[str, Any], ids: set[str]) -> dict[str, Prompt]:
    """The run's prompts: its ``prompts.json``, else the prompt files and the prompt_set's variants as they are
    now. Any of them may have changed since: ``prompt_rows`` uses a text only where it renders to the rows' hash."""
    from invoicelab.prompt_sets import expand

    saved = run_dir / PROMPTS_FILE
    try:
        if saved.is_file():
            return {pid: Prompt(**p) for pid, p in json.loads(saved.read_text(encoding="utf-8")).items()}
        exp = Experiment.model_validate(experiment)
        known = {p.id: p for p in expand(exp.prompt_set, exp.prompts_path(), exp.seed)} if exp.prompt_set else {}
    except (OSError, TypeError, ValueError):  # a copy or config of another version: texts unknown, hashes kept
        return {}
    for pid in ids - set(known):
        try:
            known[pid] = load_prompt(pid, exp.prompts_path())
        except ConfigError:
            continue  # a deleted prompt: its text stays unknown, its hash is still recorded
    return known


# --- reading it back ---------------------------------------------------------------------------


@dataclass
class Version:
    """One text (hash) of a prompt that produced results, as the history recorded it."""

    hash: str
    versions: list[int] = field(default_factory=list)
    first: datetime | None = None
    last: datetime | None = None
    runs: list[str] = field(default_factory=list)
    rows: int = 0
    fields: list[list[Any]] = field(default_factory=list)
    fields_digest: str = ""
    rendered: str | None = None


def _recorded(store: Path, ids: list[str] | None = None) -> list[tuple]:
    """History rows ``(prompt, version, hash, fields_digest, fields_json, rendered, rows, run_id, finished_at)``,
    oldest run first; empty without a history or (an older one) without a ``prompts`` table."""
    from invoicelab.history import connect, db_path

    if not db_path(store).is_file():
        return []
    where = f" WHERE p.prompt IN ({', '.join('?' * len(ids))})" if ids else ""
    with connect(store, read_only=True) as con:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'prompts'").fetchone()[0]:
            return []
        return con.execute("SELECT p.prompt, p.prompt_version, p.prompt_hash, p.fields_digest, p.fields_json, "
                           "p.rendered, p.n_rows, r.run_id, r.finished_at FROM prompts p JOIN runs r USING (run_id)"
                           f"{where} ORDER BY r.finished_at, r.run_id", list(ids or [])).fetchall()


def versions(store: Path, prompt_id: str) -> list[Version]:
    """Each text (hash) of a prompt that produced results in the store's recorded runs, oldest first.

    Args:
        store: The store folder (``history.duckdb``).
        prompt_id: The prompt's id.

    Returns:
        One ``Version`` per hash: the version numbers it was run under, first and last run (UTC), the runs,
        the result rows, the fields and the rendered text (None when no recording had it).
    """
    out: dict[str, Version] = {}
    for _, version, h, fd, fj, text, rows, run_id, when in _recorded(store, [prompt_id]):
        v = out.setdefault(h, Version(h, first=when, fields=json.loads(fj), fields_digest=fd))
        v.versions = sorted({*v.versions, version})
        v.last, v.rows, v.rendered = when, v.rows + (rows or 0), v.rendered or text
        if run_id not in v.runs:
            v.runs.append(run_id)
    return list(out.values())


def version_warnings(prompt_id: str, found: list[Version]) -> list[str]:
    """A warning per version number the history holds two texts under (for the same fields)."""
    groups: dict[tuple[int, str], list[Version]] = {}
    for v in found:
        for number in v.versions:
            groups.setdefault((number, v.fields_digest), []).append(v)
    return [_two_texts(prompt_id, number, {v.hash: v.runs for v in group})
            for (number, _), group in sorted(groups.items()) if len(group) > 1]


def check_versions(store: Path, prompts: list[Prompt], fields: dict[str, FieldSpec] | None = None) -> list[str]:
    """Warnings for prompts whose file now renders differently from what the history recorded under the same
    version number: the text changed and ``version`` was not bumped. Never raises (a check, not a gate).

    Args:
        store: The store folder (``history.duckdb``).
        prompts: The prompts as their files are now.
        fields: Check for these fields only (a run's); None: for every set of fields the history recorded.

    Returns:
        Warning lines, ``prompt X version N has two texts: ...; bump `version` ...``; empty when consistent.
    """
    try:
        recorded = _recorded(store, sorted({p.id for p in prompts}))
    except Exception:  # noqa: BLE001 - an unreadable or locked history makes the check silent, never a failure
        return []
    warnings = []
    for prompt in prompts:
        groups: dict[str, tuple[str, dict[str, list[str]]]] = {}
        for pid, version, h, fd, fj, *_, run_id, _ in recorded:
            if pid == prompt.id and version == prompt.version:
                groups.setdefault(fd, (fj, {}))[1].setdefault(h, []).append(run_id)
        for fd, (fj, by_hash) in groups.items():
            if fields is not None and fd != fields_digest(fields):
                continue
            now = prompt_hash(prompt, fields_of(json.loads(fj)))
            if set(by_hash) - {now}:
                warnings.append(_two_texts(prompt.id, prompt.version, {**by_hash, now: ["its file now"]}))
    return warnings


def _two_texts(prompt_id: str, number: int, by_hash: dict[str, list[str]]) -> str:
    texts = "; ".join(f"{h} ({', '.join(dict.fromkeys(runs))})" for h, runs in by_hash.items())
    return (f"prompt {prompt_id} version {number} has {len(by_hash)} texts: {texts}; "
            "bump `version` in its file whenever its text changes")


def mixed_hashes(df: Any) -> list[str]:
    """Warnings for (variant, prompt) groups of a results frame that hold rows of more than one prompt hash.

    A run folder normally holds one text per prompt id (``plan`` moves an edited prompt's old rows to
    ``superseded/``); rows pooled from two texts would make one accuracy of two prompts.
    """
    if df is None or "prompt_hash" not in getattr(df, "columns", ()):
        return []
    rows = df[df["prompt_hash"].notna()]
    counts = rows.groupby(["variant", "prompt"])["prompt_hash"].unique()
    return [f"variant {v} prompt {p} holds rows of {len(hs)} prompt texts ({', '.join(sorted(hs))}): "
            "rerun to supersede the old rows" for (v, p), hs in counts.items() if len(hs) > 1]
