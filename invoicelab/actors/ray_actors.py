"""Ray-side set-up of the stage classes: threads, devices, placement, metrics, object refs.

Ray sets ``OMP_NUM_THREADS=1`` in workers, so torch and onnxruntime would use one thread
whatever the actor reserved; these classes read the reservation and pass it on. A variant actor
puts its model on the GPU Ray assigned to it (``CUDA_VISIBLE_DEVICES`` holds only that one) and
on the CPU when it reserved none, records the node and GPU ids it saw in every row, and
publishes per-variant metrics for the dashboard. The orchestrator wraps these with ``ray.remote``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.util import metrics

from invoicelab.actors.extractor import Extractor, Todo
from invoicelab.actors.meter import cap_memory
from invoicelab.actors.pages import PageReader
from invoicelab.actors.tuner import ProbeRunner
from invoicelab.actors.writer import ResultWriter


def assigned_threads() -> int:
    """Whole CPUs reserved by the current actor (at least 1)."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


def placement() -> dict[str, Any]:
    """Where this process runs: node id, the GPU ids Ray assigned, and the actor's name."""
    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "gpu_ids": [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])],
            "worker": ctx.get_actor_name() or f"pid-{os.getpid()}"}


def memory_limit(experiment_json: str, variant_name: str) -> float | None:
    """The variant's ``resources.memory_gb`` (None: no cap)."""
    from invoicelab.config import Experiment

    exp = Experiment.model_validate_json(experiment_json)
    return next(v for v in exp.variants if v.name == variant_name).resources.memory_gb


def _table(refs: list[ray.ObjectRef], doc_ids: set[str]) -> pa.Table:
    tables = [t.filter(pc.is_in(t.column("doc_id"), pa.array(sorted(doc_ids)))) for t in ray.get(refs)]
    return pa.concat_tables(tables, promote_options="default")


class VariantActor:
    """One model (variant) loaded once; computes result rows for batches of (document, prompt)."""

    def __init__(self, experiment_json: str, variant_name: str, prompts: dict[str, dict[str, Any]],
                 experiment: str):
        self.where = placement()
        device = "cuda" if self.where["gpu_ids"] else "cpu"
        if device == "cpu":  # a GPU's memory is the device's own; the process cap is for CPU variants
            cap_memory(memory_limit(experiment_json, variant_name))
        self.extractor = Extractor(experiment_json, variant_name, prompts, num_threads=assigned_threads(),
                                   device=device, where=self.where)
        tags = {"experiment": experiment, "variant": variant_name}
        keys = tuple(tags)
        self.done = metrics.Counter("invoicelab_documents_done", "Result rows written", tag_keys=keys)
        self.errors = metrics.Counter("invoicelab_errors", "Result rows that are errors", tag_keys=keys)
        self.accuracy = metrics.Gauge("invoicelab_running_accuracy", "Share of field values right so far",
                                      tag_keys=keys)
        self.tokens = metrics.Gauge("invoicelab_tokens_per_s", "Generated tokens per second of model time",
                                    tag_keys=keys)
        for metric in (self.done, self.errors, self.accuracy, self.tokens):
            metric.set_default_tags(tags)
        self.right = self.values = 0

    def ready(self) -> dict[str, Any]:
        """Placement, pid and the load error, if the model could not load."""
        return {**self.where, "pid": os.getpid(), "load_error": self.extractor.load_error}

    def process(self, page_refs: list[ray.ObjectRef], todo: list[Todo]) -> tuple[pa.Table, dict[str, int]]:
        """Result rows for ``todo``; the page tables are fetched here, from the object store."""
        start = time.perf_counter()
        table = self.extractor(_table(page_refs, {d for d, _, _ in todo}), todo)
        self._publish(table, time.perf_counter() - start)
        return table, {"rows": table.num_rows}

    def _publish(self, table: pa.Table, seconds: float) -> None:
        df = table.to_pandas()
        errors = int(df["error"].notna().sum())
        self.done.inc(len(df))
        if errors:
            self.errors.inc(errors)
        matches = df[[c for c in df.columns if c.startswith("match_")]]
        self.right += int(matches.fillna(False).to_numpy().sum())
        self.values += matches.size
        if self.values:
            self.accuracy.set(self.right / self.values)
        tokens = df["tokens_out"].fillna(0).sum()
        if seconds > 0:
            self.tokens.set(float(tokens) / seconds)


class TunerActor(ProbeRunner):
    """The batch tuner's probes on the variant's own reservation (its GPU, CPUs and memory cap)."""

    def __init__(self, experiment_json: str, variant_name: str, prompts: dict[str, dict[str, Any]], setting: dict,
                 cache_dir: str | None):
        where = placement()
        device = "cuda" if where["gpu_ids"] else "cpu"
        if device == "cpu":
            cap_memory(memory_limit(experiment_json, variant_name))
        super().__init__(experiment_json, variant_name, prompts, setting, cache_dir, assigned_threads(), device,
                         where)


class PageActor(PageReader):
    """A ``PageReader`` whose OCR engine uses as many threads as the actor reserved CPUs."""

    def __init__(self, setting: dict, cache_dir: str | None = None):
        super().__init__(setting, cache_dir, num_threads=assigned_threads())

    def ready(self) -> dict[str, Any]:
        return {**placement(), "pid": os.getpid(), "load_error": ""}

    def process(self, docs: list[dict[str, Any]]) -> tuple[pa.Table, dict[str, int]]:
        table = self(pa.Table.from_pylist(docs))
        return table, {"rows": table.num_rows}


class WriterActor(ResultWriter):
    """The run's ``ResultWriter``, pinned by the orchestrator to the driver's node."""

    def ready(self) -> dict[str, Any]:
        return {**placement(), "pid": os.getpid(), "load_error": ""}


def hash_documents(locations: list[str]) -> list[str]:
    """sha256 of each document's bytes, read by the worker ("" where it cannot be read)."""
    from invoicelab.data.storage import sha256

    out = []
    for location in locations:
        try:
            out.append(sha256(location) if location else "")
        except Exception:  # noqa: BLE001 - an unreadable document is reported by the page stage
            out.append("")
    return out
