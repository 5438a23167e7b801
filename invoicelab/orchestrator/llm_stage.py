"""A vllm variant's stage: one Ray Data LLM pipeline (``ray.data.llm``), seen by the scheduler as a pool.

Why Ray Data LLM and not a pool of variant actors around an engine: its vLLM stage keeps each engine
replica fed with several batches at once (vLLM batches across them), places a tensor-parallel
engine's GPUs in one placement group, restarts an engine whose process died, and chains CPU stages
(chat template, image preparation) on their own workers. What is ours stays outside Ray Data LLM:

    pages (the page stage's tables, by ref)
      -> flat_map(RequestRows)                        request rows: messages + sampling params
      -> build_processor(vLLMEngineProcessorConfig)   chat template [+ multimodal] -> vLLM engine
      -> map_batches(ResultRows)                      result rows, parsed and scored
    union pages -> map_batches(InputErrorRows)        documents that cannot be asked: error rows

The pipeline runs in one streaming generator task (``_run``), so the driver stays a loop of refs:
for each output block the task yields its row keys, then the block; the scheduler hands the block
to the writer as it does any pool's. The task starts once every batch of the variant has been put
(the page pass of its text setting is over), since a Ray Data pipeline needs its input up front.

Before building anything the task runs a probe with the engine's resources: where vLLM cannot be
imported on those nodes, every row of the variant is an error row naming ``pip install
'invoicelab[vllm]'``. A request the engine fails is an error row (``should_continue_on_error``); a
failed pipeline makes the rows it did not deliver error rows with the cause. The variant's
``faults`` (batch timeout, retries, restarts) do not apply: Ray Data retries and restarts itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections import deque
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import ray

from invoicelab.actors.extractor import Todo
from invoicelab.actors.llm_rows import InputErrorRows, RequestRows, ResultRows, Units, backend_info
from invoicelab.backends.vllm_engine import MISSING_VLLM, processor_settings, stage_cpus
from invoicelab.config import Experiment, VariantSpec
from invoicelab.orchestrator.cluster import worker_env
from invoicelab.orchestrator.pool import Outcome, Work, _short
from invoicelab.orchestrator.resources import task_options


def runtime_env(variant: VariantSpec) -> dict[str, Any]:
    """The pipeline's runtime environment: the run's passed variables, then the variant's ``runtime_env``."""
    own = dict(variant.runtime_env)
    return {**own, "env_vars": {**worker_env(), **own.get("env_vars", {})}}


def vllm_version() -> str | None:
    """vLLM's version in this process's environment (None: not installed), found without importing it."""
    if importlib.util.find_spec("vllm") is None:
        return None
    try:
        return version("vllm")
    except PackageNotFoundError:
        return "unknown"


def build_pipeline(experiment_json: str, variant: VariantSpec, prompts: dict[str, dict[str, Any]], units: Units,
                   page_refs: list[ray.ObjectRef], env: dict[str, Any], versions: dict[str, str]) -> ray.data.Dataset:
    """The variant's result rows as a (lazy) Ray Data dataset; see the module docstring for its stages."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from invoicelab.backends.models import resolve_model

    exp = Experiment.model_validate_json(experiment_json)
    max_images = 1 if variant.image.pages == "first" else exp.dataset.max_pages
    settings = processor_settings(variant, resolve_model(variant.model), exp.seed, max_images, env)
    info = backend_info(variant, settings, versions)
    cpus = {"num_cpus": stage_cpus(variant)}
    pages = ray.data.from_arrow_refs(page_refs)
    requests = pages.flat_map(RequestRows(experiment_json, variant.name, prompts, units), **cpus)
    processor = build_processor(vLLMEngineProcessorConfig(**settings))
    answered = processor(requests).map_batches(ResultRows(experiment_json, variant.name, prompts, info),
                                               batch_format="pyarrow", batch_size=None, **cpus)
    failed = pages.map_batches(InputErrorRows(experiment_json, variant.name, prompts, units, info),
                               batch_format="pyarrow", batch_size=None, **cpus)
    return failed.union(answered)


@ray.remote
def _vllm_version() -> str | None:
    """``vllm_version`` where the engine would run (same GPUs, accelerator type and runtime env)."""
    return vllm_version()


@ray.remote(num_cpus=0, max_retries=0)
def _run(experiment_json: str, variant_name: str, prompts: dict[str, dict[str, Any]], units: Units,
         page_refs: list[ray.ObjectRef], env: dict[str, Any]) -> Iterator[Any]:
    """The variant's pipeline, run to the end: yields ``{"keys": [...]}`` then that block's table, per
    output block; or a single ``{"error": ..., "stage": ...}`` when vLLM is not installed for the engine."""
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    variant = next(v for v in Experiment.model_validate_json(experiment_json).variants if v.name == variant_name)
    found = ray.get(_vllm_version.options(**task_options(variant.resources, env)).remote())
    if found is None:
        yield {"error": MISSING_VLLM, "stage": "load"}
        return
    versions = {"vllm_version": found, "ray_version": ray.__version__}
    dataset = build_pipeline(experiment_json, variant, prompts, units, page_refs, env, versions)
    for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        if table.num_rows:
            yield {"keys": table.column("key").to_pylist()}
            yield table


class LlmStage:
    """A vllm variant's stage, with the part of ``Pool``'s interface the scheduler uses.

    Args:
        exp: The experiment (model revisions pinned).
        variant: The vllm variant.
        prompts: Prompt id -> the prompt's fields (``dataclasses.asdict``).
        units: Document index -> the (doc id, prompt id, key) rows to compute for it.
    """

    def __init__(self, exp: Experiment, variant: VariantSpec, prompts: dict[str, dict[str, Any]],
                 units: dict[int, list[Todo]]):
        self.label = variant.name
        self.args = (exp.model_dump_json(), variant.name, prompts)
        self.by_doc: Units = {}
        for todos in units.values():
            for doc_id, prompt_id, key in todos:
                self.by_doc.setdefault(doc_id, []).append((prompt_id, key))
        self.expected = sum(len(t) for t in units.values())
        self.env = runtime_env(variant)
        self.queue: deque[Work] = deque()  # stays empty (batches wait in ``unwritten``): read by the backpressure
        self.slots = [None] * variant.resources.actors  # the engine replicas, for the same check
        self.unwritten: dict[str, Todo] = {}
        self.page_refs: dict[ray.ObjectRef, None] = {}
        self.received = 0
        self.gen: Any = None
        self.keys: list[str] | None = None  # the keys of the table the job yields next
        self.done = False

    def put(self, work: Work, front: bool = False) -> None:
        """Take a batch: its units wait, and its page tables join the pipeline's input."""
        self.unwritten.update({unit[2]: unit for unit in work.units})
        self.page_refs.update(dict.fromkeys(work.extra or ()))
        self.received += len(work.units)

    @property
    def running(self) -> bool:
        return self.gen is not None and not self.done

    @property
    def idle(self) -> bool:
        return self.done or (self.gen is None and not self.received)

    def refs(self) -> list[Any]:
        return [self.gen] if self.running else []

    def dispatch(self) -> None:
        """Start the pipeline once every unit of the variant has come."""
        if self.gen is None and not self.done and self.received >= self.expected:
            run = _run.options(num_returns="streaming", runtime_env=self.env)
            self.gen = run.remote(*self.args, self.by_doc, list(self.page_refs), self.env)

    def handle(self, ref: Any) -> list[Outcome]:
        """Take the job's next item: keys (remembered), their table (an outcome), or the job's end."""
        try:
            item = next(self.gen)
        except StopIteration:
            return self._fail("the vLLM pipeline ended without a row for this document", "pipeline")
        if self.keys is not None:
            keys, self.keys = self.keys, None
            return [Outcome(Work([self.unwritten.pop(k) for k in keys if k in self.unwritten]), payload=item)]
        try:
            meta = ray.get(item)
        except Exception as err:  # noqa: BLE001 - the job failed: the rows it did not deliver say why
            return self._fail(f"vllm pipeline failed: {_short(err)}", "pipeline")
        if "error" in meta:
            return self._fail(meta["error"], meta["stage"])
        self.keys = meta["keys"]
        return []

    def _fail(self, reason: str, stage: str) -> list[Outcome]:
        """End the stage; every unit not yet delivered becomes an error row with ``reason``."""
        self.done = True
        units, self.unwritten = list(self.unwritten.values()), {}
        return [Outcome(Work(units), error=reason, stage=stage)] if units else []

    def expire(self) -> list[Outcome]:
        return []

    def shutdown(self) -> None:
        if self.running:
            with contextlib.suppress(Exception):  # it finished meanwhile
                ray.cancel(self.gen, force=True)
        self.done = True

    def placements(self) -> list[dict[str, Any]]:
        return []

