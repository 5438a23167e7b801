"""Loading a transformers model at a precision, and checking that it really has it.

Floats (fp32, bf16, fp16), bitsandbytes int8 / nf4 at load time; torch dynamic int8 (CPU) and torchao
int8 / int4 weight-only after it (``precision_quant``, with Linear layers kept in float by name); and
the checks and measurements that let ``info()`` report what was really loaded: dtypes per parameter,
quantized layer classes (or weight tensor classes, for torchao), memory. A precision that cannot be
honoured here raises ``PrecisionError``; nothing falls back silently. Imports torch and transformers
lazily; never imports Ray.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from invoicelab.backends.precision_quant import (
    KEEP_FLOAT_PRECISIONS,
    TORCHAO_TENSOR,
    WEIGHT_ONLY,
    inner_tensors,
    int4_values_ok,
    kept_float,
    layer_matches,
    linear_names,
    quantize_loaded,
    quiet_torchao_import,
    tensor_subclass,
    torchao_config,
)

FLOAT_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
QUANTIZED_CLASS = {"int8-dynamic": "DynamicQuantizedLinear", "bnb-int8": "Linear8bitLt", "bnb-nf4": "Linear4bit",
                   **{p: f"Linear[{cls}]" for p, cls in TORCHAO_TENSOR.items()}}
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


def load_model(path: str, precision: str, device: str, revision: str | None = None, model_class: Any = None,
               keep_float: list[str] | tuple[str, ...] = (), offload: dict[str, Any] | None = None) -> Any:
    """Load the model at a precision on a device, in eval mode, and check it has that precision.

    Args:
        path: A local model folder.
        precision: One of ``PRECISIONS``.
        device: ``"cpu"`` or ``"cuda[:n]"``.
        revision: The Hugging Face commit (ids only).
        model_class: The transformers Auto class to load with (default ``AutoModelForCausalLM``; the
            VLM backend passes ``AutoModelForImageTextToText``).
        keep_float: int8-dynamic and *-weight-only: Linear layers whose qualified name ends with one
            of these stay in float.
        offload: ``{"device_gb", "cpu_gb", "folder"}`` (a variant's ``offload`` setting): weights past
            ``device_gb`` go to CPU memory (GPU devices, up to ``cpu_gb``) and then to disk, through
            accelerate's ``device_map="auto"`` with ``max_memory`` (see ``offload_kwargs``).

    Raises:
        PrecisionError: the precision cannot run here, ``keep_float`` is given to a precision that does
            not take it or names no layer, offloading is asked for a precision it cannot take, or the
            loaded model is not what was asked for.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if keep_float and precision not in KEEP_FLOAT_PRECISIONS:
        raise PrecisionError(f"keep_float applies to {', '.join(KEEP_FLOAT_PRECISIONS)}, not to {precision}")
    kwargs: dict[str, Any] = {"device_map": {"": device}, **pinned(revision)}
    if offload:
        kwargs.update(offload_kwargs(precision, device, offload))
    if precision in FLOAT_DTYPES:
        dtype = getattr(torch, FLOAT_DTYPES[precision])
        probe_dtype(dtype, device)
        kwargs["dtype"] = dtype
    elif precision.startswith("bnb"):
        kwargs["quantization_config"] = bnb_config(precision)
    elif precision == "int8-dynamic" and device != "cpu":
        raise PrecisionError("int8-dynamic (torch dynamic quantization) runs on CPU only; use device='cpu' "
                             "or a bnb-* or *-weight-only precision on GPU")
    elif precision == "int8-dynamic":
        kwargs["dtype"] = torch.float32  # torch's dynamic quantization takes float32 Linear layers
    elif precision in WEIGHT_ONLY:
        torchao_config(precision)  # fails before loading when torchao is missing
        kwargs["dtype"] = torch.float32 if device == "cpu" else torch.bfloat16
    with quiet_torchao_import():  # transformers imports torchao, when installed, while loading any model
        model = (model_class or AutoModelForCausalLM).from_pretrained(path, **kwargs).eval()
    if precision in KEEP_FLOAT_PRECISIONS:
        model = quantize_loaded(model, precision, keep_float)
    check_loaded(model, precision, keep_float)
    return model


def offload_kwargs(precision: str, device: str, offload: dict[str, Any]) -> dict[str, Any]:
    """``from_pretrained`` arguments that cap the weights on ``device`` and send the rest to CPU, then disk.

    accelerate places whole decoder layers in order (``device_map="auto"``) within ``max_memory``
    (bytes per device: the GPU index and ``"cpu"``), and writes or maps what is left to
    ``offload_folder``; each offloaded layer is brought to the device for its forward pass, so the
    answers are the same and the speed is lower. Float precisions only: the quantized ones either
    quantize after loading (which needs every weight in memory) or, for bitsandbytes, keep their
    own placement rules.

    Raises:
        PrecisionError: a precision that cannot be offloaded.
    """
    import tempfile

    import psutil

    if precision not in FLOAT_DTYPES:
        raise PrecisionError(f"offload applies to {', '.join(FLOAT_DTYPES)}, not to {precision}: choose a float "
                             "precision with offload, or a smaller precision without it")
    device_bytes = int(offload["device_gb"] * 1e9)
    if device == "cpu":
        max_memory: dict[Any, int] = {"cpu": device_bytes}
    else:
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        cpu = offload.get("cpu_gb")
        max_memory = {index: device_bytes, "cpu": int(cpu * 1e9) if cpu else int(psutil.virtual_memory().total)}
    folder = offload.get("folder") or tempfile.mkdtemp(prefix="invoicelab-offload-")
    return {"device_map": "auto", "max_memory": max_memory, "offload_folder": folder}


def placement(model: Any) -> dict[str, Any] | None:
    """Where an offloaded model's modules are (module count and parameter bytes per place), None if not
    offloaded. Bytes of modules on disk are those their checkpoint holds (their in-memory tensors are empty)."""
    device_map = getattr(model, "hf_device_map", None)
    places = {str(v) for v in (device_map or {}).values()}
    if not places or (len(places) == 1 and "disk" not in places):
        return None  # one device, no offloading
    counts: Counter = Counter()
    sizes: Counter = Counter()
    modules, seen = dict(model.named_modules()), set()
    for name, where in device_map.items():
        counts[str(where)] += 1
        for p in modules[name].parameters() if name in modules else ():
            if id(p) not in seen:  # a tied weight (embedding and lm_head) is held once
                seen.add(id(p))
                sizes[str(where)] += p.numel() * p.element_size()
    return {"modules": dict(counts), "bytes": dict(sizes)}


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


def check_loaded(model: Any, precision: str, keep_float: list[str] | tuple[str, ...] = ()) -> None:
    """Raise unless the loaded model really has the asked precision (no silent fallback).

    Quantized precisions need layers of their quantized class; with ``keep_float``, exactly the Linear
    layers it names must still be float.

    Raises:
        PrecisionError: the model is not what was asked for.
    """
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
    if precision == "int4-weight-only" and not int4_values_ok(model):
        raise PrecisionError("asked for int4-weight-only but some quantized weights hold values outside int4")
    if keep_float:
        named = [n for n in linear_names(model) if layer_matches(n, keep_float)]
        if kept_float(model) != named:
            raise PrecisionError(f"keep_float {list(keep_float)} should leave {named} in float, but "
                                 f"{kept_float(model)} are")


def nf4_types(model: Any) -> set[str]:
    """The 4-bit quantization types of a model's Linear4bit layers."""
    return {m.weight.quant_type for m in model.modules() if m._get_name() == "Linear4bit"}


def linear_layer_counts(model: Any) -> dict[str, int]:
    """Count linear layers per class: ``nn.Linear``, bitsandbytes', torch dynamic int8's, torchao's.

    Classes are named by ``Module._get_name()``, under which torch's dynamic-quantized Linear (a class
    itself called ``Linear``) reports as ``DynamicQuantizedLinear``; an ``nn.Linear`` whose weight is a
    torchao tensor subclass reports as ``Linear[<subclass>]`` (e.g. ``Linear[Int8Tensor]``).
    """
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    linear = (torch.nn.Linear, DynamicLinear)
    return dict(Counter(_layer_class(m) for m in model.modules() if isinstance(m, linear)))


def _layer_class(module: Any) -> str:
    subclass = tensor_subclass(getattr(module, "weight", None))
    return f"{module._get_name()}[{subclass}]" if subclass else module._get_name()


def dynamic_packed_tensors(model: Any) -> list[Any]:
    """Weights and biases held inside torch dynamic-quantized Linear layers (not parameters or buffers)."""
    tensors = []
    for module in model.modules():
        if module._get_name() == "DynamicQuantizedLinear":
            weight, bias = module._packed_params._weight_bias()
            tensors += [t for t in (weight, bias) if t is not None]
    return tensors


def held_tensors(model: Any, buffers: bool = False) -> list[Any]:
    """The plain tensors a model holds: parameters (torchao subclasses opened into their data tensors),
    dynamic-quantized packed weights, and buffers if asked (tensors shared by several modules once)."""
    tensors = [t for p in model.parameters() for t in inner_tensors(p)] + dynamic_packed_tensors(model)
    return tensors + (list(model.buffers()) if buffers else [])


def param_dtype_counts(model: Any) -> dict[str, int]:
    """Elements per dtype over ``held_tensors`` (an Int8Tensor weight counts as its int8 values and scales)."""
    counts: Counter = Counter()
    for tensor in held_tensors(model):
        counts[str(tensor.dtype)] += tensor.numel()
    return dict(counts)


def memory_footprint(model: Any, precision: str) -> int:
    """Bytes held by the model: ``get_memory_footprint()`` (bitsandbytes and floats), else the bytes of
    ``held_tensors`` with buffers (what torch dynamic int8 and torchao really store)."""
    if precision not in KEEP_FLOAT_PRECISIONS:
        return int(model.get_memory_footprint())
    return int(sum(t.numel() * t.element_size() for t in held_tensors(model, buffers=True)))
