"""Experiment configuration: the pydantic schema, YAML loading and ``--set`` overrides.

An experiment is a dataset x model variants x prompt variants x fields to extract. This module
is the left end of the import graph: it imports nothing else from invoicelab, never imports Ray,
torch or a backend, and never touches the data or the models. It only validates.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

BACKENDS = ("fake", "ocr-llm", "rules")
"""Backends that exist; the lazy registry in ``invoicelab.backends`` must list the same names."""


class ConfigError(ValueError):
    """A configuration that cannot run. The message names the field path and what is allowed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ExperimentKind(str, Enum):
    extraction = "extraction"
    quantization = "quantization"
    prompt = "prompt"
    model = "model"


class FieldType(str, Enum):
    amount = "amount"
    date = "date"
    id = "id"
    text = "text"
    currency = "currency"


class FieldSpec(Strict):
    """One field to extract and how a prediction is compared with the ground truth."""

    type: FieldType = Field(FieldType.text, description="Value type; selects normalisation and comparison.")
    description: str = Field("", description="What the field is, shown to the model by prompts that describe fields.")
    example: str | None = Field(None, description="An example value, shown by prompts that give one.")
    gt_key: str | None = Field(
        None, description="Key of this field in the dataset's gt.jsonl `fields` (default: the field's own name)."
    )
    match: Literal["exact", "normalized", "fuzzy"] = Field(
        "normalized",
        description="exact: strings equal after trimming; normalized: type-aware normalisation then equality; "
        "fuzzy: normalised text similarity >= threshold.",
    )
    threshold: float = Field(0.8, ge=0.0, le=1.0, description="Similarity needed for a fuzzy match (0..1).")
    day_first: bool = Field(
        False, description="Dates: read ambiguous numeric dates day-first (03/04/2020 = 3 April), as on SROIE receipts."
    )
    tolerance: float = Field(0.005, ge=0.0, description="Amounts: absolute difference still counted as equal.")


class SyntheticSpec(Strict):
    """Knobs of the synthetic invoice generator (``invoicelab generate``)."""

    dpi: int = Field(100, ge=50, le=300, description="Render resolution of an A4 page, dots per inch.")
    rotation: float = Field(0.0, ge=0.0, le=15.0, description="Maximum absolute rotation in degrees.")
    blur: float = Field(0.0, ge=0.0, le=5.0, description="Maximum Gaussian blur radius in pixels.")
    noise: float = Field(0.0, ge=0.0, le=0.5, description="Maximum pixel noise amplitude, as a fraction of 255.")
    jpeg_quality: int = Field(90, ge=5, le=100, description="JPEG quality of the written images.")


class DatasetSpec(Strict):
    """Where documents and ground truth come from."""

    source: Literal["synthetic", "folder"] = Field(
        "folder", description="synthetic: generate invoices (into `path`, or a cache folder); folder: read `path`."
    )
    path: str | None = Field(
        None, description="Folder holding gt.jsonl and the documents it names (relative paths: from the working directory)."
    )
    n: int = Field(16, ge=1, description="synthetic: how many invoices to generate.")
    limit: int | None = Field(None, ge=1, description="Use only the first N documents of gt.jsonl.")
    seed: int | None = Field(None, description="synthetic: generator seed (default: the experiment seed).")
    synthetic: SyntheticSpec = Field(default_factory=SyntheticSpec, description="synthetic: perturbation knobs.")
    pdf_dpi: int = Field(150, ge=36, le=600, description="Resolution at which PDF pages are rendered.")
    max_pages: int = Field(2, ge=1, le=50, description="Read at most this many pages of a PDF.")
    max_pixels: int = Field(
        40_000_000, ge=10_000, description="Refuse images with more pixels than this (decompression-bomb guard)."
    )

    @model_validator(mode="after")
    def _folder_needs_path(self) -> DatasetSpec:
        if self.source == "folder" and not self.path:
            raise ValueError("dataset.source 'folder' needs dataset.path (a folder with gt.jsonl)")
        return self


class OcrSpec(Strict):
    """How a page becomes text for text-only backends."""

    engine: Literal["rapidocr", "pdf-text", "none"] | None = Field(
        None,
        description="rapidocr: PP-OCR models shipped in the rapidocr wheel, offline; pdf-text: a PDF's own text "
        "layer, falling back to rapidocr for pages without one; none: no text (only check that documents load). "
        "Default: none for the fake backend, rapidocr otherwise.",
    )
    max_chars: int = Field(3000, ge=100, description="Truncate the page text given to a model to this many characters.")


class GenerationSpec(Strict):
    """Decoding settings of a generative backend."""

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


PRECISIONS = ("fp32", "bf16", "fp16", "int8-dynamic", "bnb-int8", "bnb-nf4")


class VariantSpec(Strict):
    """One model (or quantization) variant: an actor pool that holds one loaded model."""

    name: str = Field(..., min_length=1, description="Unique label of the variant in results.")
    backend: str = Field(..., description=f"Backend: one of {', '.join(BACKENDS)}.")
    model: str | None = Field(
        None,
        description="Model source: a Hugging Face id, a local folder, or the bundled 'smollm2-135m-instruct'.",
    )
    revision: str | None = Field(
        None, description="Hugging Face models: the commit to load. Default: the commit the driver's local Hugging "
        "Face cache holds for the id, resolved once and sent to every actor so all nodes load the same weights.",
    )
    precision: str = Field("fp32", description=f"Weights precision/quantization: one of {', '.join(PRECISIONS)}.")
    batch_size: int = Field(4, ge=1, le=4096, description="Documents per model call.")
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="Decoding settings.")
    resources: ResourceSpec = Field(default_factory=ResourceSpec, description="Per-actor resources and pool size.")
    faults: FaultSpec = Field(default_factory=FaultSpec, description="Restarts, retries and timeouts of the pool.")
    ocr: OcrSpec = Field(default_factory=OcrSpec, description="OCR settings for text backends.")
    fallback: Literal["rules", "none"] = Field(
        "rules",
        description="ocr-llm: where the model's value for a field is missing or invalid for its type, take the "
        "rules baseline's value (recorded per row in `fallback_fields`).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Backend-specific options (fake: error_rate, garbage_rate, delay_s)."
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r}; available: {', '.join(BACKENDS)}")
        return value

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        if value not in PRECISIONS:
            raise ValueError(f"unknown precision {value!r}; available: {', '.join(PRECISIONS)}")
        return value

    @model_validator(mode="after")
    def _llm_needs_model(self) -> VariantSpec:
        if self.backend == "ocr-llm" and not self.model:
            raise ValueError("backend 'ocr-llm' needs `model` (a Hugging Face id, a path or 'smollm2-135m-instruct')")
        return self

    @property
    def text_engine(self) -> str:
        """The OCR engine this variant's documents go through."""
        return self.ocr.engine or ("none" if self.backend == "fake" else "rapidocr")


class RaySpec(Strict):
    """Where the experiment runs."""

    address: str | None = Field(
        None, description="Ray cluster address ('auto' to join a running one); empty starts a local cluster."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local cluster started for this run.")


class Experiment(Strict):
    """A whole experiment: dataset x variants x prompts x fields."""

    name: str = Field(..., min_length=1, description="Experiment name; also the default output folder name.")
    kind: ExperimentKind = Field(
        ExperimentKind.extraction, description="extraction, quantization, prompt or model comparison: the report view."
    )
    seed: int = Field(0, description="Seed for generation, sampling and resampling statistics.")
    output_dir: str = Field("runs/{name}", description="Where results.parquet and summary.json go ({name} expands).")
    dataset: DatasetSpec = Field(..., description="Documents and ground truth.")
    fields: dict[str, FieldSpec] = Field(..., min_length=1, description="Fields to extract, by output name.")
    prompts: list[str] = Field(
        default_factory=lambda: ["terse-json"], min_length=1, description="Prompt ids from the prompts folder."
    )
    prompts_dir: str | None = Field(None, description="Folder of prompt templates (default: the repo's prompts/).")
    variants: list[VariantSpec] = Field(..., min_length=1, description="Model variants to compare.")
    ray: RaySpec = Field(default_factory=RaySpec, description="Cluster settings.")
    page_stage: ResourceSpec = Field(
        default_factory=ResourceSpec, description="Resources of the page-loading/OCR stage's actor pool."
    )
    page_faults: FaultSpec = Field(default_factory=FaultSpec, description="Restarts, retries and timeouts of the page stage.")
    store: str | None = Field(
        None, description="Folder of earlier runs whose result rows this run may reuse when their content key matches "
        "(same document bytes, OCR setting, prompt text, model identity and fields). Default: the output folder's parent.",
    )
    base_dir: str = Field(
        ".", description="Folder that relative input paths (dataset.path, prompts_dir) are read from. Set by "
        "`invoicelab run` to the config file's folder; output_dir stays relative to the working directory.",
    )

    @field_validator("fields", mode="before")
    @classmethod
    def _field_shorthand(cls, value: Any) -> Any:
        # `fields: {total: amount}` is shorthand for `fields: {total: {type: amount}}`.
        if isinstance(value, dict):
            return {k: ({"type": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _unique_variants(self) -> Experiment:
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        if len(set(self.prompts)) != len(self.prompts):
            raise ValueError("prompts must not repeat")
        return self

    def resolve(self, path: str) -> Path:
        """An input path from the config, relative to the config's folder (``base_dir``)."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    def resolve_uri(self, path: str) -> str:
        """An input location as a URI string: ``s3://...`` and other URIs as given, local paths made absolute."""
        return path if is_uri(path) else str(self.resolve(path))

    @property
    def out_path(self) -> Path:
        """The run's output folder (relative to the working directory, like any command's output)."""
        return Path(self.output_dir.format(name=self.name)).expanduser().resolve()

    @property
    def store_path(self) -> Path:
        """Where earlier runs' result datasets are looked up for reuse."""
        return Path(self.store).expanduser().resolve() if self.store else self.out_path.parent


def is_uri(path: str) -> bool:
    """Whether ``path`` names a location by scheme (``s3://bucket/key``, ``gs://``, ``file://``)."""
    return "://" in path and not Path(path).exists()


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        lines.append(f"  {loc}: {msg}")
    return "invalid experiment config:\n" + "\n".join(lines)


def _coerce(text: str) -> Any:
    """A `--set` value: YAML scalars and flow collections (8, true, [a, b], {x: 1}), else the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.path=value` override in place (list items by index: `variants.0.batch_size=8`).

    Raises:
        ConfigError: the assignment has no `=` or its path does not lead into the config.
    """
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected dotted.path=value")
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {where} is not an index of a list of {len(node)}")
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {key}: {where} is not a mapping or list")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {key}: {last} is not an index of a list of {len(node)}")
        node[int(last)] = _coerce(raw)
    elif isinstance(node, dict):
        node[last] = _coerce(raw)
    else:
        raise ConfigError(f"--set {key}: cannot set a key inside a {type(node).__name__}")


def parse_experiment(data: Any, overrides: list[str] = ()) -> Experiment:
    """Validate a config mapping (after overrides) into an Experiment.

    Raises:
        ConfigError: with one line per problem, each naming the field path.
    """
    if not isinstance(data, dict):
        raise ConfigError("invalid experiment config: the top level must be a mapping")
    data = json.loads(json.dumps(data))  # deep copy; YAML gives only JSON-able types here
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return Experiment.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def load_experiment(path: str | Path, overrides: list[str] = ()) -> Experiment:
    """Read a YAML experiment file, apply `--set` overrides, validate.

    Raises:
        ConfigError: the file is missing, is not YAML, or does not validate.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if isinstance(data, dict) and "base_dir" not in data:
        data = {**data, "base_dir": str(path.resolve().parent)}
    return parse_experiment(data, overrides=overrides)


def json_schema() -> dict[str, Any]:
    """The experiment JSON schema, for editors (`invoicelab schema`)."""
    return Experiment.model_json_schema()
