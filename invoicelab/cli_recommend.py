"""The configuration-choosing commands: ``invoicelab recommend`` and ``invoicelab init``.

Part of the command line (``cli`` registers them): parses arguments, describes the hardware at hand (this
machine, a Ray cluster with ``--address``, or one described by flags), calls ``invoicelab.recommend`` and
``invoicelab.templates_hw``, prints, and exits. Exit codes of ``recommend``: 0 a recommendation, 1 no measured
configuration meets the constraints (the near misses and what each fails are printed), 2 a bad argument or
no history. ``init``: 0 written, 2 unknown template, existing file or invalid result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from invoicelab.config import ConfigError


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _accuracy_limits(values: tuple[str, ...]) -> dict[str, float]:
    limits = {}
    for item in values:
        field, _, value = item.partition("=")
        try:
            limits[field.strip()] = float(value)
        except ValueError:
            _fail(f"--min-accuracy {item!r}: give FIELD=VALUE, e.g. total=0.9 (field 'all': every field together)")
        if not field.strip() or not 0 <= limits[field.strip()] <= 1:
            _fail(f"--min-accuracy {item!r}: the field must be named and the value within 0..1")
    return limits


def _cluster_hardware(address: str) -> dict[str, Any]:
    """CPUs, memory and GPUs of a running Ray cluster (``ray.cluster_resources``)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    res = ray.cluster_resources()
    kinds = [k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")]
    gpus = int(res.get("GPU", 0))
    return {"cpus": res.get("CPU", 0), "memory_bytes": res.get("memory"), "processor": "ray cluster",
            "gpus": [kinds[0] if kinds else "GPU"] * gpus}


def hardware_at_hand(address: str | None, cpus: float | None, memory_gb: float | None, gpus: int | None,
                     gpu_memory_gb: float | None, gpu_name: str | None) -> dict[str, Any]:
    """This machine (or the Ray cluster at ``address``), with any of the flags' values put over it."""
    from invoicelab.report import hardware

    if address:
        hw = _cluster_hardware(address)
    else:
        hw = hardware()  # with this machine's GPU names and one GPU's memory (nvidia-smi)
    if cpus is not None:
        hw["cpus"] = cpus
    if memory_gb is not None:
        hw["memory_bytes"] = memory_gb * 1e9
    if gpus is not None or gpu_name is not None:
        count = gpus if gpus is not None else len(hw.get("gpus") or [])
        name = gpu_name or ((hw.get("gpus") or ["GPU"])[0])
        hw["gpus"] = [name] * count
    if gpu_memory_gb is not None:
        hw["gpu_memory_bytes"] = gpu_memory_gb * 1e9
    return hw


@click.command("recommend")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="The results store (the folder holding history.duckdb).")
@click.option("--min-accuracy", "min_accuracy", multiple=True, metavar="FIELD=VALUE",
              help="Lowest accuracy of a field (repeatable); field 'all' is every field together.")
@click.option("--max-memory-gb", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Highest peak memory of one actor, GB (GPU memory for GPU variants).")
@click.option("--max-cost-per-1000", type=click.FloatRange(min=0), default=None, help="Highest cost per 1,000 documents.")
@click.option("--min-docs-per-s", type=click.FloatRange(min=0), default=None,
              help="Lowest docs/s of the variant's whole pool on this cluster.")
@click.option("--dataset", default=None, help="Only evidence from datasets matching this (substring).")
@click.option("--name", default=None, help="Only evidence from experiments whose name contains this.")
@click.option("--prefer", type=click.Choice(["accuracy", "speed", "cost"]), default="accuracy", show_default=True,
              help="Among configurations that meet everything, which comes first.")
@click.option("--cpu-hour", type=click.FloatRange(min=0), default=None, help="Price of a CPU-hour to cost every run with.")
@click.option("--gpu-hour", type=click.FloatRange(min=0), default=None, help="Price of a GPU-hour to cost every run with.")
@click.option("--address", default=None, help="Recommend for this running Ray cluster (default: this machine).")
@click.option("--cpus", type=click.FloatRange(min=1), default=None, help="Recommend for this many CPUs instead.")
@click.option("--memory-gb", type=click.FloatRange(min=0, min_open=True), default=None, help="... this much memory.")
@click.option("--gpus", type=click.IntRange(min=0), default=None, help="... this many GPUs.")
@click.option("--gpu-memory-gb", type=click.FloatRange(min=0, min_open=True), default=None, help="... GB per GPU.")
@click.option("--gpu-name", default=None, help="... GPUs of this model (as nvidia-smi names it).")
@click.option("--json", "as_json", is_flag=True, help="Print the recommendation as JSON.")
def recommend_cmd(store: Path, min_accuracy: tuple[str, ...], max_memory_gb: float | None,
                  max_cost_per_1000: float | None, min_docs_per_s: float | None, dataset: str | None,
                  name: str | None, prefer: str, cpu_hour: float | None, gpu_hour: float | None, address: str | None,
                  cpus: float | None, memory_gb: float | None, gpus: int | None, gpu_memory_gb: float | None,
                  gpu_name: str | None, as_json: bool) -> None:
    """Recommend a variant, prompt, batch size and actors for this hardware from the runs recorded in STORE.

    Exit 0 with a recommendation; 1 when no measured configuration meets the constraints (the near
    misses are printed with the constraint each fails); 2 on a bad argument or an empty store.
    """
    from invoicelab.recommend import Constraints, recommend

    if not (store / "history.duckdb").is_file():
        _fail(f"no history in {store} (history.duckdb is written at the end of each run; run an experiment first)")
    cons = Constraints(min_accuracy=_accuracy_limits(min_accuracy),
                       max_memory_bytes=max_memory_gb * 1e9 if max_memory_gb else None,
                       max_cost_per_1000=max_cost_per_1000, min_docs_per_s=min_docs_per_s, dataset=dataset,
                       name=name, prefer=prefer, cpu_hour=cpu_hour, gpu_hour=gpu_hour)
    hw = hardware_at_hand(address, cpus, memory_gb, gpus, gpu_memory_gb, gpu_name)
    rec = recommend(store, hw, cons)
    if not rec.candidates:
        _fail(f"no recorded run in {store} matches (--dataset {dataset!r}, --name {name!r})")
    if as_json:
        click.echo(json.dumps(rec.to_dict(), indent=2, default=str))
    else:
        click.echo("\n".join(format_recommendation(rec.to_dict(), cons.min_accuracy)))
    sys.exit(0 if rec.choice else 1)


def _arm_lines(c: dict[str, Any], fields: dict[str, float]) -> list[str]:
    def num(x: Any, fmt: str) -> str:
        return "-" if x is None else fmt.format(x)

    shown = list(fields) or ["all"]
    acc = "; ".join(f"{f} {a['value']:.3f} [{a['low']:.2f}, {a['high']:.2f}] n={a['n']}"
                    for f in shown if (a := c["accuracy"].get(f)))
    where = "this hardware" if c["same_hardware"] else f"OTHER hardware: {c['hardware']}"
    return [
        (f"  {c['variant']} with prompt {c['prompt']}: model {c.get('model') or '-'}, precision "
         f"{c.get('precision') or '-'}, backend {c.get('backend') or '-'}"),
        (f"    batch_size {num(c.get('batch_size'), '{}')} (micro-batch used {num(c.get('micro_batch'), '{}')}), "
         f"actors {c['actors']} ({c['actors_bound']})"),
        (f"    docs/s {num(c.get('docs_per_s'), '{:.3g}')} per actor, {num(c.get('pool_docs_per_s'), '{:.3g}')} for "
         f"the pool; peak memory {num((c.get('peak_memory_bytes') or 0) / 1e9 or None, '{:.2f} GB')}; cost per "
         f"1,000 docs {num(c.get('cost_per_1000'), '{:.4g}')}"),
        f"    accuracy (95% Wilson interval): {acc or '-'}",
        (f"    evidence: run {c['run_id']} ({c['dataset']}, {c.get('docs')} documents, {c['finished_at']}), "
         f"measured on {where}"),
    ]


def format_recommendation(rec: dict[str, Any], fields: dict[str, float]) -> list[str]:
    """Lines for the terminal: the choice with its evidence, or a plain 'nothing meets' with the near misses."""
    lines = [f"cluster: {rec['cluster']} ({rec['candidates']} measured configurations in the store)"]
    if rec["choice"]:
        lines += ["recommendation:", *_arm_lines(rec["choice"], fields)]
        if rec["alternatives"]:
            lines.append("also meeting the constraints:")
            lines += [f"  {c['variant']}/{c['prompt']} (run {c['run_id']})" for c in rec["alternatives"]]
    else:
        lines.append("NO measured configuration meets the constraints. Nearest misses:")
        for c in rec["near_misses"]:
            lines.append(f"  {c['variant']}/{c['prompt']} (run {c['run_id']}) fails: {'; '.join(c['failures'])}")
    if rec["next_experiments"]:
        lines += ["next experiment:" if rec["choice"] else "what to try:", *[f"  - {s}" for s in rec["next_experiments"]]]
    lines += [f"note: {n}" for n in rec["notes"]]
    return lines


@click.command("init")
@click.option("--template", "template", default=None, help="The hardware template (omit to list them).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File to write (default: <name>.yaml here).")
@click.option("--dataset", default=None, help="A folder of documents with gt.jsonl, or a URI (default: synthetic).")
@click.option("--name", "experiment_name", default=None, help="The experiment's name (default: the template's).")
@click.option("--force", is_flag=True, help="Overwrite --out when it exists.")
def init_cmd(template: str | None, out: Path | None, dataset: str | None, experiment_name: str | None,
             force: bool) -> None:
    """Write a starting experiment from a hardware template (configs/templates/); without --template, list them."""
    from invoicelab.templates_hw import available, template_path, write_from_template

    if template is None:
        click.echo("templates (invoicelab init --template NAME):")
        for name in available():
            first = template_path(name).read_text(encoding="utf-8").splitlines()
            what = next((line[2:] for line in first if line.startswith("# Hardware template:")), "")
            click.echo(f"  {name:<12} {what.removeprefix('Hardware template: ')}")
        return
    out = out or Path(f"{experiment_name or template}.yaml")
    try:
        written = write_from_template(template, out, dataset, experiment_name, force)
    except ConfigError as err:
        _fail(str(err))
    click.echo(f"wrote {written} from template {template}; next: invoicelab plan {written}")


COMMANDS = [recommend_cmd, init_cmd]
