"""Loading a transformers model at a precision, and checking that it really has it.

Floats (fp32, bf16, fp16), torch dynamic int8 (CPU), bitsandbytes int8 / nf4, and the checks and
measurements that let ``info()`` report what was really loaded: dtypes per parameter, quantized
layer classes, memory. A precision that cannot be honoured here raises ``PrecisionError``; nothing
falls back silently. Imports torch and transformers lazily; never imports Ray.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FLOAT_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
QUANTIZED_CLASS = {"int8-dynamic": "DynamicQuantizedLinear", "bnb-int8": "Linear8bitLt", "bnb-nf4": "Linear4bit"}
# bitsandbytes logs, on every int8 matmul, that fp32 activations are cast to fp16; info() records it once.
BNB_CAST_LOGGER, BNB_CAST_MESSAGE = "bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast"


class PrecisionError(RuntimeError):
    """A precision that cannot be honoured on this machine; the message says why and what to use."""


def pinned(revision: str | None) -> dict[str, str]:
    """``from_pretrained`` keyword for a pinned Hugging Face revision (none when unresolved)."""
    return {"revision": revision} if revision and revision != "unresolved" else {}


@contextmanager
def quiet_bnb_cast_log() -> Iterator[None]:
    """Drop bitsandbytes' per-matmul "inputs will be cast to float16" log lines while generating."""
    logger = logging.getLogger(BNB_CAST_LOGGER)
    def drop(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(BNB_CAST_MESSAGE)

    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def load_model(path: str, precision: str, device: str, revision: str | None = None) -> Any:
    """Load the causal LM at a precision on a device, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"device_map": {"": device}, **pinned(revision)}
    if precision in FLOAT_DTYPES:
        dtype = getattr(torch, FLOAT_DTYPES[precision])
        probe_dtype(dtype, device)
        kwargs["dtype"] = dtype
    elif precision.startswith("bnb"):
        kwargs["quantization_config"] = bnb_config(precision)
    elif device != "cpu":
        raise PrecisionError("int8-dynamic (torch dynamic quantization) runs on CPU only; use device='cpu' "
                             "or a bnb-* precision on GPU")
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()
    if precision == "int8-dynamic":
        model = quantize_dynamic_int8(model)
    return model


def probe_dtype(dtype: Any, device: str) -> None:
    """Fail early, with the reason, if this device cannot multiply matrices in ``dtype``."""
    import torch

    try:
        a = torch.ones(4, 4, dtype=dtype, device=device)
        torch.nn.functional.linear(a, a)
    except RuntimeError as exc:
        raise PrecisionError(f"{dtype} matmul is not supported on {device}: {exc}; choose another precision") \
            from exc


def bnb_config(precision: str) -> Any:
    """The ``BitsAndBytesConfig`` for bnb-int8 or bnb-nf4.

    Raises:
        PrecisionError: bitsandbytes is not installed.
    """
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise PrecisionError(f"precision {precision!r} needs bitsandbytes (pip install 'bitsandbytes>=0.50')") \
            from exc
    if precision == "bnb-int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")


def quantize_dynamic_int8(model: Any) -> Any:
    """Replace every ``nn.Linear`` with torch's dynamically quantized int8 Linear (CPU only), in place."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices, repeated per layer
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def check_loaded(model: Any, precision: str) -> None:
    """Raise unless the loaded model really has the asked precision (no silent fallback)."""
    if precision in FLOAT_DTYPES:
        floats = {d for d in param_dtype_counts(model) if d in ("torch.float32", "torch.bfloat16", "torch.float16")}
        if floats != {f"torch.{FLOAT_DTYPES[precision]}"}:
            raise PrecisionError(f"asked for {precision} but the model's float parameters are {sorted(floats)}")
        return
    wanted = QUANTIZED_CLASS[precision]
    if not linear_layer_counts(model).get(wanted):
        raise PrecisionError(f"asked for {precision} but the model has no {wanted} layers")
    if precision == "bnb-nf4" and nf4_types(model) != {"nf4"}:
        raise PrecisionError(f"asked for nf4 but the 4-bit layers use {sorted(nf4_types(model))}")


def nf4_types(model: Any) -> set[str]:
    """The 4-bit quantization types of a model's Linear4bit layers."""
    return {m.weight.quant_type for m in model.modules() if m._get_name() == "Linear4bit"}


def linear_layer_counts(model: Any) -> dict[str, int]:
    """Count linear layers per class: ``nn.Linear``, its bitsandbytes subclasses, torch dynamic int8.

    Classes are named by ``Module._get_name()``, under which torch's dynamic-quantized Linear (a class
    itself called ``Linear``) reports as ``DynamicQuantizedLinear``.
    """
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    linear = (torch.nn.Linear, DynamicLinear)
    return dict(Counter(m._get_name() for m in model.modules() if isinstance(m, linear)))


def dynamic_packed_tensors(model: Any) -> list[Any]:
    """Weights and biases held inside torch dynamic-quantized Linear layers (not parameters or buffers)."""
    tensors = []
    for module in model.modules():
        if module._get_name() == "DynamicQuantizedLinear":
            weight, bias = module._packed_params._weight_bias()
            tensors += [t for t in (weight, bias) if t is not None]
    return tensors


def param_dtype_counts(model: Any) -> dict[str, int]:
    """Elements per dtype over parameters and dynamic-quantized packed weights (shared tensors once)."""
    counts: Counter = Counter()
    for tensor in list(model.parameters()) + dynamic_packed_tensors(model):
        counts[str(tensor.dtype)] += tensor.numel()
    return dict(counts)


def memory_footprint(model: Any, precision: str) -> int:
    """Bytes held by the model: ``get_memory_footprint()``, plus packed weights for dynamic int8."""
    if precision != "int8-dynamic":
        return int(model.get_memory_footprint())
    tensors = list(model.parameters()) + list(model.buffers()) + dynamic_packed_tensors(model)
    return int(sum(t.numel() * t.element_size() for t in tensors))
