"""How much memory a local-model variant needs, estimated from its model's config.json before loading it.

A pure module of the configuration layer: it reads a ``config.json`` with ``json`` and does
arithmetic; it never imports torch, transformers, Ray or a backend, and never loads a model.
Resolving a variant's model to a folder is the backends' job (``invoicelab.backends.placement``).

The estimate has parts: the weights as each precision really stores them (see
``invoicelab.backends.precision``: which layers are quantized, which stay float, whether the tied
embedding / lm_head pair stays shared), the KV cache for the batch and lengths, the activations of
the prefill (the largest step), the vision encoder of a vision-language model and its activations,
a runtime overhead, and the float checkpoint held while loading (resident beside quantized weights).
Library-specific constants are calibrated on CPU and say where their numbers come from.
``benchmarks/memory_estimate.py`` checks it against the measured footprint of every CPU precision
(benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GB = 1e9
AFTER_LOAD = ("int8-dynamic", "int8-weight-only", "int4-weight-only")
"""Precisions quantized after a float32 (CPU) load: their load passes through the float model."""
FLOAT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
CONFIG_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
QUANT_BYTES = {  # bytes per quantized weight, scales included
    "int8-dynamic": 1.0,  # fbgemm packed int8, one scale per tensor
    "bnb-int8": 1.0,  # int8 plus one float32 scale per row (counted per row below)
    "bnb-nf4": 0.5 + 4 / 64,  # 4-bit values, a float32 absmax per block of 64
    "int8-weight-only": 1.0,  # int8 plus a float32 scale per row
    "int4-weight-only": 1.0 + 5 / 32,  # 4-bit values held one per int8 byte, float32 scale + int8 zero per 32
}
ROW_SCALE = ("bnb-int8", "int8-weight-only")
RUNTIME_OVERHEAD_BYTES = {"cpu": 280e6, "cuda": 500e6}
"""What a loaded model's process holds beyond weights, cache and activations: tokenizer, model objects,
generation state, oneDNN/MKL workspaces, allocator slack. cpu: calibrated on the 2-core machine of
benchmarks/RESULTS.md with fp32 at batch 1, a 32-token prompt and 8 new tokens (823 MB measured minus
538 MB of weights and 4 MB of cache and activations), a setting apart from the one the benchmark
checks. cuda: an assumption, not measured here (CUDA context and cuBLAS workspace)."""
BNB_BYTES = 160e6
"""bitsandbytes on CPU: its import and kernels, calibrated like the overhead (bnb-int8 at batch 1, a
32-token prompt: 1203 MB measured minus weights, checkpoint, overhead, cache and activations)."""
BNB_DECODE_BYTES_PER_VOCAB = 15.7
"""bitsandbytes on CPU also grows by about 15.7 bytes x vocabulary size per row and generated token (as if
every step's float32 logits were kept several times over; not traced further). Fitted to bnb-int8 at
batch 8 and 400-token prompts with 64 and with 32 new tokens (1857 and 1669 MB measured); bnb-nf4, a
different kernel, is the check (benchmarks/RESULTS.md)."""
TORCHAO_LOAD_BYTES = 370e6
"""torchao on CPU: memory taken while quantizing (its import, torch's compile machinery, temporaries),
reused afterwards by generation. Calibrated on int8-weight-only at batch 1, a 32-token prompt (1444 MB
measured minus weights, checkpoint and overhead)."""


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder (and its vision tower) that memory depends on, from config.json."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    vision_params: int = 0
    vision_tokens: int = 0
    vision_hidden: int = 0
    vision_intermediate: int = 0
    vision_heads: int = 0

    def linear_params(self) -> dict[str, int]:
        """Weights of each kind of Linear layer over all decoder layers, and the lm_head's."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        q = self.heads * self.head_dim
        per = {"q_proj": h * q, "k_proj": h * kv, "v_proj": h * kv, "o_proj": q * h,
               "gate_proj": h * self.intermediate, "up_proj": h * self.intermediate,
               "down_proj": self.intermediate * h}
        out = {name: n * self.layers for name, n in per.items()}
        out["lm_head"] = self.vocab * h
        return out

    def rows(self) -> int:
        """Output rows over all decoder Linear layers (for per-row scales)."""
        kv = self.kv_heads * self.head_dim
        return self.layers * (2 * self.heads * self.head_dim + 2 * kv + self.hidden + 2 * self.intermediate)

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def other_params(self) -> int:
        """Norms (two per layer and a final one)."""
        return (2 * self.layers + 1) * self.hidden


@dataclass(frozen=True)
class Estimate:
    """Bytes a variant's model process needs, by part.

    ``checkpoint`` is the float checkpoint that stays resident beside quantized weights (precisions
    quantized after loading, and bitsandbytes, on CPU: measured, the resident set does not drop after
    quantizing; the file is memory-mapped). ``load_transient`` is memory taken only while loading
    (a float checkpoint converted to another dtype, torchao's quantization) and reused by generation,
    so the process peaks at the larger of it and the cache plus activations.
    """

    precision: str
    weights: float
    kv_cache: float
    activations: float
    vision: float
    overhead: float
    checkpoint: float = 0.0
    load_transient: float = 0.0
    offloaded: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        running = max(self.load_transient, self.kv_cache + self.activations)
        return self.weights + self.vision + self.overhead + self.checkpoint + running

    def render(self) -> str:
        """The estimate as plain text, one part per line, in GB."""
        d = self.detail
        lines = [f"memory estimate, {self.precision}, batch {d.get('batch')}, {d.get('prompt_tokens')} + "
                 f"{d.get('new_tokens')} tokens, {d.get('device')}:",
                 f"  weights      {self.weights / GB:7.3f} GB",
                 f"  KV cache     {self.kv_cache / GB:7.3f} GB",
                 f"  activations  {self.activations / GB:7.3f} GB",
                 f"  vision       {self.vision / GB:7.3f} GB",
                 f"  overhead     {self.overhead / GB:7.3f} GB"]
        if self.checkpoint:
            lines.append(f"  checkpoint   {self.checkpoint / GB:7.3f} GB (the float checkpoint, kept mapped)")
        if self.load_transient:
            lines.append(f"  load only    {self.load_transient / GB:7.3f} GB (while loading; reused afterwards)")
        if self.offloaded:
            lines.append(f"  offloaded    {self.offloaded / GB:7.3f} GB of weights (not counted)")
        lines.append(f"  total        {self.total / GB:7.3f} GB")
        return "\n".join(lines)


def read_config(folder: str | Path) -> dict[str, Any]:
    """A model folder's config.json as a dict.

    Raises:
        OSError: the folder has no readable config.json.
    """
    return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))


def shape(config: dict[str, Any]) -> Shape:
    """The sizes of the model a config describes (the text model of a vision-language config).

    Raises:
        KeyError: the config lacks a size the estimate needs (not a decoder transformer).
    """
    text = config.get("text_config") or config
    hidden, heads = text["hidden_size"], text["num_attention_heads"]
    vision = config.get("vision_config") or {}
    return Shape(
        vocab=text["vocab_size"], hidden=hidden, layers=text["num_hidden_layers"], heads=heads,
        kv_heads=text.get("num_key_value_heads") or heads, head_dim=text.get("head_dim") or hidden // heads,
        intermediate=text["intermediate_size"],
        tied=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", True))),
        **_vision(vision, hidden) if vision else {},
    )


def _vision(vision: dict[str, Any], text_hidden: int) -> dict[str, int]:
    """Vision tower sizes: its parameters (encoder layers, patch embedding, projector) and tokens per image."""
    h = vision.get("hidden_size") or vision.get("embed_dim") or 768
    inter = vision.get("intermediate_size") or 4 * h
    layers = vision.get("num_hidden_layers") or vision.get("depth") or 12
    patch = vision.get("patch_size") or 14
    image = vision.get("image_size") or 448
    channels = vision.get("num_channels") or vision.get("in_channels") or 3
    tokens = (image // patch) ** 2
    params = layers * (4 * h * h + 2 * h * inter) + channels * patch * patch * h + tokens * h + h * text_hidden * 4
    return {"vision_params": params, "vision_tokens": tokens, "vision_hidden": h, "vision_intermediate": inter,
            "vision_heads": vision.get("num_attention_heads") or vision.get("num_heads") or max(1, h // 64)}


def weight_bytes(s: Shape, precision: str, device: str = "cpu", keep_float: tuple[str, ...] = ()) -> float:
    """Bytes of the decoder's weights as ``precision`` stores them on ``device``.

    Floats: every parameter at the dtype's size. bitsandbytes: the decoder's Linear layers quantized, the
    embedding, norms and lm_head (shared with the embedding when tied) in float32. Quantized after loading
    (torch dynamic int8, torchao): every Linear layer not named in ``keep_float`` quantized, lm_head
    included, which unties it from the embedding (the embedding stays float).
    """
    linear = s.linear_params()
    if precision in FLOAT_BYTES:
        params = s.embed_params + s.other_params + sum(linear.values()) - (linear["lm_head"] if s.tied else 0)
        return params * FLOAT_BYTES[precision]
    base = 4 if device == "cpu" or not precision.endswith("weight-only") else 2
    if precision.startswith("bnb"):
        quantized = {k: v for k, v in linear.items() if k != "lm_head"}
        floats = s.embed_params + s.other_params + (0 if s.tied else linear["lm_head"])
    else:
        quantized = {k: v for k, v in linear.items() if k not in keep_float}
        floats = s.embed_params + s.other_params + sum(v for k, v in linear.items() if k in keep_float)
    scales = s.rows() * 4 if precision in ROW_SCALE else 0
    return floats * base + sum(quantized.values()) * QUANT_BYTES[precision] + scales


def act_bytes(precision: str, device: str = "cpu") -> int:
    """Bytes per activation / cached value: the float dtype the model computes in."""
    if precision in FLOAT_BYTES:
        return FLOAT_BYTES[precision]
    return 2 if device != "cpu" and precision.endswith("weight-only") else 4


def kv_cache_bytes(s: Shape, batch: int, tokens: int, dtype_bytes: int) -> float:
    """Keys and values of every layer for ``batch`` rows of ``tokens`` positions."""
    return 2.0 * s.layers * s.kv_heads * s.head_dim * batch * tokens * dtype_bytes


def activation_bytes(s: Shape, batch: int, prompt_tokens: int, dtype_bytes: int) -> float:
    """The prefill's largest live set: one layer's MLP (gate, up, their product, the activation) or its
    attention (queries, keys and values repeated over the heads, the score matrix), beside the hidden
    states; and the last position's logits in float32, a few copies (generate's processors)."""
    tokens = batch * prompt_tokens
    mlp = 4 * tokens * s.intermediate
    attention = 3 * tokens * s.heads * s.head_dim + batch * s.heads * prompt_tokens * prompt_tokens
    hidden = 3 * tokens * s.hidden
    return (max(mlp, attention) + hidden) * dtype_bytes + 4 * batch * s.vocab * 4


def vision_bytes(s: Shape, precision: str, batch: int, images: int, device: str = "cpu") -> float:
    """The vision tower's weights (quantized like the decoder's Linear layers) and one batch of its activations."""
    if not s.vision_params:
        return 0.0
    per = FLOAT_BYTES.get(precision) or QUANT_BYTES[precision]
    tokens = batch * images * s.vision_tokens
    act = (3 * tokens * s.vision_intermediate + batch * images * s.vision_heads * s.vision_tokens ** 2)
    return s.vision_params * per + act * act_bytes(precision, device)


def estimate(config: dict[str, Any], precision: str, batch: int, prompt_tokens: int, new_tokens: int,
             device: str = "cpu", keep_float: tuple[str, ...] | list[str] = (), images: int = 0,
             offload_gb: float | None = None) -> Estimate:
    """Estimate the memory one model process needs to generate a batch.

    Args:
        config: The model's config.json (see ``read_config``).
        precision: One of ``invoicelab.variants.PRECISIONS``.
        batch: Documents in one model call (the micro-batch).
        prompt_tokens: Tokens of the longest prompt in the batch (image tokens excluded).
        new_tokens: Most tokens generated per document.
        device: ``"cpu"`` or ``"cuda"``.
        keep_float: Linear layer name endings kept in float (after-load precisions).
        images: Page images per document (vision-language models; 0 for text models).
        offload_gb: With offloading, the most GB of weights kept on the device; the rest is not counted
            but one decoder layer's worth is (it is brought in to run).

    Returns:
        The ``Estimate``, its parts in bytes.
    """
    s = shape(config)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    weights = weight_bytes(s, precision, kind, tuple(keep_float))
    offloaded = 0.0
    if offload_gb is not None and weights > offload_gb * GB:
        offloaded = weights - offload_gb * GB
        weights = offload_gb * GB + weights / max(1, s.layers)
    dtype = act_bytes(precision, kind)
    prompt = prompt_tokens + images * s.vision_tokens
    checkpoint, transient = load_parts(s, config, precision, kind, offloaded > 0)
    activations = activation_bytes(s, batch, prompt, dtype)
    if precision.startswith("bnb") and kind == "cpu":
        activations += BNB_DECODE_BYTES_PER_VOCAB * s.vocab * batch * new_tokens
    return Estimate(
        precision=precision, weights=weights, kv_cache=kv_cache_bytes(s, batch, prompt + new_tokens, dtype),
        activations=activations, vision=vision_bytes(s, precision, batch, images, kind),
        overhead=RUNTIME_OVERHEAD_BYTES[kind] + (BNB_BYTES if precision.startswith("bnb") and kind == "cpu" else 0),
        checkpoint=checkpoint, load_transient=transient, offloaded=offloaded,
        detail={"batch": batch, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "device": kind},
    )


def load_parts(s: Shape, config: dict[str, Any], precision: str, device: str,
               offloaded: bool = False) -> tuple[float, float]:
    """(checkpoint kept resident, memory taken only while loading), in bytes; see ``Estimate``.

    The checkpoint's dtype is the config's ``dtype`` (``torch_dtype`` in older configs; float32 when absent).
    A float precision of that dtype uses the checkpoint's tensors themselves; another float dtype converts
    them (read through once); the quantized precisions on CPU keep the float checkpoint mapped, and
    torchao's also takes ``TORCHAO_LOAD_BYTES`` while quantizing. On a GPU the checkpoint is read
    through host memory, not the device's.
    """
    if device != "cpu" or offloaded:
        return 0.0, 0.0
    text = config.get("text_config") or {}
    dtype = config.get("dtype") or config.get("torch_dtype") or text.get("dtype") or "float32"
    stored = weight_bytes(s, "fp32") / 4 * CONFIG_DTYPE_BYTES.get(str(dtype), 4)
    if precision in FLOAT_BYTES:
        return 0.0, (0.0 if weight_bytes(s, precision) == stored else stored)
    float_load = max(stored, weight_bytes(s, "fp32")) if precision in AFTER_LOAD else stored
    return float_load, (TORCHAO_LOAD_BYTES if precision.endswith("weight-only") else 0.0)
