"""Quantizing a loaded model in place: torch dynamic int8 and torchao weight-only, with float exclusions.

``quantize_loaded`` turns a float model into the asked precision, leaving the Linear layers named in
``keep_float`` (by the end of their qualified name) in float; ``tensor_subclass``, ``kept_float`` and
``describe`` say afterwards what is really there, including whether answers depend on the batch a
document is in. torchao quantizes by replacing a Linear's weight with a tensor subclass (the module
stays ``nn.Linear``), so layers are counted by their weight's class. Imports torch and torchao
lazily; never imports Ray.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from invoicelab.variants import KEEP_FLOAT_PRECISIONS

WEIGHT_ONLY = ("int8-weight-only", "int4-weight-only")
# torchao's weight tensor class per precision (int4: 4-bit values held one per int8 byte, see torchao_config)
TORCHAO_TENSOR = {"int8-weight-only": "Int8Tensor", "int4-weight-only": "IntxUnpackedToInt8Tensor"}
INT4_GROUP_SIZE = 32

NOTES = {
    "int8-dynamic": "torch dynamic int8 ({engine} engine): per-tensor int8 weights, activations quantized on every call",
    "bnb-int8": "bitsandbytes int8 (LLM.int8): activations cast to float16, outlier columns (>6.0) kept in float16",
    "bnb-nf4": "bitsandbytes nf4: 4-bit weights with a scale per block, dequantized in the matmul",
    "int8-weight-only": "torchao int8 weight-only: per-row int8 weights cast to the activations' float dtype per matmul",
    "int4-weight-only": ("torchao int4 weight-only, group size {group}: 4-bit weight values held one per int8 byte "
                         "(torchao {version} packs int4 only for CUDA, mslk or XPU/NPU kernels), so memory is about "
                         "int8's; weights dequantized for each matmul"),
}
ROW_MIXING = {  # arithmetic that mixes the rows of a batch
    "int8-dynamic": "one activation scale for the whole batch (padding included) on every call",
    "bnb-int8": "outlier columns chosen over the whole batch on every call, float16 activations",
}
HALF_ROUNDING = ("{dtype} arithmetic: its rounding depends on the batch's shape (rows, padded length), and at "
                 "{dtype}'s precision that changes greedy answers")


def layer_matches(name: str, suffixes: list[str] | tuple[str, ...]) -> bool:
    """Whether a module's qualified name ends with one of ``suffixes`` at a name boundary."""
    return any(name == s or name.endswith("." + s) for s in suffixes)


def linear_names(model: Any) -> list[str]:
    """Qualified names of the model's ``nn.Linear`` layers, in module order."""
    import torch

    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def check_keep_float(model: Any, keep_float: list[str] | tuple[str, ...]) -> None:
    """Refuse a ``keep_float`` entry that names no Linear layer (a typo would quantize silently).

    Raises:
        PrecisionError: an entry matches none of the model's Linear layers.
    """
    from invoicelab.backends.precision import PrecisionError

    names = linear_names(model)
    unmatched = [s for s in keep_float if not any(layer_matches(n, [s]) for n in names)]
    if unmatched:
        endings = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise PrecisionError(f"keep_float {unmatched} match no Linear layer of this model; its Linear layers end "
                             f"with: {', '.join(endings)}")


def quantize_loaded(model: Any, precision: str, keep_float: list[str] | tuple[str, ...] = ()) -> Any:
    """Quantize a float model in place to ``precision``, leaving the ``keep_float`` layers in float.

    Args:
        model: A float model (loaded by ``load_model``).
        precision: ``int8-dynamic``, ``int8-weight-only`` or ``int4-weight-only``.
        keep_float: Ends of Linear layer names to keep in float (e.g. ``["down_proj", "lm_head"]``).

    Returns:
        The quantized model (the same object for torchao; torch's dynamic quantization too, in place).

    Raises:
        PrecisionError: torchao is missing, or a ``keep_float`` entry names no Linear layer.
    """
    check_keep_float(model, keep_float)
    wanted = [n for n in linear_names(model) if not layer_matches(n, keep_float)]
    if precision == "int8-dynamic":
        return quantize_dynamic_int8(model, wanted)
    quantize_, config = torchao_config(precision)
    wanted_set = set(wanted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_(model, config, filter_fn=lambda module, name: name in wanted_set)
    return model


def quantize_dynamic_int8(model: Any, names: list[str]) -> Any:
    """Replace the named ``nn.Linear`` layers with torch's dynamically quantized int8 Linear (CPU), in place."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices, repeated per layer
        return torch.ao.quantization.quantize_dynamic(model, set(names), dtype=torch.qint8, inplace=True)


def torchao_config(precision: str) -> tuple[Any, Any]:
    """torchao's ``quantize_`` and the weight-only config for ``precision``.

    Raises:
        PrecisionError: torchao is not installed.
    """
    from invoicelab.backends.precision import PrecisionError

    try:
        import torch

        with quiet_torchao_import():
            from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
            from torchao.quantization.granularity import PerGroup
    except ImportError as exc:
        raise PrecisionError(f"precision {precision!r} needs torchao (pip install 'torchao>=0.18')") from exc
    if precision == "int8-weight-only":
        return quantize_, Int8WeightOnlyConfig()
    # torchao's Int4WeightOnlyConfig packs two values a byte, but each of its layouts needs CUDA (tinygemm),
    # mslk or an XPU/NPU; IntxWeightOnlyConfig(int4) is the int4 scheme that runs on CPU (unpacked).
    return quantize_, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP_SIZE))


@contextmanager
def quiet_torchao_import() -> Iterator[None]:
    """Silence warnings while torchao is imported: its CUDA-only kernels (mxfp8, cutlass) fail to load on
    a CPU build of torch, and torch notes that torchao's enums need no pytree registration."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def tensor_subclass(tensor: Any) -> str | None:
    """The torchao tensor subclass a weight is (``Int8Tensor``...), None for a plain tensor."""
    cls = type(tensor)
    return cls.__name__ if cls.__module__.startswith("torchao.") else None


def inner_tensors(tensor: Any) -> list[Any]:
    """The plain tensors that hold a tensor subclass's data (quantized values, scales, zero points)."""
    if tensor_subclass(tensor) is None:
        return [tensor]
    names, _ = tensor.__tensor_flatten__()
    return [t for n in names if (t := getattr(tensor, n, None)) is not None]


def kept_float(model: Any) -> list[str]:
    """Names of Linear layers whose weights are still float (neither a quantized module nor a subclass)."""
    import torch

    return [name for name, m in model.named_modules()
            if type(m) is torch.nn.Linear and tensor_subclass(m.weight) is None and m.weight.is_floating_point()]


def int4_values_ok(model: Any) -> bool:
    """Whether every torchao int4 weight really holds only 4-bit values (-8..7)."""
    import torch

    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)
               and tensor_subclass(m.weight) == TORCHAO_TENSOR["int4-weight-only"]]
    return all(str(w.target_dtype) == "torch.int4" and -8 <= w.qdata.min() and w.qdata.max() <= 7 for w in weights)


def describe(model: Any, precision: str) -> dict[str, Any]:
    """What ``info()`` adds about the precision: float layers kept, batch dependence, a note, versions.

    ``batch_dependent`` is True where the same document can get another answer in another batch
    (``batch_dependence`` says why): arithmetic that mixes a batch's rows (one activation scale,
    one set of outlier columns), or bfloat16/float16 arithmetic, whose rounding follows the batch's
    shape. float32 arithmetic (fp32, and the weight-only precisions on CPU) differs between batch
    shapes only in the last bits; benchmarks/quantization.py --rebatch measured no answer changing.
    """
    reason = batch_dependence(model, precision)
    out: dict[str, Any] = {"batch_dependent": bool(reason)}
    if reason:
        out["batch_dependence"] = reason
    if precision in KEEP_FLOAT_PRECISIONS:
        out["float_linear_layers"] = kept_float(model)
    if precision in NOTES or reason:
        scheme = NOTES.get(precision, precision).format(engine=_quantized_engine(), group=INT4_GROUP_SIZE,
                                                        version=_version("torchao"))
        out["note"] = f"{scheme}; batch-dependent: {reason}" if reason else f"{scheme}; rows independent"
    library = "torchao" if precision in WEIGHT_ONLY else "bitsandbytes" if precision.startswith("bnb") else None
    if library:
        out[f"{library}_version"] = _version(library)
    return out


def batch_dependence(model: Any, precision: str) -> str:
    """Why a document's answer can change with its batch companions; empty where it cannot beyond float32
    rounding."""
    if precision in ROW_MIXING:
        return ROW_MIXING[precision]
    half = half_compute_dtype(model, precision)
    return HALF_ROUNDING.format(dtype=half) if half else ""


def half_compute_dtype(model: Any, precision: str) -> str:
    """``bfloat16`` / ``float16`` where the matmuls run in half precision, else empty.

    bf16/fp16 models, weight-only models loaded in bfloat16 (on CUDA), and bitsandbytes 4-bit layers
    whose compute dtype is half or that use bitsandbytes' CPU kernel for AVX512-BF16 CPUs (it casts
    activations to bfloat16).
    """
    import torch

    halves = {torch.bfloat16: "bfloat16", torch.float16: "float16"}
    if precision in ("bf16", "fp16") or precision in WEIGHT_ONLY:
        return halves.get(model.dtype, "")
    if precision == "bnb-nf4":
        layers = [m for m in model.modules() if m._get_name() == "Linear4bit"]
        if any(m.weight.device.type == "cpu" and getattr(m, "support_avx512bf16_for_cpu", False) for m in layers):
            return "bfloat16"
        return next((halves[m.compute_dtype] for m in layers if m.compute_dtype in halves), "")
    return ""


def _quantized_engine() -> str:
    import torch

    return torch.backends.quantized.engine


def _version(library: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(library)
    except PackageNotFoundError:
        return "not installed"
