"""The parts a variant is made of: decoding, resources, faults, OCR, page images, batching, offloading.

Part of the configuration layer (imported by ``invoicelab.variants``; imports nothing else from
invoicelab, never Ray, torch or a backend). It only validates.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    memory_gb: float | None = Field(
        None, gt=0, description="Memory one actor may use, in GiB (2^30 bytes): reserved in Ray's scheduler (its "
        "`memory` resource), "
        "the limit the memory check and the batch tuner hold the variant to, and on CPU enforced in the actor process "
        "(its data-segment limit, RLIMIT_DATA, which counts reserved private memory and so runs above resident memory): "
        "an allocation past it fails inside the model call, where the micro-batch is halved. None: no limit of its own "
        "(the node's memory, or the GPU's).",
    )
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


class BatchingSpec(Strict):
    """How the documents handed to an actor are cut into model calls (the generation micro-batches)."""

    micro_batch: int | None = Field(
        None, ge=1, le=4096, description="Most documents in one model call. None: the variant's batch_size.")
    token_budget: int | None = Field(
        None, ge=16, description="Most prompt tokens in one model call, counted padded (documents x longest prompt), "
        "so long documents go in smaller calls. None: no limit.",
    )
    group_by_length: bool = Field(
        True, description="Sort a batch's documents by prompt length before cutting it, so each call pads little.")


class OffloadSpec(Strict):
    """Weights that do not fit on the device go to CPU memory and then to disk (accelerate's device_map)."""

    device_gb: float = Field(..., gt=0, description="Most GB of weights kept on the variant's device (the GPU, or "
                             "CPU memory for a CPU variant).")
    cpu_gb: float | None = Field(None, gt=0, description="GPU variants: most GB of weights in CPU memory beside the "
                                 "GPU's; None: what is left goes to CPU memory without limit.")
    folder: str | None = Field(None, description="Where weights past both limits are written (disk offload). None: a "
                               "temporary folder of the actor.")


class TuningSpec(Strict):
    """How `batch_size: auto` and `invoicelab tune` probe batch sizes (see ``invoicelab.tuning``)."""

    sample_docs: int = Field(2, ge=1, le=256, description="Each probed size answers at least this many documents "
                             "(whole calls of its size), so that one short or long document does not decide. The "
                             "probes answer the run's own documents; their rows are kept as the run's.")
    max_micro_batch: int = Field(64, ge=1, le=4096, description="Largest micro-batch probed.")
    plateau: float = Field(0.05, ge=0, le=1, description="Stop growing once doubling the micro-batch gains less than "
                           "this fraction of docs/s.")
    memory_margin: float = Field(0.15, ge=0, lt=1, description="Keep this fraction of the memory limit free: a size "
                                 "whose peak passes (1 - margin) x limit is not taken, and probing stops.")
    rounds: int = Field(1, ge=1, le=5, description="Timed passes per size (the best is kept, against noise).")
    profiles: str | None = Field(None, description="Folder of saved profiles. None: ~/.cache/invoicelab/profiles "
                                 "(INVOICELAB_PROFILES overrides).")
    retune: bool = Field(False, description="Probe again even when a profile for the same key is saved.")
