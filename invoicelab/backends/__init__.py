"""Backend registry: a small dict of lazy names, so only the chosen backend is imported.

Adding a backend is one module and one line here, beside its typed settings in ``invoicelab.variants``.
"""

from __future__ import annotations

import importlib
from typing import Any

from invoicelab.config import BACKENDS, ConfigError, FieldSpec, VariantSpec

REGISTRY: dict[str, str] = {
    "fake": "invoicelab.backends.fake:FakeBackend",
    "ocr-llm": "invoicelab.backends.ocr_llm:OcrLlmBackend",
    "rules": "invoicelab.backends.baseline:RulesBackend",
    "transformers-vlm": "invoicelab.backends.vlm:VlmBackend",
    "vllm": "invoicelab.backends.vllm_engine:VllmBackend",
    "openai-http": "invoicelab.backends.openai_http:OpenAIBackend",
}
assert set(REGISTRY) == set(BACKENDS), "variants.BACKENDS and backends.REGISTRY must list the same names"


def backend_class(name: str) -> type:
    """Import and return a backend class by its registry name.

    Raises:
        ConfigError: the name is unknown (the message lists the backends that exist).
    """
    if name not in REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; available: {', '.join(sorted(REGISTRY))}")
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def create_backend(variant: VariantSpec, fields: dict[str, FieldSpec], num_threads: int | None = None,
                   seed: int = 0, device: str = "cpu") -> Any:
    """Build (and load) the backend of a variant on ``device`` ("cpu" or "cuda")."""
    return backend_class(variant.backend)(variant, fields, num_threads, seed, device=device)
