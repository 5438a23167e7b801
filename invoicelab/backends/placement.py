"""Whether each local-model variant fits the memory it may use, checked in the driver before any model loads.

For every ``ocr-llm`` and ``transformers-vlm`` variant, ``memory_problems`` estimates the memory of one
model process at the variant's micro-batch (``invoicelab.memory``, from the model's config.json found
on this machine without downloading anything) and compares it with the variant's limit:
``resources.memory_gb`` when set, else the device's memory (``Limits``: the driver machine's RAM shared
by the variant's actors that fit on one node, or the memory of one GPU). A variant that cannot fit is
named with the estimate, the limit and what would fit (a lower precision, fewer actors, a smaller
micro-batch, offloading). This module reads files and imports ``psutil`` (and torch only to read a GPU's
memory where a GPU variant asks); it never imports Ray and never loads a model.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoicelab.memory import GB, Estimate, estimate, read_config
from invoicelab.variants import KEEP_FLOAT_PRECISIONS

log = logging.getLogger(__name__)

LOCAL_BACKENDS = ("ocr-llm", "transformers-vlm")
CHARS_PER_TOKEN = 3.0
"""Assumed characters per token of OCR'd invoice text (digits, codes and short words tokenize densely):
an ocr-llm prompt's document part is ``ocr.max_chars / CHARS_PER_TOKEN`` tokens at most."""
PROMPT_TOKENS = 300
"""Assumed tokens of a prompt beside the document: instructions, field list, chat template, answer prefix."""
ORDER = ("fp32", "bf16", "int8-weight-only", "int8-dynamic", "bnb-int8", "int4-weight-only", "bnb-nf4")
"""Precisions from the most to the least accurate where nothing was measured (fp16 is left out: on
the models here it is no more accurate than bf16, and overflows more)."""


@dataclass(frozen=True)
class Limits:
    """The memory a node offers, where it was read from.

    Attributes:
        cpu_bytes: A node's total RAM.
        cpus: A node's CPUs (how many of a variant's actors share the node's RAM).
        gpu_bytes: One GPU's memory; None where no GPU was seen (the GPU check is then skipped).
        source: Where the numbers come from, for messages.
    """

    cpu_bytes: float
    cpus: int
    gpu_bytes: float | None = None
    source: str = "this machine"


def local_limits(need_gpu: bool = False) -> Limits:
    """This machine's RAM and CPUs (psutil), and GPU 0's memory through torch.cuda when ``need_gpu``
    and the driver sees a GPU (a driver without one cannot tell the workers' GPUs: None)."""
    import psutil

    gpu = None
    if need_gpu and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            gpu = float(torch.cuda.get_device_properties(0).total_memory)
    return Limits(float(psutil.virtual_memory().total), os.cpu_count() or 1, gpu, "the driver's machine")


def model_config(source: str, revision: str | None = None) -> dict[str, Any] | None:
    """The config.json of a variant's model on this machine (None when only a download could get it).

    A bundled alias or a ``.gguf`` file is converted once if it was not (as the actor would do).
    """
    from invoicelab.backends.models import BUNDLED, ModelSourceError, resolve_model

    path = Path(source).expanduser()
    try:
        if source in BUNDLED or path.is_dir() or (path.is_file() and path.suffix == ".gguf"):
            return read_config(resolve_model(source))
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source, "config.json", revision=revision)
        return read_config(Path(found).parent) if isinstance(found, str) else None
    except (ModelSourceError, OSError, ValueError, ImportError) as err:
        log.info("no config.json for %s on this machine (%s)", source, err)
        return None


def runnable(device: str) -> list[str]:
    """Precisions of ``ORDER`` this kind of device can load: bnb needs bitsandbytes, the weight-only
    ones torchao, int8-dynamic a CPU."""
    have = {name: importlib.util.find_spec(name) is not None for name in ("bitsandbytes", "torchao")}
    out = []
    for p in ORDER:
        if (p.startswith("bnb") and not have["bitsandbytes"]) or (p.endswith("weight-only") and not have["torchao"]):
            continue
        if p == "int8-dynamic" and device != "cpu":
            continue
        out.append(p)
    return out


def device_of(variant: Any) -> str:
    return "cuda" if variant.resources.num_gpus > 0 else "cpu"


def prompt_tokens(variant: Any) -> int:
    """The longest prompt assumed for a variant (image tokens are added by the estimate)."""
    if variant.backend == "ocr-llm":
        return PROMPT_TOKENS + int(variant.ocr.max_chars / CHARS_PER_TOKEN)
    return PROMPT_TOKENS


def images_of(variant: Any, max_pages: int) -> int:
    return 0 if variant.backend != "transformers-vlm" else (1 if variant.image.pages == "first" else max_pages)


def estimate_variant(variant: Any, config: dict[str, Any], precision: str | None = None, micro_batch: int | None = None,
                     max_pages: int = 1, offload_gb: float | None = None) -> Estimate:
    """The estimate of one of ``variant``'s model processes (its precision, micro-batch and offload unless given)."""
    precision = precision or variant.precision
    keep = tuple(variant.keep_float) if precision in KEEP_FLOAT_PRECISIONS else ()
    if offload_gb is None and variant.offload is not None:
        offload_gb = variant.offload.device_gb
    return estimate(config, precision, micro_batch or variant.micro_batch, prompt_tokens(variant),
                    variant.generation.max_new_tokens, device_of(variant), keep, images_of(variant, max_pages),
                    offload_gb)


def limit_of(variant: Any, limits: Limits) -> tuple[float | None, str]:
    """The bytes one actor of ``variant`` may use, and where the figure comes from (None: unknown)."""
    res = variant.resources
    if res.memory_gb is not None:
        return res.memory_gb * 2**30, f"resources.memory_gb {res.memory_gb:g}"  # GiB, as the cap and Ray count it
    if device_of(variant) == "cuda":
        if limits.gpu_bytes is None:
            return None, "no GPU seen by the driver"
        share = max(1.0, 1.0 / res.num_gpus) if res.num_gpus < 1 else 1.0
        return limits.gpu_bytes / share, f"one GPU's {limits.gpu_bytes / GB:.1f} GB" + (
            f" shared by {share:g} actors" if share > 1 else "") + f" ({limits.source})"
    per_node = _actors_per_node(variant, limits)
    return limits.cpu_bytes / per_node, (f"{limits.cpu_bytes / GB:.1f} GB RAM of {limits.source} shared by "
                                         f"{per_node} actor{'s' if per_node > 1 else ''} per node")


def _actors_per_node(variant: Any, limits: Limits) -> int:
    res = variant.resources
    return max(1, min(res.actors, int(limits.cpus // res.num_cpus) or 1))


def memory_problems(exp: Any, limits: Limits | None = None) -> list[str]:
    """Local-model variants whose estimated memory exceeds what they may use, each with what would fit.

    Args:
        exp: The experiment (precisions already resolved: ``auto`` is skipped).
        limits: The node's memory (default ``local_limits``).

    Returns:
        One message per variant that cannot fit (empty: all fit, or could not be estimated, which is logged).
    """
    local = [v for v in exp.variants if v.backend in LOCAL_BACKENDS and v.precision != "auto"]
    if not local:
        return []
    limits = limits or local_limits(any(device_of(v) == "cuda" for v in local))
    problems = []
    for v in local:
        if v.offload is not None and v.precision not in ("fp32", "bf16", "fp16"):
            problems.append(f"variant {v.name!r}: offload applies to fp32, bf16, fp16, not to {v.precision} "
                            "(a precision quantized after loading needs every weight in memory)")
            continue
        limit, source = limit_of(v, limits)
        config = model_config(v.model, v.revision)
        if limit is None or config is None:
            log.info("memory check skipped for variant %r: %s", v.name,
                     source if limit is None else "its model's config.json is not on this machine")
            continue
        est = estimate_variant(v, config, max_pages=exp.dataset.max_pages)
        if est.total > limit:
            problems.append(refusal(v, est, limit, source, config, limits, exp.dataset.max_pages))
    return problems


def refusal(v: Any, est: Estimate, limit: float, source: str, config: dict[str, Any], limits: Limits,
            max_pages: int) -> str:
    """The message for a variant that cannot fit: estimate, limit, and each way that would fit."""
    fits = []
    for p in [p for p in runnable(device_of(v)) if p != v.precision]:
        other = estimate_variant(v, config, precision=p, max_pages=max_pages)
        if other.total <= limit:
            fits.append(f"{p} ({other.total / GB:.2f} GB)")
    ways = [f"precision {' or '.join(fits)}"] if fits else []
    if v.resources.memory_gb is None and device_of(v) == "cpu":
        actors = int(limits.cpu_bytes // est.total)
        if actors >= 1:
            ways.append(f"resources.actors {actors} or fewer ({est.total / GB:.2f} GB each)")
    for mb in (v.micro_batch // 2 ** k for k in range(1, 12)):
        if mb >= 1 and estimate_variant(v, config, micro_batch=mb, max_pages=max_pages).total <= limit:
            ways.append(f"batching.micro_batch {mb}")
            break
    layer = est.weights / max(1, config.get("num_hidden_layers") or 1)  # one layer is brought in to run
    device_gb = (limit - (est.total - est.weights) - layer) / GB * 0.95
    if v.precision in ("fp32", "bf16", "fp16") and device_gb > 0 and v.offload is None:
        off = estimate_variant(v, config, max_pages=max_pages, offload_gb=device_gb)
        if off.total <= limit:
            ways.append(f"offload: {{device_gb: {device_gb:.2f}}} (the rest of the weights on disk; slower)")
    what = "; ".join(ways) if ways else "nothing at this model size: a smaller model or a larger machine"
    return (f"variant {v.name!r} ({v.model}, {v.precision}, micro-batch {v.micro_batch}, about {prompt_tokens(v)} "
            f"prompt + {v.generation.max_new_tokens} new tokens) needs about {est.total / GB:.2f} GB "
            f"(weights {est.weights / GB:.2f}, KV cache {est.kv_cache / GB:.2f}, activations "
            f"{est.activations / GB:.2f}, vision {est.vision / GB:.2f}, overhead {est.overhead / GB:.2f}, float "
            f"checkpoint {est.checkpoint / GB:.2f}, load-time {est.load_transient / GB:.2f}) but may use "
            f"{limit / GB:.2f} GB ({source}). What would fit: {what}")

