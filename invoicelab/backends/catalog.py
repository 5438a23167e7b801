"""What invoicelab can run, and what this machine supports: backends, precisions, OCR engines, models.

``invoicelab models`` prints it. Each check is the cheapest one that tells the truth: a package
that is not installed is looked up without importing it; a precision is probed with a real 4x4
matmul on the device; an OCR engine is asked for its version. Never imports Ray.
"""

from __future__ import annotations

import os
from importlib import metadata, util
from typing import Any

from invoicelab.variants import PRECISIONS, VARIANT_CLASSES

_BACKEND_NEEDS = {
    "ocr-llm": ("torch", "transformers"),
    "transformers-vlm": ("torch", "transformers"),
    "vllm": ("vllm",),
    "openai-http": ("openai",),
}
_PRECISION_NEEDS = {"bnb-int8": "bitsandbytes", "bnb-nf4": "bitsandbytes", "int8-weight-only": "torchao",
                    "int4-weight-only": "torchao"}
_EXTRA = {"vllm": "pip install 'invoicelab[vllm]' (Linux, CUDA)", "openai": "pip install openai",
          "torchao": "pip install torchao", "bitsandbytes": "pip install bitsandbytes"}


def _installed(module: str) -> str | None:
    """The installed version of the package providing ``module``, or None."""
    if util.find_spec(module) is None:
        return None
    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return "installed"


def gpus() -> list[str]:
    """Names of the CUDA GPUs torch sees (empty without torch or a GPU)."""
    if _installed("torch") is None:
        return []
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []


def backends() -> list[dict[str, Any]]:
    """Each backend: what it is, and whether it can run here (or what is missing)."""
    out = []
    for cls in VARIANT_CLASSES:
        name = cls.model_fields["backend"].annotation.__args__[0]
        missing = [m for m in _BACKEND_NEEDS.get(name, ()) if _installed(m) is None]
        status = "ok" if not missing else "missing " + ", ".join(_EXTRA.get(m, f"pip install {m}") for m in missing)
        if name == "vllm" and not missing and not gpus():
            status = "installed, but needs a CUDA GPU"
        out.append({"backend": name, "what": (cls.__doc__ or "").strip().splitlines()[0], "here": status})
    return out


def _probe(precision: str, device: str) -> str:
    from invoicelab.backends.precision import FLOAT_DTYPES, PrecisionError, probe_dtype

    if precision in FLOAT_DTYPES:
        import torch

        try:
            probe_dtype(getattr(torch, FLOAT_DTYPES[precision]), device)
        except PrecisionError as err:
            return f"no: {err}"
        return "ok"
    if precision == "int8-dynamic":
        return "ok" if device == "cpu" else "no: CPU only"
    need = _PRECISION_NEEDS.get(precision)
    if need and _installed(need) is None:
        return f"no: {_EXTRA.get(need, 'pip install ' + need)}"
    return "ok"


def precisions() -> list[dict[str, Any]]:
    """Each transformers precision: whether it runs on this machine's CPU and GPU."""
    if _installed("torch") is None:
        return [{"precision": p, "cpu": "no: pip install torch", "cuda": "no"} for p in PRECISIONS]
    cuda = bool(gpus())
    return [{"precision": p, "cpu": _probe(p, "cpu"), "cuda": _probe(p, "cuda") if cuda else "no GPU here"}
            for p in PRECISIONS]


def ocr_engines() -> dict[str, str]:
    """Each OCR engine: "ok (version)" or why it cannot run here."""
    from invoicelab.backends.ocr import ocr_engines_status

    return ocr_engines_status()


def bundled_models() -> dict[str, str]:
    """Each bundled model alias: installed (its file) or the command that installs it."""
    from invoicelab.backends.models import BUNDLED, ModelSourceError, bundled_gguf

    out = {}
    for alias, entry in BUNDLED.items():
        try:
            out[alias] = f"installed ({bundled_gguf(alias).name})"
        except ModelSourceError:
            out[alias] = f"not installed: {entry.install}"
    return out


def catalog() -> dict[str, Any]:
    """Everything ``invoicelab models`` shows."""
    return {"machine": {"cpus": os.cpu_count(), "gpus": gpus()}, "backends": backends(), "precisions": precisions(),
            "ocr_engines": ocr_engines(), "bundled_models": bundled_models()}
