"""Planning a run: which rows it needs, which exist already, what each pool asks of the cluster.

The driver works here with document records (ids, locations, ground truth) and keys only. The
bytes of a document are hashed by workers (``hash_documents``), once per (location, size,
mtime): the digests are cached, so a rerun plans without reading any document again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from invoicelab import store
from invoicelab.actors.extractor import Todo
from invoicelab.actors.pages import TextSetting, engine_versions
from invoicelab.backends import backend_class
from invoicelab.config import Experiment, VariantSpec
from invoicelab.data.documents import Document
from invoicelab.data.sources import cache_root
from invoicelab.identity import (digest, fields_identity, model_identity, prompt_identity, row_key,
                                 variant_identity)
from invoicelab.prompts import Prompt
from invoicelab.results import NO_PROMPT

HASH_CHUNK = 256
"""Documents hashed per worker task."""


@dataclass
class VariantPlan:
    """One variant's share of a run."""

    variant: VariantSpec
    prompts: dict[str, Prompt | None]
    setting: TextSetting
    expected: dict[str, tuple[int, str]] = field(default_factory=dict)
    """key -> (document index, prompt id): every row this variant must have."""
    todo: list[tuple[int, str, str]] = field(default_factory=list)
    """(document index, prompt id, key) still to compute."""
    in_run: int = 0
    reused: int = 0
    fit: str | None = None


@dataclass
class Plan:
    """Everything a run needs to know before it starts anything."""

    exp: Experiment
    docs: list[Document]
    hashes: list[str]
    variants: list[VariantPlan]
    reuse: dict[Path, set[str]] = field(default_factory=dict)
    page_fit: str | None = None
    retired: int = 0
    """Rows in the run's folder that this experiment does not expect (an earlier config's)."""

    @property
    def results(self) -> Path:
        return store.results_dir(self.exp.out_path)

    @property
    def expected_keys(self) -> list[str]:
        return [k for v in self.variants for k in v.expected]

    @property
    def todo_rows(self) -> int:
        return sum(len(v.todo) for v in self.variants)

    def names(self) -> dict[str, dict[str, str]]:
        """key -> this run's variant, prompt (id and hash), doc id and file for that row (to rename reused rows)."""
        from invoicelab.prompt_versions import prompt_hash

        hashes = {(v.variant.name, pid): prompt_hash(prompt, self.exp.fields)
                  for v in self.variants for pid, prompt in v.prompts.items()}
        return {k: {"variant": v.variant.name, "prompt": p, "prompt_hash": hashes.get((v.variant.name, p)),
                    "doc_id": self.docs[i].doc_id, "file": self.docs[i].path}
                for v in self.variants for k, (i, p) in v.expected.items()}

    def todo_docs(self, setting: TextSetting) -> list[int]:
        """Indices of documents that some variant of this text setting still needs."""
        return sorted({i for v in self.variants if v.setting == setting for i, _, _ in v.todo})


def text_setting(exp: Experiment, variant: VariantSpec) -> TextSetting:
    """How this variant's documents become text (and pixels)."""
    d = exp.dataset
    images = variant.images
    if images is None:
        return TextSetting(variant.text_engine, d.pdf_dpi, d.max_pages, d.max_pixels, ocr_languages=_languages(variant))
    pages = 1 if images.pages == "first" else d.max_pages
    budget = images.pixel_budget if images.pages == "budget" else 0
    return TextSetting(variant.text_engine, d.pdf_dpi, d.max_pages, d.max_pixels, image_max_side=images.max_side,
                       image_pages=pages, image_pixel_budget=budget)


def _languages(variant: VariantSpec) -> str:
    """The OCR languages, for the one engine that has a choice (else "", so other settings stay as they were)."""
    return variant.ocr.languages if variant.text_engine == "tesseract" else ""


def setting_identity(setting: TextSetting) -> dict[str, Any]:
    """A text setting with the versions of the engines that produce its text."""
    return {**asdict(setting), **engine_versions(setting.engine, setting.ocr_languages)}


def pin_models(exp: Experiment) -> tuple[Experiment, dict[str, dict[str, str]]]:
    """Resolve each variant's model once (the revision of a Hugging Face id is written into the config)."""
    identities = {v.name: model_identity(v) for v in exp.variants}
    data = json.loads(exp.model_dump_json())
    for v in data["variants"]:
        if "revision" in identities[v["name"]] and identities[v["name"]]["revision"] != "unresolved":
            v["revision"] = identities[v["name"]]["revision"]
    return Experiment.model_validate(data), identities


def make_plan(exp: Experiment, docs: list[Document], hashes: list[str], prompts: list[Prompt],
              identities: dict[str, dict[str, str]]) -> Plan:
    """Keys of every row; rows already in the run folder or reusable from the store; what is left."""
    fields_id = fields_identity(exp.fields)
    doc_ids = [digest([d.doc_id, h, d.fields_json, d.normalized_json, d.error]) for d, h in zip(docs, hashes)]
    plans, seen = [], []
    for variant in exp.variants:
        uses_prompt = backend_class(variant.backend).uses_prompt
        chosen: dict[str, Prompt | None] = {p.id: p for p in prompts} if uses_prompt else {NO_PROMPT: None}
        setting = text_setting(exp, variant)
        vplan = VariantPlan(variant, chosen, setting)
        setting_id = setting_identity(setting)
        identity = variant_identity(variant, identities[variant.name])
        replica = seen.count(digest(identity))  # two identical variants in one experiment: two computations
        seen.append(digest(identity))
        variant_id = digest({**identity, "replica": replica} if replica else identity)
        for pid, prompt in chosen.items():
            prompt_id = prompt_identity(prompt, exp.fields)
            for i, doc_id in enumerate(doc_ids):
                vplan.expected[row_key(doc_id, setting_id, prompt_id, variant_id, fields_id)] = (i, pid)
        plans.append(vplan)
    plan = Plan(exp, docs, hashes, plans)
    expected = set(plan.expected_keys)
    stored = store.keys_in(plan.results)
    plan.retired = len(stored - expected)  # rows of an earlier config: moved aside when the run starts
    present = stored & expected
    wanted = expected - present
    plan.reuse = store.reusable(exp.store_path, plan.results, wanted) if wanted else {}
    reusable = set().union(*plan.reuse.values()) if plan.reuse else set()
    for vplan in plans:
        for key, (i, pid) in vplan.expected.items():
            if key in present:
                vplan.in_run += 1
            elif key in reusable:
                vplan.reused += 1
            else:
                vplan.todo.append((i, pid, key))
    return plan


def todo_units(vplan: VariantPlan, docs: list[Document]) -> dict[int, list[Todo]]:
    """Document index -> the (doc id, prompt id, key) rows this variant computes for it."""
    out: dict[int, list[Todo]] = {}
    for i, pid, key in vplan.todo:
        out.setdefault(i, []).append((docs[i].doc_id, pid, key))
    return out


# --- document digests ---------------------------------------------------------------------------


def _hash_cache(docs: list[Document]) -> Path:
    where = docs[0].path.rsplit("/", 1)[0] if docs and docs[0].path else "none"
    return cache_root() / "doc-sha256" / f"{digest(where)[:24]}.json"


def _stamp(doc: Document) -> str:
    return f"{doc.path}|{getattr(doc, 'size', -1)}|{getattr(doc, 'mtime_ns', -1)}"


def cached_hashes(docs: list[Document]) -> tuple[list[str | None], dict[str, str]]:
    """Digests known from earlier runs (None where a document must be hashed), and the cache itself."""
    path = _hash_cache(docs)
    cache = json.loads(path.read_text()) if path.is_file() else {}
    return [("" if d.error or not d.path else cache.get(_stamp(d))) for d in docs], cache


def save_hashes(docs: list[Document], hashes: list[str], cache: dict[str, str]) -> None:
    cache.update({_stamp(d): h for d, h in zip(docs, hashes) if h})
    path = _hash_cache(docs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(cache))
    tmp.replace(path)
