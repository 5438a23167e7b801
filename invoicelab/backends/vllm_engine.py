"""The vllm backend: vLLM on GPUs; here its settings mapping, requests and answers, and an in-process engine.

How a run uses it: the orchestrator runs a vllm variant as a Ray Data LLM pipeline (``ray.data.llm``:
``vLLMEngineProcessorConfig`` and ``build_processor``, see ``invoicelab.orchestrator.llm_stage``), not
as a pool of variant actors. Ray Data LLM keeps each engine replica fed with many batches at once
(vLLM's continuous batching), keeps a tensor-parallel engine's GPUs together in one placement group,
and restarts a dead engine. What that pipeline needs of ours lives here, with neither Ray nor vLLM
imported:

- settings -> vLLM engine arguments and Ray Data LLM processor settings (``engine_kwargs``,
  ``processor_settings``, ``engine_bundles``);
- a document and a prompt -> a request: chat messages holding the OCR text, or the page images as
  data URLs, and sampling parameters made from the same ``GenerationSpec`` as the transformers
  backends' (``build_request``), with the fields' JSON schema for vLLM's structured outputs;
- an answer (generated text and token counts) -> ``Extraction`` (``extraction``).

``VllmBackend`` sends the same requests through vLLM's offline ``LLM.chat`` inside one process: for
use without Ray (the GPU tests, a notebook). The orchestrator never uses it. vLLM is imported only
by ``VllmBackend``; a missing vLLM names the extra to install.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from invoicelab.backends.base import DocInput, Extraction, extraction  # noqa: F401 - extraction: this module's answer mapping
from invoicelab.backends.structured import answer_schema
from invoicelab.config import FieldSpec, VariantSpec
from invoicelab.prompts import Prompt

MISSING_VLLM = ("vllm is not installed where the engine runs: pip install 'invoicelab[vllm]' on the GPU nodes "
                "(Linux with CUDA; it brings the vLLM version Ray Data LLM was tested with)")
DEFAULT_MAX_IMAGES = 2
"""Images per prompt the in-process engine allows when every page is read (dataset.max_pages' default)."""


@dataclass(frozen=True)
class Request:
    """One document's request to the engine.

    Attributes:
        messages: OpenAI-style chat messages; with ``prefix``, the last one is the assistant's begun answer.
        prefix: Text the answer begins with ("" unless the variant's ``structured`` is ``prefix``).
        sampling: vLLM ``SamplingParams`` arguments, structured outputs under ``structured_outputs``.
    """

    messages: list[dict[str, Any]]
    prefix: str
    sampling: dict[str, Any]


def engine_kwargs(variant: VariantSpec, seed: int, max_images: int = 1) -> dict[str, Any]:
    """vLLM engine arguments (``vllm.EngineArgs``) of a variant's settings; ``engine_kwargs`` win.

    Args:
        variant: A ``VllmVariant``.
        seed: The experiment's seed.
        max_images: Page images one prompt may hold (image input).
    """
    kwargs: dict[str, Any] = {
        "dtype": variant.dtype,
        "gpu_memory_utilization": variant.gpu_memory_utilization,
        "max_num_seqs": variant.max_num_seqs,
        "tensor_parallel_size": variant.tensor_parallel_size,
        "seed": seed,
    }
    if variant.quantization:
        kwargs["quantization"] = variant.quantization
    if variant.max_model_len:
        kwargs["max_model_len"] = variant.max_model_len
    if variant.revision and variant.revision != "unresolved":  # the driver pinned it: weights and tokenizer
        kwargs["revision"] = kwargs["tokenizer_revision"] = variant.revision
    if variant.input == "image":
        kwargs["limit_mm_per_prompt"] = {"image": max_images}
    return {**kwargs, **variant.engine_kwargs}


def engine_bundles(variant: VariantSpec) -> list[dict[str, float]]:
    """The placement group bundles of one engine replica: one per tensor-parallel rank.

    The variant's ``resources`` are what one engine reserves in all, split evenly over its ranks; the
    bundles are placed with ``STRICT_PACK`` (one node), so a tensor-parallel engine's GPUs are together.
    """
    res, ranks = variant.resources, variant.tensor_parallel_size
    bundle = {"CPU": res.num_cpus / ranks, **{k: v / ranks for k, v in res.custom.items()}}
    if res.num_gpus:
        bundle["GPU"] = res.num_gpus / ranks
    return [dict(bundle) for _ in range(ranks)]


def stage_cpus(variant: VariantSpec) -> float:
    """CPUs each CPU-side worker of the variant's pipeline reserves (chat template, requests, scoring)."""
    return variant.resources.num_cpus / variant.tensor_parallel_size


def processor_settings(variant: VariantSpec, model_source: str, seed: int, max_images: int = 1,
                       runtime_env: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments of ``ray.data.llm.vLLMEngineProcessorConfig`` for a variant.

    Ray Data's own tokenize and detokenize stages are off: the engine tokenizes with the pinned
    tokenizer revision and returns text itself, and two fewer CPU actor pools start. Per-request
    engine errors become rows (``should_continue_on_error``) that the result step turns into error rows.
    Ray Data LLM's chat template stage takes no revision: for a pinned Hugging Face id, the weights and
    tokenizer are the pinned commit's, the chat template the cached default revision's.

    Args:
        variant: A ``VllmVariant``.
        model_source: The resolved model (a local folder or a Hugging Face id).
        seed: The experiment's seed.
        max_images: Page images one prompt may hold (image input).
        runtime_env: Ray runtime environment of every stage of the pipeline.
    """
    res = variant.resources
    cpu_stage = {"num_cpus": stage_cpus(variant)}
    return {
        "model_source": model_source,
        "batch_size": variant.batch_size,
        "concurrency": (res.actors, res.actors),  # a fixed number of engine replicas, as the variant says
        "accelerator_type": res.accelerator_type,
        "engine_kwargs": engine_kwargs(variant, seed, max_images),
        "placement_group_config": {"bundles": engine_bundles(variant), "strategy": "STRICT_PACK"},
        "should_continue_on_error": True,
        "chat_template_stage": {"enabled": True, **cpu_stage},
        "tokenize_stage": False,
        "detokenize_stage": False,
        "prepare_multimodal_stage": {"enabled": variant.input == "image", **cpu_stage},
        "runtime_env": runtime_env,
    }


def sampling_params(variant: VariantSpec, seed: int, schema: dict[str, Any] | None) -> dict[str, Any]:
    """vLLM sampling arguments: the variant's ``GenerationSpec``, as the transformers backends read it.

    temperature 0 decodes greedily (vLLM ignores top_p then, as transformers does); json-schema puts
    the fields' schema in ``structured_outputs.json`` (a JSON string, so that it crosses Arrow
    unchanged); prefix stops at the first closing brace and keeps it.
    """
    gen = variant.generation
    params: dict[str, Any] = {"max_tokens": gen.max_new_tokens, "temperature": gen.temperature, "top_p": gen.top_p,
                              "seed": seed}
    if variant.structured == "json-schema":
        params["structured_outputs"] = {"json": json.dumps(schema if schema is not None else {})}
    elif variant.structured == "prefix":
        params.update(stop=["}"], include_stop_str_in_output=True)
    return params


def image_url(png: bytes) -> str:
    """A page image as a ``data:`` URL, which vLLM's chat input reads without any network."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def with_images(messages: list[dict[str, Any]], pages: tuple[bytes, ...]) -> list[dict[str, Any]]:
    """The messages with the page images put before the text of the last user message."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    parts = [{"type": "image_url", "image_url": {"url": image_url(p)}} for p in pages]
    parts.append({"type": "text", "text": messages[last]["content"]})
    return [*messages[:last], {"role": "user", "content": parts}, *messages[last + 1:]]


def build_request(doc: DocInput, prompt: Prompt, fields: dict[str, FieldSpec], variant: VariantSpec, seed: int,
                  schema: dict[str, Any] | None = None) -> Request:
    """The engine request for one document and prompt.

    Text input puts the OCR text (cut to ``ocr.max_chars``) in the prompt; image input leaves the
    prompt's text empty and gives the page images instead.

    Raises:
        ValueError: image input but the document has no page image.
    """
    reads_images = variant.input == "image"
    if reads_images and not doc.images:
        raise ValueError("no page image to read")
    messages, prefix = prompt.render(fields, "" if reads_images else doc.text[:variant.ocr.max_chars])
    if reads_images:
        messages = with_images(messages, doc.images)
    prefix = prefix if variant.structured == "prefix" else ""
    if prefix:  # the chat template then continues this message instead of opening a new one
        messages = [*messages, {"role": "assistant", "content": prefix}]
    return Request(messages, prefix, sampling_params(variant, seed, schema))


def import_vllm() -> Any:
    """Import vLLM, naming the extra to install when it is missing."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"{MISSING_VLLM} ({exc})") from exc
    return vllm


def to_sampling_params(vllm: Any, params: dict[str, Any]) -> Any:
    """``vllm.SamplingParams`` of a request's sampling arguments (as Ray Data LLM builds them)."""
    params = dict(params)
    structured = params.pop("structured_outputs", None)
    guided = vllm.sampling_params.StructuredOutputsParams(**structured) if structured else None
    return vllm.SamplingParams(**params, structured_outputs=guided)


class VllmBackend:
    """vLLM's offline engine in this process: the same requests as the Ray Data LLM path, for use without Ray."""

    uses_prompt = True

    def __init__(self, variant: VariantSpec, fields: dict[str, FieldSpec], num_threads: int | None = None,
                 seed: int = 0, device: str = "cpu"):
        """Start the engine on the GPUs this process sees (``CUDA_VISIBLE_DEVICES``); vLLM picks the device.

        Raises:
            ImportError: vLLM is not installed (the message names the extra).
        """
        from invoicelab.backends.models import resolve_model

        self.vllm = import_vllm()
        self.variant, self.fields, self.seed = variant, fields, seed
        self.schema = answer_schema(fields) if variant.structured == "json-schema" else None
        max_images = 1 if variant.image.pages == "first" else DEFAULT_MAX_IMAGES
        self.kwargs = engine_kwargs(variant, seed, max_images)
        start = time.perf_counter()
        self.llm = self.vllm.LLM(model=resolve_model(variant.model), **self.kwargs)
        self.load_seconds = time.perf_counter() - start

    def extract(self, docs: list[DocInput], prompt: Prompt | None) -> list[Extraction]:
        """One batch through ``LLM.chat``; vLLM schedules its requests together."""
        if prompt is None:
            raise ValueError("vllm needs a prompt")
        requests = [build_request(d, prompt, self.fields, self.variant, self.seed, self.schema) for d in docs]
        prefixing = self.variant.structured == "prefix"
        outputs = self.llm.chat([r.messages for r in requests],
                                [to_sampling_params(self.vllm, r.sampling) for r in requests], use_tqdm=False,
                                add_generation_prompt=not prefixing, continue_final_message=prefixing)
        return [extraction(o.outputs[0].text, len(o.prompt_token_ids or ()), len(o.outputs[0].token_ids), r.prefix,
                           list(self.fields)) for r, o in zip(requests, outputs, strict=True)]

    def info(self) -> dict[str, Any]:
        """The engine arguments and versions really used."""
        return {"backend": "vllm", "engine": "in-process vllm.LLM", "vllm_version": self.vllm.__version__,
                "engine_kwargs": self.kwargs, "structured": self.variant.structured,
                "load_seconds": round(self.load_seconds, 3)}
