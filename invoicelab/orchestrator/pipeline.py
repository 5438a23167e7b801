"""Running an experiment: plan, then one page pool and one pool per variant, all at once.

The driver lists documents (ids, locations, ground truth; never their bytes), plans which rows
are missing from the result store, and then only moves object refs and counters: page batches
go from the page pool to every variant pool that needs them as soon as they are ready (OCR and
inference overlap), variant results go to the writer on the driver's node as atomic Parquet
parts. Variants run concurrently on their own reservations and queue behind each other in Ray's
scheduler when the cluster is full. At the end every expected (document, variant, prompt) row is
in the run's dataset exactly once; a row that never came is written as an error row saying so.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from invoicelab import store
from invoicelab.actors.extractor import row_base
from invoicelab.actors.ray_actors import PageActor, VariantActor, WriterActor, hash_documents
from invoicelab.actors.writer import summarize_folder
from invoicelab.config import ConfigError, Experiment
from invoicelab.data.sources import cache_root, load_documents
from invoicelab.orchestrator.cluster import connect, worker_env
from invoicelab.orchestrator.plan import (HASH_CHUNK, Plan, VariantPlan, cached_hashes, make_plan, pin_models,
                                          save_hashes, todo_units)
from invoicelab.orchestrator.pool import Outcome, Pool, Work
from invoicelab.orchestrator.resources import fit_problem
from invoicelab.prompts import load_prompt
from invoicelab.results import error_row, schema


class ClusterError(ConfigError):
    """A pool the cluster can never hold; the message has the numbers."""


class Progress(Protocol):
    """What the pipeline tells its caller as it goes (the CLI draws one bar per stage from it)."""

    def add(self, name: str, total: int, done: int = 0) -> None: ...

    def advance(self, name: str, n: int) -> None: ...


class _Silent:
    def add(self, name: str, total: int, done: int = 0) -> None:
        pass

    def advance(self, name: str, n: int) -> None:
        pass


@dataclass
class RunResult:
    """Where a finished run put its results (a Parquet dataset folder), and its summary."""

    out_dir: Path
    results: Path
    summary: dict[str, Any]


def prepare(exp: Experiment) -> Plan:
    """Read prompts and documents, pin models, hash documents (on workers), and plan the run.

    Raises:
        DatasetError: the dataset cannot be used at all.
        ConfigError: a prompt does not exist.
    """
    prompts_dir = exp.resolve(exp.prompts_dir) if exp.prompts_dir else None
    prompts = [load_prompt(p, prompts_dir) for p in exp.prompts]  # fail before starting anything
    docs = load_documents(exp)
    exp, identities = pin_models(exp)
    known, cache = cached_hashes(docs)
    missing = [i for i, h in enumerate(known) if h is None]
    if missing:
        connect(exp.ray)
        task = ray.remote(num_cpus=0.5, max_retries=1, runtime_env={"env_vars": worker_env()})(hash_documents)
        chunks = [missing[i:i + HASH_CHUNK] for i in range(0, len(missing), HASH_CHUNK)]
        results = ray.get([task.remote([docs[i].path for i in chunk]) for chunk in chunks])
        for chunk, digests in zip(chunks, results):
            for i, h in zip(chunk, digests):
                known[i] = h
        save_hashes(docs, known, cache)
    return make_plan(exp, docs, [h or "" for h in known], prompts, identities)


def check_fits(plan: Plan) -> list[str]:
    """Problems of pools the connected cluster can never hold (empty: all can run)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    problems = [fit_problem(f"variant {v.variant.name!r}", v.variant.resources, nodes) for v in plan.variants
                if v.todo]
    if plan.todo_rows:
        problems.append(fit_problem("page stage", plan.exp.page_stage, nodes))
    return [p for p in problems if p]


def run_experiment(exp: Experiment, progress: Progress | None = None) -> RunResult:
    """Compute every missing row of ``exp`` and write the run's dataset and summary.

    Raises:
        DatasetError: the dataset cannot be used at all.
        ConfigError: a prompt does not exist; ClusterError: a pool can never fit the cluster.
    """
    progress = progress or _Silent()
    plan = prepare(exp)
    out = exp.out_path
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(plan.exp.model_dump_json(indent=2), encoding="utf-8")
    if plan.retired:
        store.retire(plan.results, set(plan.expected_keys))
    adopted = store.adopt(plan.reuse, plan.results, plan.names(), schema(list(exp.fields))) if plan.reuse else 0
    timings: dict[str, dict[str, float]] = {}
    writer, duplicates, actors = None, 0, {}
    if plan.todo_rows:
        connect(exp.ray)
        problems = check_fits(plan)
        if problems:
            raise ClusterError("the cluster cannot hold this experiment:\n  " + "\n  ".join(problems))
        writer = _writer(plan)
        runner = _Run(plan, writer, progress)
        timings = runner.run()
        duplicates, actors = runner.duplicates, runner.actors
    summary = _summary(plan, writer, timings, changed=bool(adopted or plan.retired or plan.todo_rows))
    if writer is not None:
        ray.kill(writer)
    summary.update(name=exp.name, reused_rows=adopted, superseded_rows=plan.retired,
                   computed_rows=plan.todo_rows, duplicates_dropped=duplicates, actors=actors)
    return RunResult(out, plan.results, summary)


def _writer(plan: Plan) -> Any:
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    cls = ray.remote(WriterActor).options(num_cpus=0, name=_actor_name(plan.exp, "writer"), scheduling_strategy=here,
                                          max_restarts=3, max_task_retries=3, runtime_env={"env_vars": worker_env()})
    return cls.remote(str(plan.exp.out_path), list(plan.exp.fields))


def _actor_name(exp: Experiment, role: str) -> str:
    """``<experiment>/<variant>/<index>`` (or ``pages/<i>``, ``writer``), unique to this run, for the dashboard."""
    return f"{exp.name}/{role}#{_RUN_ID}"


_RUN_ID = os.urandom(3).hex()


def _summary(plan: Plan, writer: Any, timings: dict[str, dict[str, float]], changed: bool) -> dict[str, Any]:
    exp, order = plan.exp, [v.name for v in plan.exp.variants]
    previous = exp.out_path / "summary.json"
    if not changed and previous.is_file():
        return {**json.loads(previous.read_text(encoding="utf-8")), "timings": {}}
    if writer is None:  # nothing computed: only rows reused from the store, summarised here
        return summarize_folder(plan.results, list(exp.fields), timings, exp.kind.value, exp.seed, order)
    return ray.get(writer.summarize.remote(timings, exp.kind.value, exp.seed, order))


class _Run:
    """The driver's loop for one run: feeds pools, routes refs, writes, keeps counters."""

    def __init__(self, plan: Plan, writer: Any, progress: Progress):
        self.plan, self.writer, self.progress = plan, writer, progress
        self.exp, self.docs = plan.exp, plan.docs
        self.writes: dict[ray.ObjectRef, str] = {}
        self.settings = sorted({v.setting for v in plan.variants if v.todo}, key=lambda s: s.engine)
        self.active = [v for v in plan.variants if v.todo]
        self.units = {v.variant.name: todo_units(v, self.docs) for v in self.active}
        self.acc: dict[str, tuple[list, set, int]] = {v.variant.name: ([], set(), 0) for v in self.active}
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

    def _variant_pool(self, vplan: VariantPlan) -> Pool:
        v = vplan.variant
        prompts = {pid: asdict(p) for pid, p in vplan.prompts.items() if p is not None}
        names = [_actor_name(self.exp, f"{v.name}/{i}") for i in range(v.resources.actors)]
        done = len(vplan.expected) - len(vplan.todo)
        self.progress.add(v.name, len(vplan.expected), done)
        return Pool(v.name, ray.remote(VariantActor), (self.exp.model_dump_json(), v.name, prompts, self.exp.name),
                    v.resources, v.faults, names, lambda w: (w.extra, w.units), doc_of=lambda t: t[0])

    def _pages(self, setting) -> None:
        todo = self.plan.todo_docs(setting)
        res = self.exp.page_stage
        names = [_actor_name(self.exp, f"pages/{i}") for i in range(res.actors)]
        pool = Pool("pages", ray.remote(PageActor), (asdict(setting), str(cache_root())), res,
                    self.exp.page_faults, names, lambda w: (w.units,), doc_of=lambda d: d["doc_id"])
        label = f"pages ({setting.engine})"
        self.progress.add(label, len(todo))
        # Variant actors are created once a page actor holds its reservation: created earlier, they
        # could take every CPU while waiting for pages that then never come.
        while not any(s.state in ("idle", "busy", "dead") for s in pool.slots):
            self._step([pool])
        for v in self.active:
            if v.setting == setting:
                self.pools[v.variant.name] = self._variant_pool(v)
        size = max(1, min(16, math.ceil(len(todo) / (4 * res.actors))))
        batches = [todo[i:i + size] for i in range(0, len(todo), size)]
        while batches or not pool.idle:
            while batches and len(pool.queue) < res.actors and self._room():
                pool.put(Work([self._doc_row(i) for i in batches.pop(0)]))
            for outcome in self._step([pool]):
                self.progress.advance(label, len(outcome.work.units))
                self._mark(label)
                self._route(setting, outcome)
        pool.shutdown()
        self._flush(setting)

    def _room(self) -> bool:
        """Backpressure: stop reading pages while running variants have plenty queued."""
        running = [p for p in self.pools.values() if any(s.state in ("idle", "busy") for s in p.slots)]
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
        else:
            ready = []
        out: list[Outcome] = []
        for ref in ready:
            if ref in self.writes:
                self._written(ref)
                continue
            self._sort(owners[ref], owners[ref].handle(ref), extra, out)
        for pool in pools:
            self._sort(pool, pool.expire(), extra, out)
        for name, pool in self.pools.items():
            if name not in self.started and any(s.state in ("idle", "busy") for s in pool.slots):
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
        """Send a page batch (or its failure, as error page rows) to every variant that needs it."""
        if outcome.payload is not None:
            ref = outcome.payload
        else:
            rows = [{**d, "error": outcome.error, "error_stage": outcome.stage, "text": ""} for d in outcome.work.units]
            ref = ray.put(pa.Table.from_pylist(rows))
        indices = [self._index[d["doc_id"]] for d in outcome.work.units]
        for v in self.active:
            if v.setting != setting:
                continue
            todos, refs, ndocs = self.acc[v.variant.name]
            for i in indices:
                if i in self.units[v.variant.name]:
                    todos.extend(self.units[v.variant.name][i])
                    refs.add(ref)
                    ndocs += 1
            self.acc[v.variant.name] = (todos, refs, ndocs)
            if ndocs >= v.variant.batch_size:
                self._emit(v)

    def _emit(self, v: VariantPlan) -> None:
        todos, refs, _ = self.acc[v.variant.name]
        size = v.variant.batch_size
        per_doc: dict[str, list] = {}
        for t in todos:
            per_doc.setdefault(t[0], []).append(t)
        docs = list(per_doc)
        while len(docs) >= size:
            chunk, docs = docs[:size], docs[size:]
            self.pools[v.variant.name].put(Work([t for d in chunk for t in per_doc[d]], sorted(refs, key=str)))
        rest = [t for d in docs for t in per_doc[d]]
        self.acc[v.variant.name] = (rest, set(refs) if rest else set(), len(docs))

    def _flush(self, setting) -> None:
        for v in self.active:
            todos, refs, _ = self.acc[v.variant.name]
            if v.setting == setting and todos:
                self.pools[v.variant.name].put(Work(todos, sorted(refs, key=str)))
                self.acc[v.variant.name] = ([], set(), 0)

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
