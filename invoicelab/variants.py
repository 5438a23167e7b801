"""The typed settings of each backend: a variant is one of these classes, chosen by its ``backend`` key.

Part of the configuration layer (imported by ``invoicelab.config``; imports nothing else from
invoicelab, never Ray, torch or a backend). Every variant shares a name, a batch size, resources
and fault limits; the rest belongs to its backend, so a typo or a wrong type in a backend setting
fails validation (exit 2) with the field's path. Secrets are never in a config: a variant names the
environment variable that holds its key, and the backend reads it on the worker.

Adding a backend: its settings class here (with ``backend: Literal["<name>"]``), its name in
``VARIANT_CLASSES``, its module in ``invoicelab/backends/`` and one line in ``backends.REGISTRY``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GenerationSpec(Strict):
    """Sampling settings, shared by every generative backend so that their outputs are comparable."""

    max_new_tokens: int = Field(128, ge=1, le=4096, description="Tokens generated at most per document.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass when temperature > 0.")


class ResourceSpec(Strict):
    """What each actor of a variant's pool reserves, and how many actors it has."""

    num_cpus: float = Field(1.0, gt=0, description="CPUs per actor; torch in the actor uses this many threads.")
    num_gpus: float = Field(
        0.0, ge=0, description="GPUs per actor (0 on CPU machines). Fractions (0.5) let actors share one GPU; "
        "whole numbers give each actor GPUs of its own. The model goes on the GPU Ray assigned to the actor."
    )
    actors: int = Field(1, ge=1, description="Actors in the variant's pool (each loads the model once).")
    accelerator_type: str | None = Field(
        None, description="Only place actors on nodes with this accelerator type (Ray's names: 'H100', 'L4', 'A10G')."
    )
    custom: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources per actor, e.g. {spot_gpu: 1} (nodes must declare them)."
    )

    @field_validator("custom")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if v < 0 or k in ("CPU", "GPU", "memory")}
        if bad:
            raise ValueError(f"custom resources must be >= 0 and not CPU/GPU/memory (use num_cpus/num_gpus): {bad}")
        return value


class FaultSpec(Strict):
    """How a pool deals with workers that die or hang: all bounded, so a bad document cannot hang a run."""

    max_restarts: int = Field(
        10, ge=0, le=1000, description="Times each actor is restarted after its process died (out-of-memory, segfault)."
    )
    max_retries: int = Field(
        1, ge=0, le=10,
        description="A batch whose worker died is split in halves and retried; a single document is retried this "
        "many times before it becomes an error row. The rest of its batch still succeeds.",
    )
    batch_timeout_s: float | None = Field(
        None, gt=0, description="A batch running longer than this is abandoned (its actor is restarted) and its "
        "documents become error rows. None: no limit.",
    )


class OcrSpec(Strict):
    """How a page becomes text for text-only backends."""

    engine: Literal["rapidocr", "tesseract", "pdf-text", "none"] | None = Field(
        None,
        description="rapidocr: PP-OCR models shipped in the rapidocr wheel, offline; tesseract: Debian's "
        "tesseract-ocr through pytesseract; pdf-text: a PDF's own text layer, falling back to rapidocr for pages "
        "without one; none: no text (only check that documents load). Default: none for the fake backend and "
        "backends reading page images, rapidocr otherwise.",
    )
    max_chars: int = Field(3000, ge=100, description="Truncate the page text given to a model to this many characters.")
    languages: str = Field("eng", pattern=r"^[a-z_]+(\+[a-z_]+)*$",
                           description="tesseract: language packs, joined by '+' (e.g. 'eng+deu').")


class ImageSpec(Strict):
    """How page images are given to a model that reads pixels."""

    pages: Literal["first", "all", "budget"] = Field(
        "first", description="first: the first page only; all: every page read (up to dataset.max_pages); budget: "
        "pages in order while their pixels together stay within `pixel_budget` (the first page always).",
    )
    max_side: int = Field(1024, ge=28, le=8192, description="Pages are scaled down (never up) to this longest side.")
    max_pixels: int | None = Field(
        None, ge=784, description="The model processor's own per-image pixel limit (Qwen2-VL `max_pixels`, Idefics3 "
        "`longest_edge` squared); None keeps the processor's default.",
    )
    pixel_budget: int = Field(2_000_000, ge=784, description="budget: most pixels over all pages of one document.")


Structured = Literal["json-schema", "prefix", "none"]
STRUCTURED_HELP = ("How the answer is made JSON. json-schema: decoding constrained to a JSON schema built from the "
                   "experiment's fields; prefix: the assistant turn starts with the first key and the answer stops at "
                   "its closing brace; none: free answer, parsed afterwards.")
PRECISIONS = ("fp32", "bf16", "fp16", "int8-dynamic", "bnb-int8", "bnb-nf4", "int8-weight-only", "int4-weight-only")
"""transformers backends' precisions. *-weight-only: torchao weight-only quantization (CPU and CUDA)."""
KEEP_FLOAT_PRECISIONS = ("int8-dynamic", "int8-weight-only", "int4-weight-only")
"""Precisions quantized after loading, where ``keep_float`` can leave named Linear layers in float."""


class VariantBase(Strict):
    """What every variant has: a name, a batch size, and its pool's resources and fault limits."""

    name: str = Field(..., min_length=1, description="Unique label of the variant in results.")
    batch_size: int = Field(4, ge=1, le=4096, description="Documents per model call.")
    resources: ResourceSpec = Field(default_factory=ResourceSpec, description="Per-actor resources and pool size.")
    faults: FaultSpec = Field(default_factory=FaultSpec, description="Restarts, retries and timeouts of the pool.")

    not_identity: ClassVar[frozenset[str]] = frozenset({"name", "resources", "faults"})
    """Settings that do not change a row's answer (left out of its content key)."""

    @property
    def text_engine(self) -> str:
        """The OCR engine this variant's documents go through ("none": pixels or nothing)."""
        return "none"

    @property
    def images(self) -> ImageSpec | None:
        """Page images this variant reads (None: text only)."""
        return None

    @property
    def model_source(self) -> str | None:
        """The model this variant loads (a bundled alias, a folder, a Hugging Face id), if any."""
        return getattr(self, "model", None)

    @property
    def precision_label(self) -> str:
        """The precision column of this variant's rows."""
        return ""

    def identity(self) -> dict[str, Any]:
        """The settings that change this variant's answers, as JSON-able values."""
        return self.model_dump(mode="json", exclude=set(self.not_identity))


class TextInput(Strict):
    """Mixin: a variant that reads OCR text."""

    ocr: OcrSpec = Field(default_factory=OcrSpec, description="OCR settings for text backends.")

    @property
    def text_engine(self) -> str:
        return self.ocr.engine or "rapidocr"


class FakeOptions(Strict):
    """Faults the fake backend injects, deterministic per (seed, variant, prompt, document)."""

    error_rate: float = Field(0.0, ge=0, le=1, description="Fraction of documents answered with a backend error.")
    garbage_rate: float = Field(0.0, ge=0, le=1, description="Fraction answered with text that holds no JSON.")
    wrong_rate: float | dict[str, float] = Field(
        0.0, description="Fraction with every value altered; a number, or prompt id -> number.")
    wrong_rate_by_axis: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="{axis: {level: rate}}: for a prompt generated at that level of that axis, "
        "each field's value is altered with that rate (drawn per document, prompt and field), to plant an effect "
        "on one axis of a prompt set.",
    )
    delay_s: float = Field(0.0, ge=0, description="Seconds to sleep per batch.")
    crash_on: list[str] = Field(default_factory=list, description="Doc ids whose batch raises an exception.")
    kill_on: list[str] = Field(default_factory=list, description="Doc ids whose batch SIGKILLs its worker process.")
    hang_on: list[str] = Field(default_factory=list, description="Doc ids whose batch sleeps `hang_s` seconds.")
    hang_s: float = Field(3600.0, ge=0, description="How long a hanging batch sleeps.")

    @field_validator("wrong_rate_by_axis", mode="before")
    @classmethod
    def _rates(cls, value: Any) -> Any:
        """Levels as text (YAML reads on/off and 0/3 as other types); every rate within 0..1."""
        if not isinstance(value, dict):
            return value
        out = {axis: {("on" if k else "off") if isinstance(k, bool) else str(k): r for k, r in levels.items()}
               if isinstance(levels, dict) else levels for axis, levels in value.items()}
        bad = [f"{a}.{k}" for a, levels in out.items() if isinstance(levels, dict) for k, r in levels.items()
               if not isinstance(r, (int, float)) or not 0 <= r <= 1]
        if bad:
            raise ValueError(f"rates must be numbers within 0..1: {', '.join(bad)}")
        return out


class FakeVariant(TextInput, VariantBase):
    """Echoes the ground truth (through its own channel, not the document input) and injects faults."""

    backend: Literal["fake"] = Field(..., description="fake: no model; for tests and dry runs.")
    options: FakeOptions = Field(default_factory=FakeOptions, description="Faults to inject.")

    @property
    def text_engine(self) -> str:
        return self.ocr.engine or "none"


class RulesVariant(TextInput, VariantBase):
    """The rules baseline on OCR text: regular expressions and keywords, no model."""

    backend: Literal["rules"] = Field(..., description="rules: the regex/keyword baseline.")


class LocalModel(VariantBase):
    """Mixin: a model loaded in the actor through transformers."""

    model: str = Field(..., min_length=1, description="Model source: a Hugging Face id, a local folder, a .gguf "
                       "file, or a bundled alias ('smollm2-135m-instruct', 'gemma3-270m').")
    revision: str | None = Field(
        None, description="Hugging Face models: the commit to load. Default: the commit the driver's local Hugging "
        "Face cache holds for the id, resolved once and sent to every actor so all nodes load the same weights.",
    )
    precision: Literal[PRECISIONS] = Field("fp32", description="Weights precision/quantization: " + ", ".join(PRECISIONS))
    keep_float: list[str] = Field(
        default_factory=list, description="int8-dynamic and *-weight-only: Linear layers whose name ends with one of "
        "these stay in float (e.g. [down_proj, lm_head]).",
    )
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="Decoding settings.")
    structured: Structured = Field("prefix", description=STRUCTURED_HELP)
    prompt_format: Literal["auto", "chat", "completion"] = Field(
        "auto", description="chat: the model's chat template; completion: plain text for base models without one; "
        "auto: chat when the tokenizer has a template.",
    )

    @model_validator(mode="after")
    def _keep_float_applies(self) -> LocalModel:
        """keep_float only where layers are quantized after loading (a float or bnb model would ignore it)."""
        if self.keep_float and self.precision not in KEEP_FLOAT_PRECISIONS:
            raise ValueError(f"keep_float applies to {', '.join(KEEP_FLOAT_PRECISIONS)}, not to {self.precision}")
        return self

    @property
    def precision_label(self) -> str:
        """The precision, and the layers kept in float if any (e.g. ``int8-dynamic (float: down_proj)``)."""
        return f"{self.precision} (float: {', '.join(self.keep_float)})" if self.keep_float else self.precision


class OcrLlmVariant(TextInput, LocalModel):
    """OCR text, then a text LLM through transformers."""

    backend: Literal["ocr-llm"] = Field(..., description="ocr-llm: OCR, then a text LLM (transformers).")
    fallback: Literal["rules", "none"] = Field(
        "rules",
        description="Where the model's value for a field is missing or invalid for its type, take the rules "
        "baseline's value (recorded per row in `fallback_fields`).",
    )


class VlmVariant(LocalModel):
    """Page images straight into a vision-language model (transformers)."""

    backend: Literal["transformers-vlm"] = Field(..., description="transformers-vlm: page images into a VLM.")
    image: ImageSpec = Field(default_factory=ImageSpec, description="Page images: which pages, at what resolution.")

    @property
    def images(self) -> ImageSpec | None:
        return self.image


class ServedInput(Strict):
    """Mixin: a backend that can read OCR text or page images."""

    input: Literal["text", "image"] = Field("text", description="text: OCR text in the prompt; image: page images.")
    ocr: OcrSpec = Field(default_factory=OcrSpec, description="OCR settings when input is text.")
    image: ImageSpec = Field(default_factory=ImageSpec, description="Page images when input is image.")
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="Decoding settings.")

    @property
    def text_engine(self) -> str:
        return "none" if self.input == "image" else (self.ocr.engine or "rapidocr")

    @property
    def images(self) -> ImageSpec | None:
        return self.image if self.input == "image" else None


class VllmVariant(ServedInput, VariantBase):
    """vLLM on GPUs, through Ray Data LLM: ``resources`` are what one engine replica reserves in all
    (``num_gpus`` defaults to ``tensor_parallel_size``), ``resources.actors`` the number of replicas."""

    backend: Literal["vllm"] = Field(..., description="vllm: vLLM engine (GPU), via ray.data.llm.")
    model: str = Field(..., min_length=1, description="Hugging Face id or local folder.")
    revision: str | None = Field(None, description="Hugging Face commit to load (pinned like the other backends).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="Activation/weight dtype.")
    quantization: Literal["awq", "gptq", "fp8", "bitsandbytes"] | None = Field(
        None, description="vLLM quantization method (None: the checkpoint's own, or none).")
    max_model_len: int | None = Field(None, ge=64, description="Context length (None: the model's).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Fraction of GPU memory vLLM may take.")
    max_num_seqs: int = Field(64, ge=1, description="Sequences vLLM schedules at once.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs one engine spans (kept together).")
    structured: Structured = Field("json-schema", description=STRUCTURED_HELP)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Further vLLM engine arguments.")
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="Ray runtime environment of this variant's Ray Data LLM stages (env_vars, "
        "pip, py_modules...), over the run's own environment variables.",
    )

    not_identity: ClassVar[frozenset[str]] = VariantBase.not_identity | {"runtime_env"}

    @model_validator(mode="after")
    def _engine_resources(self) -> VllmVariant:
        """One GPU (and at least one CPU) per tensor-parallel rank unless told otherwise; no rank without its GPU."""
        res, ranks = self.resources, self.tensor_parallel_size
        if "num_gpus" not in res.model_fields_set:
            res.num_gpus = float(ranks)
        if "num_cpus" not in res.model_fields_set and res.num_cpus < ranks:
            res.num_cpus = float(ranks)
        if ranks > 1 and res.num_gpus not in (0, ranks):
            raise ValueError(f"resources.num_gpus must be tensor_parallel_size ({ranks}): one GPU per rank")
        if res.num_gpus > ranks:
            raise ValueError(f"resources.num_gpus {res.num_gpus:g} > tensor_parallel_size {ranks}: GPUs no rank uses")
        if ranks > 1 and res.num_cpus < ranks:  # the engine actor takes a whole CPU inside one rank's bundle
            raise ValueError(f"resources.num_cpus must be >= tensor_parallel_size ({ranks}): one CPU per rank")
        return self

    @property
    def precision_label(self) -> str:
        return self.quantization or self.dtype


class OpenAIVariant(ServedInput, VariantBase):
    """A model already served behind an OpenAI-compatible API (vLLM, SGLang, TGI, llama.cpp, Ollama, hosted)."""

    backend: Literal["openai-http"] = Field(..., description="openai-http: an OpenAI-compatible server.")
    base_url: str = Field(..., description="The server's base URL, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(..., min_length=1, description="The model name the server knows.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key, read on the worker; the key itself "
        "never appears in the config, results, logs or actor arguments. None: no key.",
    )
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once per actor.")
    timeout_s: float = Field(60.0, gt=0, description="Seconds one request may take.")
    max_retries: int = Field(3, ge=0, le=20, description="Retries with backoff on 429, 5xx and dropped connections.")
    price_in_per_m: float = Field(0.0, ge=0, description="Price per million input tokens (for the cost column).")
    price_out_per_m: float = Field(0.0, ge=0, description="Price per million output tokens.")
    structured: Structured = Field("json-schema", description=STRUCTURED_HELP)
    if_unsupported: Literal["error", "prompt"] = Field(
        "error", description="When the server does not implement response_format: error (every row says so) or "
        "prompt (ask for JSON in the prompt and parse the free answer, recorded in backend_info).",
    )

    not_identity: ClassVar[frozenset[str]] = VariantBase.not_identity | {"api_key_env", "concurrency", "timeout_s",
                                                                         "max_retries"}

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("api_key_env is the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key")
        return value

    @property
    def precision_label(self) -> str:
        return "served"


VARIANT_CLASSES = (FakeVariant, RulesVariant, OcrLlmVariant, VlmVariant, VllmVariant, OpenAIVariant)
BACKENDS = tuple(cls.model_fields["backend"].annotation.__args__[0] for cls in VARIANT_CLASSES)
"""Backends that exist; the lazy registry in ``invoicelab.backends`` must list the same names."""


Variant = Annotated[
    Union[FakeVariant, RulesVariant, OcrLlmVariant, VlmVariant, VllmVariant, OpenAIVariant],
    Field(discriminator="backend"),
]
"""A variant of any backend, told apart by its ``backend`` key."""
