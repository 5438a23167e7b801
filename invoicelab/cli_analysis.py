"""The analysis commands: ``invoicelab report | history | compare | plan-ab``.

Part of the command line (``cli`` registers them): parses arguments, calls library functions, prints,
and exits 2 on a bad argument or folder. Heavy libraries are imported inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from invoicelab.config import ConfigError

RUN_DIR = click.Path(file_okay=False, exists=True, path_type=Path)


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.command("report")
@click.argument("run_dir", type=RUN_DIR)
@click.option("--no-history", is_flag=True, help="Do not record the run in the history (only write the files).")
def report_cmd(run_dir: Path, no_history: bool) -> None:
    """Analyse RUN_DIR again and write its summary.json and self-contained report.html."""
    from invoicelab.report import publish, show
    from invoicelab.runs import experiment_of, summary_of

    try:
        exp = experiment_of(run_dir)
        summary = summary_of(run_dir)
    except ConfigError as err:
        _fail(str(err))
    exp = exp.model_copy(update={"analysis": exp.analysis.model_copy(
        update={"report": True, "history": exp.analysis.history and not no_history, "mlflow": None})})
    done = publish(run_dir, summary, exp)
    show(summary)
    click.echo(f"report: {done['report']}")


STORE = click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                     show_default=True, help="The results store (the folder holding history.duckdb).")


@click.command("history")
@STORE
@click.option("--model", default=None, help="Only variants whose model, variant name or precision contains this.")
@click.option("--prompt", default=None, help="Only this prompt (substring).")
@click.option("--field", default=None, help="Only this field (substring; 'all' is every field together).")
@click.option("--dataset", default=None, help="Only datasets matching this (substring).")
@click.option("--name", default=None, help="Only experiments whose name contains this.")
def history_cmd(store: Path, model: str | None, prompt: str | None, field: str | None, dataset: str | None,
                name: str | None) -> None:
    """A timeline of recorded runs: accuracy per variant, prompt and field, newest first."""
    from invoicelab.history import format_history, history

    if not (store / "history.duckdb").is_file():
        _fail(f"no history in {store} (history.duckdb is written at the end of each run)")
    frame = history(store, model=model, prompt=prompt, field=field, dataset=dataset, name=name)
    click.echo("\n".join(format_history(frame)))


@click.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@STORE
@click.option("--n-boot", type=click.IntRange(min=100), default=None, help="Bootstrap resamples (default: run A's).")
def compare_cmd(run_a: str, run_b: str, store: Path, n_boot: int | None) -> None:
    """Paired comparison of two runs (folders or history run ids) on the documents both have: B - A."""
    from invoicelab.history import resolve_run
    from invoicelab.report import make_console, tests_table
    from invoicelab.runs import compare_runs
    from invoicelab.views import method_name

    try:
        run_a, run_b = resolve_run(store, run_a), resolve_run(store, run_b)
        result = compare_runs(run_a, run_b, n_boot)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
    console = make_console()
    console.print(f"A = {run_a}\nB = {run_b}\n{result['documents']} shared documents")
    console.print(tests_table({**result, "correction_name": method_name(result["correction"])}, "B against A"))


@click.command("plan-ab")
@click.argument("pilot", type=RUN_DIR, required=False)
@click.option("--a-only", type=click.FloatRange(0, 1), default=None,
              help="Share of documents only A gets right (without a PILOT run).")
@click.option("--b-only", type=click.FloatRange(0, 1), default=None, help="Share of documents only B gets right.")
@click.option("--power", type=click.FloatRange(0.5, 0.999), default=0.8, show_default=True)
@click.option("--alpha", type=click.FloatRange(0.0001, 0.5), default=0.05, show_default=True)
@click.option("--tests", "n_tests", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tests the decision is corrected over (alpha is divided by this, Bonferroni-style, to stay safe).")
def plan_ab_cmd(pilot: Path | None, a_only: float | None, b_only: float | None, power: float, alpha: float,
                n_tests: int) -> None:
    """Documents needed for an exact McNemar test to detect a difference, from pilot discordance rates.

    Give --a-only and --b-only, or a PILOT run folder whose paired tests supply them per field.
    """
    from invoicelab.stats import documents_needed

    level = alpha / n_tests
    if pilot is None:
        if a_only is None or b_only is None:
            _fail("give --a-only and --b-only, or a PILOT run folder")
        click.echo(_plan_line("given rates", a_only, b_only, power, level, documents_needed))
        return
    from invoicelab.runs import summary_of

    try:
        tests = summary_of(pilot).get("tests", [])
    except ConfigError as err:
        _fail(str(err))
    if not tests:
        _fail(f"{pilot} has no paired tests (a prompt, quantization or model experiment has them)")
    click.echo(f"alpha {alpha} over {n_tests} test(s): {level:.4g} per test; power {power}")
    for t in tests:
        if t["field"] == "all" or not t["n"]:
            continue
        label = f"{t['a']} vs {t['b']} {t['field']} (pilot n={t['n']})"
        click.echo(_plan_line(label, t["a_only"] / t["n"], t["b_only"] / t["n"], power, level, documents_needed))


def _plan_line(label: str, a_only: float, b_only: float, power: float, alpha: float, needed) -> str:
    head = f"{label}: A only {a_only:.1%}, B only {b_only:.1%}"
    try:
        return f"{head} -> {needed(a_only, b_only, power=power, alpha=alpha)} documents"
    except ValueError as err:
        return f"{head} -> cannot plan: {err}"


COMMANDS = [report_cmd, history_cmd, compare_cmd, plan_ab_cmd]
