"""The axes a prompt set varies and the experiment's choice of them: part of the configuration layer.

Like ``variants.py``, imported by ``invoicelab.config`` and importing nothing else from invoicelab;
never Ray or a model library. It validates an experiment's ``prompt_set`` against the levels its
set file declares (the file's ``axes`` key only); reading the rest of a set file and generating the
prompts is ``invoicelab.prompt_sets``' work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator

from invoicelab.variants import Strict

AXES = ("style", "descriptions", "examples", "order", "format", "language")
"""Axes a prompt set varies, in the order of a generated id's parts."""
AXIS_DEFAULT = {"descriptions": "on", "examples": "0", "order": "given", "format": "json"}
"""The level of an axis a set file does not declare (style and language it must declare)."""


def level_name(value: Any) -> str:
    """An axis level as text: YAML reads ``on``/``off`` as booleans and ``0``/``3`` as numbers."""
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def declared_levels(set_file: Path) -> dict[str, list[str]]:
    """The levels a set file declares per axis (its ``axes`` key), with the defaults of axes it leaves out."""
    declared = (yaml.safe_load(set_file.read_text(encoding="utf-8")) or {}).get("axes") or {}
    if not isinstance(declared, dict):
        declared = {}
    levels = {axis: [level_name(x) for x in declared[axis]] for axis in declared if isinstance(declared[axis], list)}
    return {axis: levels.get(axis) or ([AXIS_DEFAULT[axis]] if axis in AXIS_DEFAULT else []) for axis in AXES}


class PromptSetSpec(Strict):
    """Prompt variants generated along axes from a set file, ``<prompts_dir>/sets/<base>.yaml``."""

    base: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]*$", description="The set file's name (without .yaml) "
                      "under prompts_dir/sets/: a base template, its texts per language and style, its axis levels.")
    axes: dict[str, list[str]] = Field(
        default_factory=dict, description="Levels to generate per axis, a subset of those the set file declares; an "
        "axis left out keeps its first level. Axes: " + ", ".join(AXES) + " (descriptions: on/off; examples: worked "
        "examples, each its own chat turn; order: given/reversed/shuffled; format: json/lines).",
    )
    sample: float = Field(1.0, gt=0, le=1, description="Fraction of the grid to generate (seeded; the baseline is kept).")
    seed: int | None = Field(None, description="Seed of the sample and of shuffled field orders (default: the "
                             "experiment's).")
    baseline: str | None = Field(None, description="Generated id the others are compared with (default: the first, "
                                 "every axis at its first chosen level).")
    confirm_fraction: float = Field(0.5, gt=0, lt=1, description="Share of documents held out (seeded, stratified "
                                    "where labels allow) to confirm the winner picked on the others.")
    stratify_by: str | None = Field(
        "layout", description="A key of gt.jsonl's `meta` whose value labels each document (synthetic invoices: "
        "layout); the selection/confirmation split keeps each label's share. Documents without it: a plain split.")

    @field_validator("axes", mode="before")
    @classmethod
    def _level_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [level_name(x) for x in v] if isinstance(v, list) else v for k, v in value.items()}
        return value

    def level_problems(self, set_file: Path) -> list[str]:
        """Chosen axes and levels the set file does not declare, one line each naming the field and what is allowed."""
        if not set_file.is_file():
            found = ", ".join(sorted(p.stem for p in set_file.parent.glob("*.yaml"))) or "(none)"
            return [f"prompt_set.base: no set file {set_file}; available: {found}"]
        try:
            declared = declared_levels(set_file)
        except yaml.YAMLError as err:
            return [f"prompt_set.base: {set_file} is not valid YAML: {err}"]
        problems = []
        for axis, levels in self.axes.items():
            if axis not in AXES:
                problems.append(f"prompt_set.axes: unknown axis {axis!r}; available: {', '.join(AXES)}")
                continue
            allowed = declared[axis]
            problems += [f"prompt_set.axes.{axis}: unknown level {x!r}; available: {', '.join(allowed) or '(none)'}"
                         for x in levels if x not in allowed]
            if not levels or len(set(levels)) < len(levels):
                problems.append(f"prompt_set.axes.{axis}: give each level once, and at least one")
        return problems
