"""Saved batch-size profiles: what the tuner found, keyed by what it depends on.

A profile holds the micro-batch and Ray batch the tuner chose (and every probe) for one key: the model
(pinned), precision, backend and the versions of its libraries, the hardware (CPU model and threads,
or GPU name and memory), the image resolution of image-reading variants, and the workload that sets
prompt and answer lengths (text cut, new tokens, structured output). A run reuses the profile of the
same key and probes again when any part changes. One JSON file per key, written atomically, in
``tuning.profiles`` (default ``~/.cache/invoicelab/profiles``; ``INVOICELAB_PROFILES`` overrides).
No Ray, no model.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from invoicelab.config import TuningSpec, VariantSpec
from invoicelab.identity import BACKEND_LIBRARIES, digest, model_identity, version


def profiles_dir(spec: TuningSpec) -> Path:
    """Where profiles are kept."""
    if spec.profiles:
        return Path(spec.profiles).expanduser()
    env = os.environ.get("INVOICELAB_PROFILES")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "invoicelab" / "profiles"


def profile_key(variant: VariantSpec, hardware: dict[str, Any], model: dict[str, str] | None = None) -> dict[str, Any]:
    """What a tuned batch size depends on.

    Args:
        variant: The variant (its batch settings are not part of the key).
        hardware: The tuner's ``ProbeRunner.hardware()``: where the variant runs.
        model: The variant's pinned model identity, when the driver has it (else resolved here).
    """
    images = variant.images
    return {
        "model": model if model is not None else model_identity(variant),
        "precision": variant.precision_label,
        "backend": variant.backend,
        "versions": {lib: version(lib) for lib in BACKEND_LIBRARIES.get(variant.backend, ())},
        "hardware": hardware,
        "image": images.model_dump(mode="json") if images is not None else None,
        "workload": {"max_chars": getattr(getattr(variant, "ocr", None), "max_chars", None),
                     "max_new_tokens": getattr(getattr(variant, "generation", None), "max_new_tokens", None),
                     "structured": getattr(variant, "structured", None),
                     "memory_gb": variant.resources.memory_gb},
    }


def profile_path(folder: Path, key: dict[str, Any]) -> Path:
    return folder / f"{digest(key)[:20]}.json"


def load_profile(folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The saved profile of exactly this key, or None."""
    path = profile_path(folder, key)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if saved.get("key") == json.loads(json.dumps(key)) else None


def save_profile(folder: Path, key: dict[str, Any], decision: dict[str, Any], batch_size: int) -> Path:
    """Write a profile (atomically); returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = profile_path(folder, key)
    body = {"key": key, "micro_batch": decision["micro_batch"], "batch_size": batch_size,
            "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **{k: v for k, v in decision.items()
                                                                if k != "micro_batch"}}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def changed_parts(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Which top-level parts of two keys differ (to say why a profile was probed again)."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def nearest_profile(folder: Path, key: dict[str, Any]) -> list[str]:
    """The parts that changed since the closest saved profile of the same model and backend ([]: none saved)."""
    best: list[str] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("key") or {}
        except (OSError, ValueError):
            continue
        if old.get("model") != key.get("model") or old.get("backend") != key.get("backend"):
            continue
        changed = changed_parts(old, json.loads(json.dumps(key)))
        if changed and (not best or len(changed) < len(best)):
            best = changed
    return best
