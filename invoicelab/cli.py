"""The command line: ``invoicelab run | plan | generate | schema | show | models``, and analysis commands.

The analysis commands (``report``, ``history``, ``compare``, ``plan-ab``) live in ``cli_analysis``, the
prompt workbench (``prompts list | show | render | diff | new | edit | log``) in ``cli_prompts``.

Parses arguments into typed config objects and hands them to library functions; the only place
that calls ``sys.exit``. Exit codes: 0 done, 2 bad config or dataset (nothing started), 1 other.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from invoicelab.config import ConfigError, SyntheticSpec, json_schema, load_experiment, parse_experiment


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """invoicelab: which model, quantization, prompt and batch size extract invoice fields best."""


def _load(config: Path | None, resume: Path | None, overrides: list[str], address: str | None):
    """The experiment of CONFIG, or the one a run folder was started with (``--resume``)."""
    extra = [f"ray.address={address}"] if address else []
    if resume is not None:
        saved = resume / "experiment.json"
        if not saved.is_file():
            raise ConfigError(f"--resume {resume}: no experiment.json in it (not a run folder)")
        data = json.loads(saved.read_text(encoding="utf-8"))
        data["output_dir"] = str(resume.resolve())
        return parse_experiment(data, overrides + extra)
    if config is None:
        raise ConfigError("give a CONFIG file, or --resume RUN_DIR")
    return load_experiment(config, overrides + extra)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Override a config field, e.g. --set variants.0.batch_size=8 (repeatable).")
@click.option("--address", default=None, help="Ray cluster to join (default: start a local one).")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Finish the run in this folder (after a crash or a kill): computes only the missing rows.")
@click.option("--dry-run", is_flag=True, help="Print the plan (see `invoicelab plan`) and start nothing.")
def run(config: Path | None, overrides: tuple[str, ...], address: str | None, resume: Path | None,
        dry_run: bool) -> None:
    """Run the experiment in CONFIG (rows already in the result store are not computed again)."""
    from invoicelab.data.documents import DatasetError

    if dry_run:
        return _plan(config, resume, list(overrides), address)
    try:
        exp = _load(config, resume, list(overrides), address)
        from invoicelab.orchestrator.pipeline import run_experiment
        from invoicelab.report import make_console, publish, show

        console = make_console()
        start = time.perf_counter()
        with _RichProgress(console) as progress:
            result = run_experiment(exp, progress)
        result.summary["run_s"] = time.perf_counter() - start
        done = publish(result.out_dir, result.summary, exp)
    except (ConfigError, DatasetError) as err:
        _fail(str(err))
    show(result.summary, console)
    console.print(f"results: {result.results}/  ({result.summary['computed_rows']} rows computed, "
                  f"{result.summary['reused_rows']} reused from earlier runs)\nsummary: {done['summary']}\n"
                  + (f"report:  {done['report']}\n" if "report" in done else "")
                  + f"run time: {result.summary['run_s']:.1f} s")


@main.command("plan")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE", help="Override a config field.")
@click.option("--address", default=None, help="Ray cluster to plan for (default: a local one).")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Plan the rest of the run in this folder.")
def plan_cmd(config: Path | None, overrides: tuple[str, ...], address: str | None, resume: Path | None) -> None:
    """Print what a run would do: rows to compute and already stored, resources, whether they fit."""
    _plan(config, resume, list(overrides), address)


def _plan(config: Path | None, resume: Path | None, overrides: list[str], address: str | None) -> None:
    from invoicelab.data.documents import DatasetError

    try:
        exp = _load(config, resume, overrides, address)
        from invoicelab.orchestrator.describe import describe

        lines, ok = describe(exp)
    except (ConfigError, DatasetError) as err:
        _fail(str(err))
    click.echo("\n".join(lines))
    if not ok:
        sys.exit(2)


@main.command()
@click.option("--n", "n", type=click.IntRange(min=1), default=16, show_default=True, help="Invoices to generate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Generator seed (same seed, same files).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--dpi", type=int, default=100, show_default=True)
@click.option("--rotation", type=float, default=0.0, show_default=True, help="Max rotation in degrees.")
@click.option("--blur", type=float, default=0.0, show_default=True, help="Max Gaussian blur radius.")
@click.option("--noise", type=float, default=0.0, show_default=True, help="Max noise amplitude (0..0.5).")
@click.option("--jpeg-quality", type=int, default=90, show_default=True)
def generate(n: int, seed: int, out: Path, dpi: int, rotation: float, blur: float, noise: float,
             jpeg_quality: int) -> None:
    """Write N synthetic invoice images and their gt.jsonl to OUT."""
    from pydantic import ValidationError

    from invoicelab.data.synthetic import generate as make

    try:
        spec = SyntheticSpec(dpi=dpi, rotation=rotation, blur=blur, noise=noise, jpeg_quality=jpeg_quality)
    except ValidationError as err:
        _fail("; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()))
    manifest = make(out, n=n, seed=seed, spec=spec)
    click.echo(f"wrote {n} invoices and {manifest}")


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSON schema here (default: print it).")
def schema(out: Path | None) -> None:
    """The experiment config's JSON schema, for editors."""
    text = json.dumps(json_schema(), indent=2)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote {out}")
    else:
        click.echo(text)


@main.command("tune")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE", help="Override a config field.")
@click.option("--address", default=None, help="Ray cluster to tune on (default: start a local one).")
@click.option("--variant", "only", multiple=True, help="Tune only this variant (repeatable; default: all).")
@click.option("--retune", is_flag=True, help="Probe again even where a profile for the same key is saved.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def tune_cmd(config: Path, overrides: tuple[str, ...], address: str | None, only: tuple[str, ...], retune: bool,
             as_json: bool) -> None:
    """Find each variant's batch size on this hardware: probe growing micro-batches on the experiment's own
    documents (docs/s and peak memory), stop at the plateau or the memory limit, save the profile that
    `batch_size: auto` then uses. The probes' answers are written as the run's result rows."""
    from dataclasses import asdict

    from invoicelab.data.documents import DatasetError

    try:
        exp = _load(config, None, list(overrides) + ([f"ray.address={address}"] if address else []), None)
        from invoicelab.orchestrator.pipeline import tune_experiment

        tuned = tune_experiment(exp, list(only), retune)
    except (ConfigError, DatasetError) as err:
        _fail(str(err))
    if as_json:
        click.echo(json.dumps([asdict(t) for t in tuned], indent=2, default=str))
        return
    for t in tuned:
        rate = f"{t.docs_per_s:.3f} docs/s" if t.docs_per_s else "docs/s unknown"
        click.echo(f"{t.variant}: micro-batch {t.micro_batch}, batch {t.batch_size}, {rate} ({t.source}: {t.reason})")
        if t.why_probed:
            click.echo(f"  probed because: {t.why_probed}; took {t.tuning_s:.1f} s, answering {t.answered} "
                       f"documents ({t.rows_kept} kept as result rows: `invoicelab run` will not compute them again)")
        for p in t.probes:
            peak = f"{p['peak_bytes'] / 2**30:.2f} GiB" if p.get("peak_bytes") else "-"
            state = "out of memory" if p["out_of_memory"] else f"{p['docs_per_s']:.3f} docs/s"
            click.echo(f"  {p['size']:>5}  {state:<16} peak {peak:<10} {p['note']}")
        if t.profile:
            click.echo(f"  profile: {t.profile}")


@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
def models_cmd(as_json: bool) -> None:
    """Backends, precisions, OCR engines and bundled models, and what this machine supports."""
    from invoicelab.backends.catalog import catalog

    info = catalog()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    m = info["machine"]
    click.echo(f"machine: {m['cpus']} CPUs, GPUs: {', '.join(m['gpus']) or 'none'}\n\nbackends:")
    width = max(len(b["here"]) for b in info["backends"])
    for b in info["backends"]:
        click.echo(f"  {b['backend']:<17} {b['here']:<{width}}  {b['what']}")
    click.echo("\nprecisions (transformers backends):        cpu | cuda")
    for p in info["precisions"]:
        click.echo(f"  {p['precision']:<17} {p['cpu']:<24} | {p['cuda']}")
    click.echo("\nOCR engines:")
    for name, status in info["ocr_engines"].items():
        click.echo(f"  {name:<17} {status}")
    click.echo("\nbundled models:")
    for name, status in info["bundled_models"].items():
        click.echo(f"  {name:<22} {status}")


@main.command("show")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
def show_run(run_dir: Path) -> None:
    """Print the tables of a finished run from its summary.json."""
    from invoicelab.report import show

    path = run_dir / "summary.json"
    if not path.is_file():
        _fail(f"no summary.json in {run_dir}")
    show(json.loads(path.read_text(encoding="utf-8")))


class _RichProgress:
    """One progress bar per stage (the page stage and each variant), all moving at once."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bars = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=console, transient=False)
        self.tasks: dict[str, object] = {}

    def __enter__(self):
        self.bars.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bars.__exit__(*exc)

    def add(self, name: str, total: int, done: int = 0) -> None:
        self.tasks[name] = self.bars.add_task(name, total=total, completed=done)

    def advance(self, name: str, n: int) -> None:
        self.bars.advance(self.tasks[name], n)


def _register() -> None:
    from invoicelab import cli_analysis, cli_prompts, cli_recommend

    for command in [*cli_analysis.COMMANDS, *cli_prompts.COMMANDS, *cli_recommend.COMMANDS]:
        main.add_command(command)


_register()

if __name__ == "__main__":
    main()
