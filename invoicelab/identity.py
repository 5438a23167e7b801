"""Content identity: what a result row depends on, hashed into its key.

A row's key is a hash of the document's bytes, the page/OCR setting, the prompt's text, the
variant's identity (backend, model source pinned to a revision or the content hash of local
weights, precision, generation and backend settings, library versions) and the field
specifications. Two rows with the same key are the same computation, whichever experiment or
run asked for it, so a result store can skip or share them. The driver resolves identities once
and sends them to the actors, which never re-resolve a model or re-read a prompt file.

This module never imports Ray, torch or transformers, and never downloads anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from invoicelab.config import FieldSpec, VariantSpec
from invoicelab.prompts import Prompt

_HF = ("transformers", "torch", "xgrammar", "bitsandbytes", "torchao")
BACKEND_LIBRARIES = {"ocr-llm": _HF, "transformers-vlm": _HF, "vllm": ("vllm", "xgrammar")}
"""The libraries whose version changes what a backend computes."""

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".json", ".model", ".txt", ".jinja")


def digest(obj: Any) -> str:
    """sha256 hex of a JSON-able object, keys sorted (the same object always gives the same hash)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def prompt_identity(prompt: Prompt | None, fields: dict[str, FieldSpec]) -> str:
    """Hash of what the model is given: the prompt rendered for these fields, document text left as a
    placeholder, and the answer prefix ("none" for backends without a prompt). Its id, description and
    file location are not part of it, so a renamed or moved prompt with the same text reuses its rows."""
    if prompt is None:
        return "none"
    messages, prefix = prompt.render(fields, "${text}")
    return digest({"messages": messages, "prefix": prefix, "output": getattr(prompt, "output", "json")})


def fields_identity(fields: dict[str, FieldSpec]) -> str:
    """Hash of the field specifications: names, types, comparison rules, descriptions."""
    return digest({name: spec.model_dump(mode="json") for name, spec in fields.items()})


def model_identity(variant: VariantSpec) -> dict[str, str]:
    """The model a variant loads, pinned: what every node must load for the rows to be comparable.

    Returns:
        ``{"source": ..., "revision": ...}`` for a Hugging Face id (the commit), or
        ``{"source": ..., "sha256": ...}`` for a bundled or local model (a hash of its files).
    """
    source = variant.model_source
    if getattr(variant, "base_url", None):  # a served model: the server and the name it serves it under
        return {"source": f"{variant.base_url} {source}"}
    if not source:
        return {"source": ""}
    from invoicelab.backends.models import BUNDLED, ModelSourceError, bundled_gguf

    if source in BUNDLED:
        try:
            return {"source": source, "sha256": file_digest(bundled_gguf(source))}
        except ModelSourceError as err:  # the actor reports the same error as its load failure
            return {"source": source, "sha256": f"unavailable: {err}"}
    path = Path(source).expanduser()
    if path.exists():
        return {"source": str(path.resolve()), "sha256": folder_digest(path)}
    return {"source": source, "revision": getattr(variant, "revision", None) or hub_revision(source)}


def hub_revision(repo_id: str) -> str:
    """The commit the local Hugging Face cache holds for ``repo_id`` (``refs/main``), else "unresolved"."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return "unresolved"
    ref = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    return ref.read_text().strip() if ref.is_file() else "unresolved"


def file_digest(path: Path) -> str:
    """sha256 of a file's content, cached by (path, size, mtime) so large weights are hashed once."""
    from invoicelab.backends.models import file_hash
    from invoicelab.data.sources import cache_root

    stat = path.stat()
    memo = cache_root() / "digests" / (digest([str(path.resolve()), stat.st_size, stat.st_mtime_ns]) + ".txt")
    if memo.is_file():
        return memo.read_text().strip()
    value = file_hash(path, length=64)
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(value)
    tmp.replace(memo)
    return value


def folder_digest(path: Path) -> str:
    """Hash of a model file or folder: its weight, config and tokenizer files, by name and content."""
    if path.is_file():
        return file_digest(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    return digest({str(p.relative_to(path)): file_digest(p) for p in files})


def variant_identity(variant: VariantSpec, model: dict[str, str]) -> dict[str, Any]:
    """Everything about a variant that changes its answers; its name and pool size are not part of it.

    The device is (CPU or GPU, and the accelerator type): another device's kernels can change a model's
    answers. The batch settings are not (``VariantBase.not_identity``): left padding can change an answer
    slightly, but the micro-batch a row was computed in may change within a run (out-of-memory halving,
    tuning), so each row records it (``micro_batch``, ``batch_docs``) instead.
    """
    libraries = {lib: version(lib) for lib in BACKEND_LIBRARIES.get(variant.backend, ())}
    res = variant.resources
    return {
        **variant.identity(), "model": model,
        "device": "cuda" if res.num_gpus > 0 else "cpu", "accelerator_type": res.accelerator_type,
        "libraries": {"invoicelab": version("invoicelab"), **libraries},
    }


def row_key(doc_sha256: str, setting: dict[str, Any], prompt_id: str, variant_id: str, fields_id: str) -> str:
    """The content key of one result row (sha256 hex)."""
    return digest([doc_sha256, setting, prompt_id, variant_id, fields_id])
