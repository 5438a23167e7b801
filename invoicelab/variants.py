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

from pydantic import Field, field_validator, model_validator

from invoicelab.variant_parts import (  # noqa: F401 - re-exported
    BatchingSpec,
    FaultSpec,
    GenerationSpec,
    ImageSpec,
    OcrSpec,
    OffloadSpec,
    ResourceSpec,
    Strict,
)


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
    batch_size: int | Literal["auto"] = Field(
        4, description="Documents handed to one actor at a time (the Ray batch; a whole number from 1 to 4096). "
        "Model calls take `batching.micro_batch` of them at a time. auto: the batch sizes of the profile tuned for "
        "this model, precision, backend and hardware (`invoicelab tune`), probed at the start of the run when none "
        "is saved yet.",
    )
    batching: BatchingSpec = Field(default_factory=BatchingSpec,
                                   description="How a batch is cut into model calls (micro-batches).")
    resources: ResourceSpec = Field(default_factory=ResourceSpec, description="Per-actor resources and pool size.")
    faults: FaultSpec = Field(default_factory=FaultSpec, description="Restarts, retries and timeouts of the pool.")

    not_identity: ClassVar[frozenset[str]] = frozenset({"name", "resources", "faults", "batch_size", "batching"})
    """Settings left out of a row's content key: they do not change the answer, or (batching) change it only
    through the batch a document shared, which the row records (``micro_batch``) and which out-of-memory
    halving may change within a run."""

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_range(cls, value: Any) -> Any:
        """'auto', or a whole number from 1 to 4096 (one message, not one per member of the union)."""
        if value == "auto":
            return value
        number = int(value) if isinstance(value, str) and value.strip().isdigit() else value
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 4096:
            raise ValueError(f"must be 'auto' or a whole number from 1 to 4096, got {value!r}")
        return number

    @property
    def micro_batch(self) -> int:
        """Most documents in one model call (``batching.micro_batch``, else the batch size; 1 while auto)."""
        if self.batching.micro_batch is not None:
            return self.batching.micro_batch
        return self.batch_size if isinstance(self.batch_size, int) else 1

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
    delay_s: float = Field(0.0, ge=0, description="Seconds to sleep per model call.")
    delay_per_doc_s: float = Field(0.0, ge=0, description="Further seconds per document of a model call (with "
                                   "delay_s: throughput that grows with the micro-batch and levels off).")
    memory_per_doc_mb: float = Field(0.0, ge=0, description="Memory really allocated (and touched) per document "
                                     "during a model call, in MB, so that peak memory grows with the micro-batch.")
    oom_above: int | None = Field(None, ge=1, description="A model call of more documents than this fails as "
                                  "out-of-memory (MemoryError), as a model past its device's memory would.")
    oom_on: list[str] = Field(default_factory=list, description="Doc ids whose model call fails as out-of-memory "
                              "whatever its size (even alone).")
    crash_on: list[str] = Field(default_factory=list, description="Doc ids whose model call raises an exception.")
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
    precision: Literal[(*PRECISIONS, "auto")] = Field(
        "fp32", description="Weights precision/quantization: " + ", ".join(PRECISIONS) + ". auto: the most accurate "
        "precision whose estimated memory fits the device (measured accuracy from the history where it exists, "
        "else the order fp32, bf16, int8-weight-only, int8-dynamic, bnb-int8, int4-weight-only, bnb-nf4).",
    )
    offload: OffloadSpec | None = Field(
        None, description="Place weights past `device_gb` in CPU memory and then on disk (accelerate's device_map "
        "with max_memory), for models larger than the device; slower, and the speed cost shows in the results.",
    )
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

    not_identity: ClassVar[frozenset[str]] = VariantBase.not_identity | {"offload"}

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
    max_num_seqs: int | Literal["auto"] = Field(
        64, description="Sequences vLLM schedules at once (a whole number >= 1). auto: tuned with the Ray Data batch "
        "(`invoicelab tune`).")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs one engine spans (kept together).")
    structured: Structured = Field("json-schema", description=STRUCTURED_HELP)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Further vLLM engine arguments.")
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="Ray runtime environment of this variant's Ray Data LLM stages (env_vars, "
        "pip, py_modules...), over the run's own environment variables.",
    )

    not_identity: ClassVar[frozenset[str]] = VariantBase.not_identity | {"runtime_env", "max_num_seqs"}

    @field_validator("max_num_seqs", mode="before")
    @classmethod
    def _seqs(cls, value: Any) -> Any:
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"must be 'auto' or a whole number >= 1, got {value!r}")
        return value

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
