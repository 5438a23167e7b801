"""Running an experiment: plan, then one page pool and one pool per variant, all at once.

The driver lists documents (ids, locations, ground truth; never their bytes), plans which rows
are missing from the result store, copies rows other runs already computed, and hands the rest to
the scheduler (``scheduler.py``): page batches flow to the variant pools as object refs, variant
results go to the writer on the driver's node as atomic Parquet parts. Variants run concurrently
on their own reservations and queue behind each other in Ray's scheduler when the cluster is full.
At the end every expected (document, variant, prompt) row is in the run's dataset exactly once; a
row that never came is written as an error row saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from invoicelab import store
from invoicelab.actors.ray_actors import WriterActor, hash_documents
from invoicelab.runs import summarize_folder
from invoicelab.config import ConfigError, Experiment
from invoicelab.data.sources import load_documents
from invoicelab.orchestrator.cluster import connect, worker_env
from invoicelab.orchestrator.plan import HASH_CHUNK, Plan, cached_hashes, make_plan, pin_models, save_hashes
from invoicelab.orchestrator.resources import fit_problem
from invoicelab.orchestrator.scheduler import Progress, Scheduler, actor_name
from invoicelab.prompts import load_prompt
from invoicelab.results import schema


class ClusterError(ConfigError):
    """A pool the cluster can never hold; the message has the numbers."""


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
        runner = Scheduler(plan, writer, progress)
        timings = runner.run()
        duplicates, actors = runner.duplicates, runner.actors
    summary = _summary(plan, writer, timings)
    if writer is not None:
        ray.kill(writer)
    summary.update(name=exp.name, reused_rows=adopted, superseded_rows=plan.retired,
                   computed_rows=plan.todo_rows, duplicates_dropped=duplicates, actors=actors)
    return RunResult(out, plan.results, summary)


def _writer(plan: Plan) -> Any:
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    cls = ray.remote(WriterActor).options(num_cpus=0, name=actor_name(plan.exp, "writer"), scheduling_strategy=here,
                                          max_restarts=3, max_task_retries=3, runtime_env={"env_vars": worker_env()})
    return cls.remote(str(plan.exp.out_path), list(plan.exp.fields))


def _summary(plan: Plan, writer: Any, timings: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The run's summary, computed where the results are (the writer), or here when nothing was computed.

    An unchanged rerun is summarised again too (its analysis settings may differ), with no timings.
    """
    exp = plan.exp
    if writer is None:
        return summarize_folder(plan.results, exp.model_dump_json(), timings)
    return ray.get(writer.summarize.remote(timings, exp.model_dump_json()))
