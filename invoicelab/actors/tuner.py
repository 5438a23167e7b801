"""The batch tuner's worker side: load a variant once and measure docs/s and peak memory per micro-batch.

``ProbeRunner`` runs where the variant's actors will (its GPU, its CPUs, its memory cap) and reads the
pages of the documents it probes with itself (``PageReader``, so their OCR is cached for the run). Each
probed size answers real documents of the run in full, through the run's own ``Extractor``: whole calls
of that size over at least ``tuning.sample_docs`` documents, timed end to end. The rows those answers
make are result rows like any other (their ``micro_batch`` says the size they were answered at): the
orchestrator writes them and the run does not compute them again, so probing costs only the time the
smaller sizes lose against the chosen one. When the run has fewer documents to compute than the
probes need, documents are answered again and only their first answer is kept. For vllm the engine
(``VllmBackend``, in process) is started once with ``max_num_seqs`` at the largest size probed and
given exactly ``size`` requests at a time; its rows are not kept (the run's vllm rows come from the
Ray Data LLM stage). Out-of-memory while probing is a probe marked so, never a crash. No Ray import.
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any

import pyarrow as pa

from invoicelab.actors.extractor import Extractor, Todo
from invoicelab.actors.meter import reset_peak, window_peak
from invoicelab.actors.pages import PageReader
from invoicelab.config import Experiment
from invoicelab.microbatch import MicroBatcher
from invoicelab.results import to_table
from invoicelab.tuning import Probe, search


class ProbeFailed(RuntimeError):
    """The model failed while probing with an error that is not out-of-memory."""


class ProbeRunner:
    """One variant loaded once, measuring micro-batch sizes on the run's own documents.

    Args:
        experiment_json: The experiment (``Experiment.model_dump_json()``).
        variant_name: The variant to tune.
        prompts: Prompt id -> the prompt's fields (``dataclasses.asdict``), as the variant's actors get them.
        setting: The variant's page setting (``asdict`` of ``TextSetting``).
        cache_dir: The OCR cache folder.
        num_threads: Threads the model may use.
        device: ``"cpu"`` or ``"cuda"``.
        where: ``node_id``, ``gpu_ids`` and ``worker``, recorded in the rows as the run's actors do.

    Raises:
        RuntimeError: the model cannot be loaded.
    """

    def __init__(self, experiment_json: str, variant_name: str, prompts: dict[str, dict[str, Any]], setting: dict,
                 cache_dir: str | None, num_threads: int | None = None, device: str = "cpu",
                 where: dict[str, Any] | None = None):
        exp = Experiment.model_validate_json(experiment_json)
        variant = next(v for v in exp.variants if v.name == variant_name)
        if variant.backend == "vllm":  # one engine able to run the largest concurrency probed
            data = json.loads(experiment_json)
            for v in data["variants"]:
                if v["name"] == variant_name:
                    v["max_num_seqs"] = exp.tuning.max_micro_batch
            experiment_json = json.dumps(data)
        self.device, self.threads = device, num_threads or os.cpu_count() or 1
        self.reader = PageReader(setting, cache_dir, num_threads)
        self.extractor = Extractor(experiment_json, variant_name, prompts, num_threads, device, where)
        if self.extractor.load_error:
            raise RuntimeError(self.extractor.load_error)
        self.variant = self.extractor.variant
        self.keep = variant.backend != "vllm"
        self.pages: dict[str, dict[str, Any]] = {}
        self.units: list[Todo] = []
        self.next = 0
        self.answered = 0
        self.kept: list[str] = []
        self.tables: list[pa.Table] = []

    @property
    def load_s(self) -> float:
        return self.extractor.load_s

    def hardware(self) -> dict[str, Any]:
        """The hardware part of the profile key: the GPU's name and memory, or the CPU's model and threads."""
        if self.device.startswith("cuda"):
            import torch

            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            return {"gpu": props.name, "gpu_memory_bytes": int(props.total_memory)}
        return {"cpu": cpu_model(), "threads": self.threads, "machine": platform.machine()}

    def memory_limit(self) -> float | None:
        """Memory one actor of the variant may use (``placement.limit_of``: ``resources.memory_gb``, else its
        share of this node's RAM or of its GPU's memory), read on the node where the variant runs."""
        from invoicelab.backends.placement import Limits, limit_of

        gpu = float(self.hardware()["gpu_memory_bytes"]) if self.device.startswith("cuda") else None
        ram = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        return limit_of(self.variant, Limits(ram, os.cpu_count() or 1, gpu, "the tuner's node"))[0]

    def read(self, rows: list[dict[str, Any]], units: list[Todo], keep: bool = True) -> int:
        """Read the pages of the documents of ``units`` (the (document, prompt, key) rows to probe with, in
        order); returns how many of them can be probed with (their page could be read).

        Args:
            rows: The documents' records (``Document.row()`` with ``doc_sha256``).
            units: The rows to answer; each is answered once and kept (when ``keep``), then reused.
            keep: Keep the rows answered (False: every unit is computed already, the probes only measure).
        """
        pages = self.reader(pa.Table.from_pylist(rows)).to_pylist()
        self.pages = {p["doc_id"]: p for p in pages if not p["error"]}
        self.units = [u for u in units if u[0] in self.pages]
        self.keep = self.keep and keep
        return len(self.units)

    def tune(self, largest: int, plateau: float, limit_bytes: int | None, margin: float, rounds: int = 1,
             sample_docs: int = 1) -> tuple[dict, pa.Table]:
        """Probe and decide (``tuning.search``).

        Returns:
            The decision as a dict (with the time it took, ``answered`` documents and the ``kept`` keys),
            and the kept rows (empty when nothing is kept).
        """
        start = time.perf_counter()
        if not self.units:
            raise RuntimeError("no readable document to probe with")
        decision = search(lambda size: self.measure(size, rounds, sample_docs), largest, plateau, limit_bytes,
                          margin)
        rows = pa.concat_tables(self.tables) if self.tables else to_table([], list(self.extractor.fields))
        return ({**decision.to_dict(), "tuning_s": time.perf_counter() - start, "load_s": self.load_s,
                 "largest": largest, "answered": self.answered, "kept": self.kept}, rows)

    def measure(self, size: int, rounds: int = 1, sample_docs: int = 1) -> Probe:
        """docs/s and peak memory at ``size`` documents per call (the best of ``rounds`` passes), each pass
        whole calls over at least ``sample_docs`` documents."""
        best: Probe | None = None
        for _ in range(rounds):
            probe = self._once(size, max(1, -(-sample_docs // size)))
            if probe.out_of_memory:
                return probe
            best = probe if best is None or probe.docs_per_s > best.docs_per_s else best
        return best

    def _once(self, size: int, calls: int) -> Probe:
        reset_peak()
        start = time.perf_counter()
        halvings, message = 0, ""
        for _ in range(calls):
            batcher = MicroBatcher(size, self.variant.batching.token_budget, self.variant.batching.group_by_length)
            self._call(self._take(size), size, batcher)
            halvings += batcher.halvings
            message = message or batcher.last_oom
        seconds = time.perf_counter() - start
        if halvings:
            _free_gpu()
            return Probe(size, 0.0, window_peak(), seconds, True, message)
        return Probe(size, calls * size / seconds, window_peak(), seconds, False,
                     f"measured: {calls} whole call(s) of {size}")

    def _take(self, size: int) -> list[Todo]:
        """The next ``size`` units, from the start again once all were answered (those answers are not kept)."""
        out = [self.units[(self.next + i) % len(self.units)] for i in range(size)]
        self.next += size
        return out

    def _call(self, units: list[Todo], size: int, batcher: MicroBatcher) -> None:
        """One call of ``size`` documents through the run's extractor; the first answer of each unit is kept."""
        docs = {u[0]: self.pages[u[0]] for u in units}
        self.extractor.batcher = batcher
        self.variant.batch_size = size  # the rows record the batch they were answered in
        table = self.extractor(pa.Table.from_pylist(list(docs.values())), units)
        self.answered += len(units)
        failed = [r for r in table.select(["error", "error_stage"]).to_pylist()
                  if r["error"] and r["error_stage"] == "model" and not r["error"].startswith("out of memory")]
        if failed:
            raise ProbeFailed(f"the model failed while probing: {failed[0]['error'][:300]}")
        if not self.keep:
            return
        seen, fresh = set(self.kept), []
        for i, key in enumerate(table.column("key").to_pylist()):
            if key not in seen:
                seen.add(key)
                fresh.append(i)
                self.kept.append(key)
        if fresh:
            self.tables.append(table.take(fresh))


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _free_gpu() -> None:
    """Give back the memory a failed CUDA call left cached (nothing to do on CPU)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
