"""``invoicelab plan``: what a run would do, told before anything starts.

The prompts it uses (listed, and generated from a prompt set). For each variant: rows expected,
rows already in the run's dataset, rows reusable from earlier runs in the store, rows to compute;
what each actor reserves and how many actors; whether the cluster can hold the pool, with the
numbers when it cannot.
"""

from __future__ import annotations

import ray

from invoicelab.config import AXES, Experiment
from invoicelab.orchestrator.cluster import connect
from invoicelab.orchestrator.pipeline import check_fits, prepare
from invoicelab.orchestrator.plan import Plan
from invoicelab.orchestrator.resources import demand, fit_problem
from invoicelab.prompt_sets import variant_table


def describe(exp: Experiment) -> tuple[list[str], bool]:
    """Lines of the plan, and whether every pool that has work can run on the cluster."""
    plan = prepare(exp)
    connect(exp.ray)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    total = {k: sum(n.get(k, 0.0) for n in nodes) for k in ("CPU", "GPU")}
    lines = [f"experiment {exp.name!r}: {len(plan.docs)} documents, results in {plan.results}/",
             *_prompt_lines(plan),
             f"cluster: {len(nodes)} node(s), CPU={total['CPU']:g}, GPU={total['GPU']:g}",
             f"{'variant':<24} {'rows':>7} {'in run':>7} {'reusable':>8} {'to do':>7}  per actor x actors  fits"]
    for v in plan.variants:
        res = v.variant.resources
        need = ", ".join(f"memory={x / 2**30:g}GiB" if k == "memory" else f"{k}={x:g}"
                         for k, x in demand(res).items())
        problem = fit_problem(v.variant.name, res, nodes) if v.todo else None
        lines.append(f"{v.variant.name:<24} {len(v.expected):>7} {v.in_run:>7} {v.reused:>8} {len(v.todo):>7}  "
                     f"{need} x {res.actors}  {'no' if problem else 'yes'}")
    autos = [v.variant.name for v in plan.variants if "auto" in (v.variant.batch_size,
                                                                  getattr(v.variant, "max_num_seqs", None))]
    if autos:
        lines.append(f"batch sizes of {', '.join(autos)}: auto (a saved profile, or probed when the run starts; "
                     "`invoicelab tune` to see them now)")
    if plan.retired:
        lines.append(f"{plan.retired} rows of an earlier config will move to superseded/")
    problems = check_fits(plan)
    lines += [f"cannot run: {p}" for p in problems]
    return lines, not problems


def _prompt_lines(plan: Plan) -> list[str]:
    """The prompts the run uses: listed ones by id, generated ones counted with their set and a few ids."""
    prompts = {pid: p for v in plan.variants for pid, p in v.prompts.items() if p is not None}
    listed = [pid for pid, p in prompts.items() if not p.axes]
    generated = [pid for pid, p in prompts.items() if p.axes]
    lines = [f"prompts: {', '.join(listed)}"] if listed else []
    if generated:
        spec = plan.exp.prompt_set
        table = variant_table([prompts[pid] for pid in generated], plan.exp.fields)
        varied = [axis for axis in AXES if len({row[axis] for row in table}) > 1]
        lines.append(f"prompt set {spec.base!r}: {len(generated)} generated prompts varying {', '.join(varied) or '-'}; "
                     f"baseline {spec.baseline or generated[0]}")
        lines += [f"  {row['prompt']}  {row['prompt_hash']}" for row in table[:4]]
        lines += [f"  ... and {len(table) - 4} more"] if len(table) > 4 else []
    return lines
