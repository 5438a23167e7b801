"""``invoicelab plan``: what a run would do, told before anything starts.

For each variant: rows expected, rows already in the run's dataset, rows reusable from earlier
runs in the store, rows to compute; what each actor reserves and how many actors; whether the
cluster can hold the pool, with the numbers when it cannot.
"""

from __future__ import annotations

import ray

from invoicelab.config import Experiment
from invoicelab.orchestrator.cluster import connect
from invoicelab.orchestrator.pipeline import check_fits, prepare
from invoicelab.orchestrator.resources import demand, fit_problem


def describe(exp: Experiment) -> tuple[list[str], bool]:
    """Lines of the plan, and whether every pool that has work can run on the cluster."""
    plan = prepare(exp)
    connect(exp.ray)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    total = {k: sum(n.get(k, 0.0) for n in nodes) for k in ("CPU", "GPU")}
    lines = [f"experiment {exp.name!r}: {len(plan.docs)} documents, results in {plan.results}/",
             f"cluster: {len(nodes)} node(s), CPU={total['CPU']:g}, GPU={total['GPU']:g}",
             f"{'variant':<24} {'rows':>7} {'in run':>7} {'reusable':>8} {'to do':>7}  per actor x actors  fits"]
    for v in plan.variants:
        res = v.variant.resources
        need = ", ".join(f"{k}={x:g}" for k, x in demand(res).items())
        problem = fit_problem(v.variant.name, res, nodes) if v.todo else None
        lines.append(f"{v.variant.name:<24} {len(v.expected):>7} {v.in_run:>7} {v.reused:>8} {len(v.todo):>7}  "
                     f"{need} x {res.actors}  {'no' if problem else 'yes'}")
    if plan.retired:
        lines.append(f"{plan.retired} rows of an earlier config will move to superseded/")
    problems = check_fits(plan)
    lines += [f"cannot run: {p}" for p in problems]
    return lines, not problems
