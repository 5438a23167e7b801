"""The driver's loop of one run: feed the pools, route refs, hand results to the writer, count.

Page batches go from the page pool to every variant pool that needs them as soon as they are
ready (OCR and inference overlap where resources allow); variant batches go to the writer. Only
object refs, keys and counters pass through here. Variant pools are created once the page pool
holds its reservation, unless everything fits at once, so idle variant actors can never take the
resources pages need.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from typing import Any, Protocol

import pyarrow as pa
import ray

from invoicelab.actors.extractor import row_base
from invoicelab.actors.ray_actors import PageActor, VariantActor
from invoicelab.config import Experiment, ResourceSpec
from invoicelab.data.sources import cache_root
from invoicelab.orchestrator.llm_stage import LlmStage
from invoicelab.orchestrator.plan import Plan, VariantPlan, todo_units
from invoicelab.orchestrator.pool import Outcome, Pool, Work
from invoicelab.orchestrator.resources import demand
from invoicelab.results import error_row


class Progress(Protocol):
    """What a run tells its caller as it goes (the CLI draws one bar per stage from it)."""

    def add(self, name: str, total: int, done: int = 0) -> None: ...

    def advance(self, name: str, n: int) -> None: ...


def actor_name(exp: Experiment, role: str) -> str:
    """``<experiment>/<variant>/<index>`` (or ``pages/<i>``, ``writer``), unique to this run, for the dashboard."""
    return f"{exp.name}/{role}#{_RUN_ID}"


_RUN_ID = os.urandom(3).hex()


class _Batches:
    """A variant's batches, fixed in advance: its documents in order, ``size`` at a time."""

    def __init__(self, docs: list[int], size: int):
        self.chunks = [docs[i:i + size] for i in range(0, len(docs), size)]
        self.of = {d: c for c, chunk in enumerate(self.chunks) for d in chunk}
        self.waiting = [set(chunk) for chunk in self.chunks]
        self.refs: dict[int, set] = {c: set() for c in range(len(self.chunks))}


class Scheduler:
    """The driver's loop for one run: feeds pools, routes refs, writes, keeps counters."""

    def __init__(self, plan: Plan, writer: Any, progress: Progress):
        self.plan, self.writer, self.progress = plan, writer, progress
        self.exp, self.docs = plan.exp, plan.docs
        self.writes: dict[ray.ObjectRef, str] = {}
        self.settings = sorted({v.setting for v in plan.variants if v.todo}, key=lambda s: s.engine)
        self.active = [v for v in plan.variants if v.todo]
        self.units = {v.variant.name: todo_units(v, self.docs) for v in self.active}
        self.batches = {v.variant.name: _Batches(sorted(self.units[v.variant.name]), v.variant.batch_size)
                        for v in self.active}
        self.left = {v.variant.name: len(v.todo) for v in self.active}
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.filled: dict[str, int] = {}
        self.duplicates = 0
        self.marks: dict[str, dict[str, float]] = {}
        self._index = {d.doc_id: i for i, d in enumerate(self.docs)}

    def run(self) -> dict[str, dict[str, float]]:
        """Compute the plan's rows; returns per stage its wall time and, in seconds from the start,
        when its first and last batch finished (``first_s``, ``last_s``): the timeline of the run."""
        self.t0 = start = time.perf_counter()
        self.pools: dict[str, Pool] = {}
        timings: dict[str, dict[str, float]] = {}
        for setting in self.settings:  # one page pass per text setting; variants of earlier ones keep going
            page_start = time.perf_counter()
            label = f"pages ({setting.engine})"
            self._pages(setting)
            timings[label] = {"wall_s": time.perf_counter() - page_start, **self.marks.get(label, {})}
        while any(not p.idle for p in self.pools.values()) or self.writes:
            self._step([])
        for pool in self.pools.values():
            pool.shutdown()
        self.actors = {name: pool.placements() for name, pool in self.pools.items()}
        self._finalize()
        for v in self.active:
            name = v.variant.name
            wall = self.finished.get(name, time.perf_counter()) - self.started.get(name, start)
            timings[name] = {"wall_s": wall, "rows": len(v.todo), "filled": self.filled.get(name, 0),
                             "wall_docs_per_s": len(v.todo) / wall if wall > 0 else float("nan"),
                             **self.marks.get(name, {})}
        return timings

    def _mark(self, stage: str) -> None:
        """Note when a stage finished a batch (first and last), relative to the run's start."""
        now = time.perf_counter() - self.t0
        self.marks.setdefault(stage, {"first_s": now})["last_s"] = now

    # --- pools ------------------------------------------------------------------------------------

    def _variant_pool(self, vplan: VariantPlan) -> Pool | LlmStage:
        v = vplan.variant
        prompts = {pid: asdict(p) for pid, p in vplan.prompts.items() if p is not None}
        names = [actor_name(self.exp, f"{v.name}/{i}") for i in range(v.resources.actors)]
        done = len(vplan.expected) - len(vplan.todo)
        self.progress.add(v.name, len(vplan.expected), done)
        if v.backend == "vllm":  # a Ray Data LLM pipeline behind the pool interface (llm_stage.py)
            return LlmStage(self.exp, v, prompts, self.units[v.name])
        return Pool(v.name, ray.remote(VariantActor), (self.exp.model_dump_json(), v.name, prompts, self.exp.name),
                    v.resources, v.faults, names, lambda w: (w.extra, w.units), doc_of=lambda t: t[0])

    def _pages(self, setting) -> None:
        todo = self.plan.todo_docs(setting)
        res = self.exp.page_stage
        variants = [v for v in self.active if v.setting == setting]
        together = self._room_for(res, variants)  # asked before the page actors take their share
        names = [actor_name(self.exp, f"pages/{i}") for i in range(res.actors)]
        pool = Pool("pages", ray.remote(PageActor), (asdict(setting), str(cache_root())), res,
                    self.exp.page_faults, names, lambda w: (w.units,), doc_of=lambda d: d["doc_id"])
        label = f"pages ({setting.engine})"
        self.progress.add(label, len(todo))
        if not together:
            # Then variant actors are created once a page actor holds its reservation: created
            # earlier, they could take every CPU while waiting for pages that then never come.
            while not any(s.state in ("idle", "busy", "dead") for s in pool.slots):
                self._step([pool])
        for v in variants:
            self.pools[v.variant.name] = self._variant_pool(v)
        # Small enough that every page actor has several batches and the first variant batch can
        # start after one page batch; at most 16 documents per task.
        smallest = min(v.variant.batch_size for v in variants)
        size = max(1, min(16, smallest, math.ceil(len(todo) / (4 * res.actors))))
        batches = [todo[i:i + size] for i in range(0, len(todo), size)]
        while batches or not pool.idle:
            while batches and len(pool.queue) < res.actors and self._room():
                pool.put(Work([self._doc_row(i) for i in batches.pop(0)]))
            for outcome in self._step([pool]):
                self.progress.advance(label, len(outcome.work.units))
                self._mark(label)
                self._route(setting, outcome)
        pool.shutdown()

    @staticmethod
    def _room_for(pages: ResourceSpec, variants: list[VariantPlan]) -> bool:
        """Whether the page pool and these variants' pools all fit in what the cluster has free now."""
        free = ray.available_resources()
        need: dict[str, float] = {}
        for res in [pages, *(v.variant.resources for v in variants)]:
            for key, amount in demand(res).items():
                need[key] = need.get(key, 0.0) + amount * res.actors
        return all(free.get(key, 0.0) >= amount - 1e-6 for key, amount in need.items())

    def _room(self) -> bool:
        """Backpressure: stop reading pages while running variants have plenty queued."""
        running = [p for p in self.pools.values() if p.running]
        return not running or sum(len(p.queue) for p in running) < 4 * sum(len(p.slots) for p in running)

    def _step(self, extra: list[Pool]) -> list[Outcome]:
        """Wait for something to finish and react; returns the outcomes of the ``extra`` pools."""
        pools = [*extra, *self.pools.values()]
        for pool in pools:
            pool.dispatch()
        owners = {ref: pool for pool in pools for ref in pool.refs()}
        refs = [*owners, *self.writes]
        if refs:
            ready, _ = ray.wait(refs, num_returns=1, timeout=0.5, fetch_local=False)
            if ready:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        else:  # only actors that will be asked again shortly (restarting): do not spin
            ready = []
            time.sleep(0.05)
        out: list[Outcome] = []
        for ref in ready:
            if ref in self.writes:
                self._written(ref)
                continue
            self._sort(owners[ref], owners[ref].handle(ref), extra, out)
        for pool in pools:
            self._sort(pool, pool.expire(), extra, out)
        for name, pool in self.pools.items():
            if name not in self.started and pool.running:
                self.started[name] = time.perf_counter()
        return out

    def _sort(self, pool: Pool, outcomes: list[Outcome], extra: list[Pool], out: list[Outcome]) -> None:
        """Outcomes of the page pool go back to the caller; a variant's go to the writer."""
        if pool in extra:
            out.extend(outcomes)
        else:
            self._variant_done(pool, outcomes)

    # --- routing ----------------------------------------------------------------------------------

    def _doc_row(self, i: int) -> dict[str, Any]:
        return {**self.docs[i].row(), "doc_sha256": self.plan.hashes[i]}

    def _route(self, setting, outcome: Outcome) -> None:
        """Send a page batch (or its failure, as error page rows) to every variant that needs it.

        A variant's batches are fixed in advance (its documents in order, ``batch_size`` at a time)
        and each goes to its pool once all its pages are in: the same documents are batched together
        whatever order pages arrive in, so answers that depend on the batch (padding, dynamic int8
        scales) are reproducible.
        """
        if outcome.payload is not None:
            ref = outcome.payload
        else:
            rows = [{**d, "error": outcome.error, "error_stage": outcome.stage, "text": ""} for d in outcome.work.units]
            ref = ray.put(pa.Table.from_pylist(rows))
        indices = [self._index[d["doc_id"]] for d in outcome.work.units]
        for v in self.active:
            if v.setting != setting:
                continue
            batches = self.batches[v.variant.name]
            for i in indices:
                if i not in batches.of:
                    continue
                chunk = batches.of[i]
                batches.refs[chunk].add(ref)
                batches.waiting[chunk].discard(i)
                if not batches.waiting[chunk]:
                    units = [t for d in batches.chunks[chunk] for t in self.units[v.variant.name][d]]
                    self.pools[v.variant.name].put(Work(units, sorted(batches.refs.pop(chunk), key=str)))

    def _variant_done(self, pool: Pool, outcomes: list[Outcome]) -> None:
        vplan = next(v for v in self.active if v.variant.name == pool.label)
        for outcome in outcomes:
            prefix = pool.label
            if outcome.payload is not None:
                ref = self.writer.write.remote(outcome.payload, prefix)
            else:
                rows = [self._error_row(vplan, t, outcome) for t in outcome.work.units]
                ref = self.writer.write_rows.remote(rows, prefix)
            self.writes[ref] = pool.label

    def _error_row(self, vplan: VariantPlan, todo: tuple[str, str, str], outcome: Outcome) -> dict[str, Any]:
        doc_id, pid, key = todo
        i = self._index[doc_id]
        base = row_base(self._doc_row(i), vplan.variant, vplan.prompts.get(pid), self.exp.fields, key=key)
        return error_row(base, outcome.error, outcome.stage)

    def _written(self, ref: ray.ObjectRef) -> None:
        name = self.writes.pop(ref)
        rows = ray.get(ref)["rows"]
        self.progress.advance(name, rows)
        self._mark(name)
        self.left[name] -= rows
        if self.left[name] <= 0:
            self.finished[name] = time.perf_counter()
            self.pools[name].shutdown()

    def _finalize(self) -> None:
        """Exactly once: drop repeated keys; write an error row for any expected row that never came."""
        report = ray.get(self.writer.finalize.remote(self.plan.expected_keys))
        self.duplicates = report["duplicates_dropped"]
        missing = set(report["missing"])
        for v in self.plan.variants:
            units = [(self.docs[i].doc_id, pid, k) for k, (i, pid) in v.expected.items() if k in missing]
            if units:
                self.filled[v.variant.name] = len(units)
                lost = Outcome(Work(units), error="no result returned by the pipeline", stage="pipeline")
                ray.get(self.writer.write_rows.remote([self._error_row(v, u, lost) for u in units], v.variant.name))
