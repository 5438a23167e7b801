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
from pydantic import Field, ValidationError, field_validator, model_validator

from invoicelab.prompt_axes import AXES, AXIS_DEFAULT, PromptSetSpec, level_name  # noqa: F401 - re-exported
from invoicelab.variant_parts import TuningSpec
from invoicelab.variants import (  # noqa: F401 - re-exported: the configuration's public names
    BACKENDS,
    PRECISIONS,
    FakeVariant,
    FaultSpec,
    GenerationSpec,
    ImageSpec,
    OcrLlmVariant,
    OcrSpec,
    OpenAIVariant,
    ResourceSpec,
    RulesVariant,
    Strict,
    Variant,
    VariantBase,
    VllmVariant,
    VlmVariant,
)

VariantSpec = VariantBase
"""Any variant (annotations): the concrete class is the one its ``backend`` names."""

class ConfigError(ValueError):
    """A configuration that cannot run. The message names the field path and what is allowed."""


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


class RaySpec(Strict):
    """Where the experiment runs."""

    address: str | None = Field(
        None, description="Ray cluster address ('auto' to join a running one); empty starts a local cluster."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local cluster started for this run.")


class PriceSpec(Strict):
    """What compute costs, for the cost per 1,000 documents of local variants (served ones price their tokens)."""

    cpu_hour: float = Field(0.0, ge=0, description="Price of one reserved CPU for one hour (0: not priced).")
    gpu_hour: float = Field(0.0, ge=0, description="Price of one reserved GPU for one hour (0: not priced).")


class MlflowSpec(Strict):
    """Also log each run to MLflow (needs the `mlflow` extra)."""

    tracking_uri: str = Field(..., description="MLflow tracking URI, e.g. file:./mlruns or http://mlflow:5000.")
    experiment: str | None = Field(None, description="MLflow experiment name (default: this experiment's name).")


class AnalysisSpec(Strict):
    """How results are scored, compared and recorded."""

    profiles: list[Literal["lenient", "sroie-strict"]] = Field(
        default_factory=lambda: ["lenient"], min_length=1,
        description="Metric profiles to report. lenient: each field's own match rule; sroie-strict: the SROIE Task 3 "
        "protocol (a value is right only when its whole text equals the ground truth), for comparison with published tables.",
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the paired tests (after correction).")
    correction: Literal["holm", "fdr_bh"] = Field(
        "holm", description="Multiple-comparison correction across fields and comparisons: holm (Holm, family-wise "
        "error) or fdr_bh (Benjamini-Hochberg, false discovery rate).",
    )
    n_boot: int = Field(2000, ge=100, le=100_000, description="Bootstrap resamples for confidence intervals.")
    reference: str | None = Field(
        None, description="Variant the others are tested against (quantization and model views). Default: the first.",
    )
    prices: PriceSpec = Field(default_factory=PriceSpec, description="Compute prices for cost per 1,000 documents.")
    report: bool = Field(True, description="Write report.html into the run folder at the end of the run.")
    history: bool = Field(True, description="Record the run in the results store's history (history.duckdb).")
    mlflow: MlflowSpec | None = Field(None, description="Also log the run to MLflow.")


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
        default_factory=lambda: ["terse-json"],
        description="Prompt ids from the prompts folder (default: terse-json, or none beside a prompt_set).",
    )
    prompt_set: PromptSetSpec | None = Field(None, description="Prompt variants generated along axes, run beside `prompts`.")
    prompts_dir: str | None = Field(None, description="Folder of prompt templates (default: the repo's prompts/).")
    variants: list[Variant] = Field(..., min_length=1, description="Model variants to compare, each with its backend's settings.")
    ray: RaySpec = Field(default_factory=RaySpec, description="Cluster settings.")
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec, description="Metrics, statistics, report and history.")
    tuning: TuningSpec = Field(default_factory=TuningSpec, description="How automatic batch sizes are probed.")
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

    @model_validator(mode="before")
    @classmethod
    def _set_replaces_default_prompt(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("prompt_set") and "prompts" not in data:
            return {**data, "prompts": []}
        return data

    @model_validator(mode="after")
    def _unique_variants(self) -> Experiment:
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        if len(set(self.prompts)) != len(self.prompts):
            raise ValueError("prompts must not repeat")
        if not self.prompts and self.prompt_set is None:
            raise ValueError("prompts: give at least one prompt id, or a prompt_set")
        ref = self.analysis.reference
        if ref is not None and ref not in names:
            raise ValueError(f"analysis.reference: no variant named {ref!r}; variants: {', '.join(names)}")
        return self

    def resolve(self, path: str) -> Path:
        """An input path from the config, relative to the config's folder (``base_dir``)."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    def resolve_uri(self, path: str) -> str:
        """An input location as a URI string: ``s3://...`` and other URIs as given, local paths made absolute."""
        return path if is_uri(path) else str(self.resolve(path))

    def prompts_path(self) -> Path:
        """The folder of prompt templates (``prompts_dir`` from the config's folder, else the repo's)."""
        return self.resolve(self.prompts_dir) if self.prompts_dir else default_prompts_dir()

    @property
    def out_path(self) -> Path:
        """The run's output folder (relative to the working directory, like any command's output)."""
        return Path(self.output_dir.format(name=self.name)).expanduser().resolve()

    @property
    def store_path(self) -> Path:
        """Where earlier runs' result datasets are looked up for reuse."""
        return Path(self.store).expanduser().resolve() if self.store else self.out_path.parent


def default_prompts_dir() -> Path:
    """The repo's ``prompts/`` folder (beside the package), else ``./prompts``."""
    beside = Path(__file__).resolve().parents[1] / "prompts"
    return beside if beside.is_dir() else Path("prompts")


def is_uri(path: str) -> bool:
    """Whether ``path`` names a location by scheme (``s3://bucket/key``, ``gs://``, ``file://``)."""
    return "://" in path and not Path(path).exists()


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        # A discriminated variant's errors carry its backend as a path part: variants.0.ocr-llm.precision
        parts = [str(p) for i, p in enumerate(e["loc"]) if not (p in BACKENDS and i and isinstance(e["loc"][i - 1], int))]
        loc = ".".join(parts) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        elif e["type"] == "literal_error":
            msg = f"unknown {parts[-1]} {e['input']!r}; available: {e['ctx']['expected']}"
        elif e["type"] == "union_tag_invalid":
            loc, msg = f"{loc}.backend", f"unknown backend {e['input'].get('backend')!r}; available: {', '.join(BACKENDS)}"
        elif e["type"] == "union_tag_not_found":
            loc, msg = f"{loc}.backend", f"missing; one of {', '.join(BACKENDS)}"
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
        exp = Experiment.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None
    if exp.prompt_set is not None:  # levels are declared in the set file, read here so a typo exits before a run
        problems = exp.prompt_set.level_problems(exp.prompts_path() / "sets" / f"{exp.prompt_set.base}.yaml")
        if problems:
            raise ConfigError("invalid experiment config:\n" + "\n".join(f"  {p}" for p in problems))
    return exp


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
