"""Dataset sources: a folder with gt.jsonl (local or a URI such as ``s3://bucket/prefix``), or synthetic
invoices generated (once) into a local folder.

Returns the document records of an experiment; never loads pixels and never imports Ray.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from invoicelab.config import DatasetSpec, Experiment
from invoicelab.data.documents import Document, read_manifest


def cache_root() -> Path:
    """Where invoicelab caches generated data, converted models and OCR text."""
    return Path(os.environ.get("INVOICELAB_CACHE") or Path.home() / ".cache" / "invoicelab")


def synthetic_folder(spec: DatasetSpec, seed: int) -> Path:
    """The folder a synthetic dataset lives in: ``dataset.path``, else a cache folder keyed by its settings."""
    if spec.path:
        return Path(spec.path)
    key = hashlib.sha256(f"{spec.n}|{seed}|{spec.synthetic.model_dump_json()}".encode()).hexdigest()[:12]
    return cache_root() / "synthetic" / f"n{spec.n}-seed{seed}-{key}"


def ensure_synthetic(spec: DatasetSpec, seed: int) -> Path:
    """Generate the synthetic dataset unless its folder already holds it; return the folder."""
    from invoicelab.data.synthetic import generate

    folder = synthetic_folder(spec, seed)
    if not (folder / "gt.jsonl").is_file():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        generate(tmp, n=spec.n, seed=seed, spec=spec.synthetic)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.rename(folder)
        except OSError:  # another process generated it first; the content is the same
            pass
    return folder


def load_documents(exp: Experiment) -> list[Document]:
    """The experiment's document records (generating synthetic data first if needed).

    A folder source's ``dataset.path`` is a URI as given, or a local path relative to the config
    file's folder (``Experiment.resolve_uri``), the same on every machine the run reaches.

    Args:
        exp: The experiment.

    Returns:
        The documents, in manifest order (see ``read_manifest``).

    Raises:
        DatasetError: the folder or its gt.jsonl cannot be used (see ``read_manifest``).
    """
    spec = exp.dataset
    if spec.source == "synthetic":
        folder: str | Path = ensure_synthetic(spec, exp.seed if spec.seed is None else spec.seed)
    else:
        folder = exp.resolve_uri(spec.path or ".")
    return read_manifest(folder, limit=spec.limit)
