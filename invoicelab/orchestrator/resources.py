"""A stage's resource settings as Ray arguments: the only place they are translated.

Also the feasibility check that refuses, before anything starts, a pool the cluster can never
hold, with the numbers (asked vs the cluster's total and its largest node).
"""

from __future__ import annotations

from typing import Any

from invoicelab.config import FaultSpec, ResourceSpec

ACCELERATOR_PREFIX = "accelerator_type:"
"""Ray advertises a node's accelerator type as a tiny custom resource with this prefix."""


def actor_options(res: ResourceSpec, faults: FaultSpec, name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``ActorClass.options(...)`` for one actor of a pool: reservation, bounded restarts, name, env vars.

    Task retries are 0: the orchestrator retries itself (splitting a batch whose worker died), so
    a document that kills its worker can never be retried forever.
    """
    options: dict[str, Any] = {
        "num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "max_restarts": faults.max_restarts,
        "max_task_retries": 0, "name": name,
    }
    if res.accelerator_type:
        options["accelerator_type"] = res.accelerator_type
    if res.custom:
        options["resources"] = dict(res.custom)
    if res.memory_gb:
        options["memory"] = memory_bytes(res)
    if env:
        options["runtime_env"] = {"env_vars": dict(env)}
    return options


def memory_bytes(res: ResourceSpec) -> int:
    """``memory_gb`` in bytes (Ray's ``memory`` resource is counted in bytes)."""
    return int((res.memory_gb or 0) * 2**30)


def task_options(res: ResourceSpec, env: dict[str, Any] | None = None) -> dict[str, Any]:
    """``remote_function.options(...)`` of a short task that must run where one of the pool's actors could
    (same GPUs, accelerator type and custom resources; no CPU held), e.g. to check a library is there."""
    options: dict[str, Any] = {"num_cpus": 0, "num_gpus": res.num_gpus, "max_retries": 0}
    if res.accelerator_type:
        options["accelerator_type"] = res.accelerator_type
    if res.custom:
        options["resources"] = dict(res.custom)
    if env:
        options["runtime_env"] = env
    return options


def demand(res: ResourceSpec) -> dict[str, float]:
    """What one actor reserves, in Ray's resource names."""
    need = {"CPU": res.num_cpus, **res.custom}
    if res.memory_gb:
        need["memory"] = float(memory_bytes(res))
    if res.num_gpus:
        need["GPU"] = res.num_gpus
    if res.accelerator_type:
        need[ACCELERATOR_PREFIX + res.accelerator_type] = 0.001
    return need


def fit_problem(label: str, res: ResourceSpec, nodes: list[dict[str, float]]) -> str | None:
    """Why a pool can never run on a cluster of ``nodes`` (their total resources), or None if it can.

    One actor must fit on one node, and the whole pool in the cluster's total.
    """
    one = demand(res)
    if not any(all(node.get(k, 0.0) >= v for k, v in one.items()) for node in nodes):
        largest = {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in one}
        return (f"{label}: one actor asks for {_fmt(one)} but no node has that much "
                f"(largest node: {_fmt(largest)}; {len(nodes)} node(s))")
    total = {k: sum(n.get(k, 0.0) for n in nodes) for k in one}
    pool = {k: v * res.actors for k, v in one.items()}
    short = {k: v for k, v in pool.items() if v > total[k] + 1e-9}
    if short:
        return (f"{label}: {res.actors} actors ask for {_fmt(pool)} in all but the cluster's total is "
                f"{_fmt(total)}")
    return None


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(resources.items()))
