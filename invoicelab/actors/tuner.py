"""The batch tuner's worker side: load a variant once and measure docs/s and peak memory per micro-batch.

``ProbeRunner`` runs where the variant's actors will (its GPU, its CPUs, its memory cap), reads the
sample documents' pages itself (``PageReader``, so OCR is cached for the run), and measures one size
at a time for ``invoicelab.tuning.search``:
- a generating backend that times steps (``backends.base.TimesSteps``): full answers to a few sample
  documents (one call) give the answer length; then each size generates a few tokens for that many
  documents, timed step by step, and the time of full answers is projected from its prefill and step
  times (``step_timer``): a probe costs seconds instead of whole answers;
- any other backend: whole model calls over at least the sample documents. For vllm that is its
  in-process engine (``VllmBackend``) started once with ``max_num_seqs`` at the largest size probed
  and given exactly ``size`` requests at a time: the concurrency that ``max_num_seqs`` would allow.
Out-of-memory while probing is a probe marked so, never a crash. No Ray import.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import pyarrow as pa

from invoicelab.actors.meter import reset_peak, window_peak
from invoicelab.actors.pages import PageReader
from invoicelab.backends import create_backend
from invoicelab.backends.base import DocInput, ReadsGroundTruth, TimesSteps
from invoicelab.config import Experiment
from invoicelab.microbatch import MicroBatcher, is_out_of_memory
from invoicelab.prompts import Prompt
from invoicelab.tuning import Probe, search

PROBE_STEPS = 6
"""Tokens generated per step-timed probe: the first gives the prefill, the rest the step time."""
LEARN_DOCS = 4
"""Sample documents answered in full to learn how long answers are."""


class ProbeRunner:
    """One variant loaded once, measuring micro-batch sizes on the experiment's own documents.

    Args:
        experiment_json: The experiment (``Experiment.model_dump_json()``).
        variant_name: The variant to tune.
        prompt: The prompt to probe with (``dataclasses.asdict`` of it; None for backends without one).
        setting: The variant's page setting (``asdict`` of ``TextSetting``).
        cache_dir: The OCR cache folder.
        num_threads: Threads the model may use.
        device: ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, experiment_json: str, variant_name: str, prompt: dict[str, Any] | None, setting: dict,
                 cache_dir: str | None, num_threads: int | None = None, device: str = "cpu"):
        self.exp = Experiment.model_validate_json(experiment_json)
        self.variant = next(v for v in self.exp.variants if v.name == variant_name)
        self.prompt = Prompt(**prompt) if prompt else None
        self.device, self.threads = device, num_threads or os.cpu_count() or 1
        self.reader = PageReader(setting, cache_dir, num_threads)
        start = time.perf_counter()
        if self.variant.backend == "vllm":  # one engine able to run the largest concurrency probed
            self.variant = self.variant.model_copy(update={"max_num_seqs": self.exp.tuning.max_micro_batch})
        self.backend = create_backend(self.variant, self.exp.fields, num_threads, self.exp.seed, device=device)
        self.load_s = time.perf_counter() - start
        self.docs: list[DocInput] = []
        self.answer_tokens = 0

    def hardware(self) -> dict[str, Any]:
        """The hardware part of the profile key: the GPU's name and memory, or the CPU's model and threads."""
        if self.device.startswith("cuda"):
            import torch

            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            return {"gpu": props.name, "gpu_memory_bytes": int(props.total_memory)}
        return {"cpu": cpu_model(), "threads": self.threads, "machine": platform.machine()}

    def memory_limit(self, actors: int = 1) -> int:
        """Memory one actor of the variant may use when it sets no ``memory_gb``: the GPU's memory, or this
        node's physical memory shared among the variant's actors."""
        if self.device.startswith("cuda"):
            return int(self.hardware()["gpu_memory_bytes"])
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / max(1, actors))

    def read(self, rows: list[dict[str, Any]]) -> int:
        """Read the sample documents' pages; returns how many can be probed with (readable ones)."""
        pages = self.reader(pa.Table.from_pylist(rows)).to_pylist()
        usable = [p for p in pages if not p["error"]]
        self.docs = [DocInput(p["doc_id"], p.get("text") or "", p["path"], tuple(p.get("images_png") or ()))
                     for p in usable]
        if isinstance(self.backend, ReadsGroundTruth):
            import json

            self.backend.see_truth({p["doc_id"]: json.loads(p.get("fields_json") or "{}") for p in usable})
        return len(self.docs)

    def tune(self, largest: int, plateau: float, limit_bytes: int | None, margin: float, rounds: int = 1) -> dict:
        """Probe and decide (``tuning.search``); returns the decision as a dict, with the time it took."""
        start = time.perf_counter()
        if not self.docs:
            raise RuntimeError("no readable sample document to probe with")
        if self._stepped and not self.answer_tokens:
            self._learn_answer_length()
        learn_s = time.perf_counter() - start
        decision = search(lambda size: self.measure(size, rounds), largest, plateau, limit_bytes, margin)
        return {**decision.to_dict(), "tuning_s": time.perf_counter() - start, "learn_s": learn_s,
                "load_s": self.load_s, "answer_tokens": self.answer_tokens, "sample_docs": len(self.docs)}

    @property
    def _stepped(self) -> bool:
        """Whether sizes are probed step-timed (a generating backend that times steps, and a prompt)."""
        return isinstance(self.backend, TimesSteps) and self.prompt is not None

    def measure(self, size: int, rounds: int = 1) -> Probe:
        """docs/s and peak memory at ``size`` documents per call (the best of ``rounds`` passes)."""
        best: Probe | None = None
        for _ in range(rounds):
            probe = self._once(size)
            if probe.out_of_memory:
                return probe
            best = probe if best is None or probe.docs_per_s > best.docs_per_s else best
        return best

    def _once(self, size: int) -> Probe:
        reset_peak()
        start = time.perf_counter()
        try:
            if self._stepped and not self.answer_tokens:
                self._learn_answer_length()
            rate, note = self._step_timed(size) if self._stepped else self._whole(size)
        except Exception as err:  # noqa: BLE001 - out-of-memory is a result of the probe; the rest propagates
            if not is_out_of_memory(err):
                raise
            _free_gpu()
            return Probe(size, 0.0, window_peak(), time.perf_counter() - start, True, f"{type(err).__name__}: "
                         f"{str(err)[:200]}")
        return Probe(size, rate, window_peak(), time.perf_counter() - start, False, note)

    def _batch(self, size: int) -> list[DocInput]:
        """``size`` sample documents (the sample repeated when it has fewer)."""
        return [self.docs[i % len(self.docs)] for i in range(size)]

    def _learn_answer_length(self) -> None:
        """Answer up to ``LEARN_DOCS`` sample documents in full, in one call (halved on out-of-memory): the
        longest answer sets the projected answer length."""
        docs = self.docs[:LEARN_DOCS]
        answered = MicroBatcher(len(docs), by_length=False).run(
            [0] * len(docs), lambda group: self.backend.extract([docs[i] for i in group], self.prompt))
        tokens = [a.value.tokens_out for a in answered if a.value is not None]
        if not tokens:
            raise MemoryError("out of memory answering one sample document alone")
        self.answer_tokens = max(1, max(tokens))

    def _step_timed(self, size: int) -> tuple[float, str]:
        times = self.backend.time_steps(self._batch(size), self.prompt, PROBE_STEPS)
        seconds = times.projected_s(self.answer_tokens)
        note = (f"projected: prefill {times.prefill_s:.3f} s + {self.answer_tokens - 1} x step {times.step_s:.4f} s "
                f"({times.steps} steps timed)")
        return size / seconds, note

    def _whole(self, size: int) -> tuple[float, str]:
        calls = max(1, -(-len(self.docs) // size))
        start = time.perf_counter()
        for _ in range(calls):
            self.backend.extract(self._batch(size), self.prompt)
        seconds = time.perf_counter() - start
        return calls * size / seconds, f"measured: {calls} whole call(s) of {size}"


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
