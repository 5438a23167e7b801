"""Writing and showing a run's summary: summary.json and the terminal tables.

The only module that writes report files. Tables are built from the summary dict that
``analysis.summarize`` returns; nothing here computes a statistic.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

log = logging.getLogger(__name__)


def write_summary(summary: dict[str, Any], out_dir: Path) -> Path:
    path = Path(out_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _num(x: Any, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _mib(x: Any) -> str:
    return "-" if not x else f"{x / 2**20:.0f} MiB"


def _ci(t: dict[str, Any], key: str = "diff", low: str = "low", high: str = "high") -> str:
    if t.get(key) is None:
        return "-"
    return f"{t[key]:+.0%} [{t[low]:+.0%}, {t[high]:+.0%}]" if t.get(low) is not None else f"{t[key]:+.0%}"


def _p(x: Any) -> str:
    return "-" if x is None else ("<0.001" if x < 0.001 else f"{x:.3f}")


def accuracy_table(summary: dict[str, Any]) -> Table:
    """Per (variant, prompt): accuracy per field and overall (names defined in the README), errors and speed.

    Precision, recall and ANLS similarity are in summary.json and the HTML report; the terminal keeps to what fits.
    """
    fields, kind = summary["fields"], summary["kind"]
    table = Table(title=f"{summary.get('name', '')}: field accuracy ({kind} view, {summary['documents']} documents)")
    cols = ["variant", "prompt", *fields, "accuracy", "field mean", "exact", "model only", "fallback", "F1",
            "doc acc", "errors", "s/doc", "memory"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("variant", "prompt") else "right")
    for r in summary["rows"]:
        table.add_row(r["variant"], r["prompt"], *[_pct(r.get(f)) for f in fields], _pct(r.get("accuracy")),
                      _pct(r.get("field_mean")), _pct(r.get("exact")), _pct(r.get("model_accuracy")),
                      _pct(r.get("fallback_share")), _num(r.get("f1")), _pct(r.get("doc_accuracy")),
                      str(int(r["errors"])), _num(r.get("latency_s")), _mib(r.get("memory_bytes")))
    return table


def strict_table(summary: dict[str, Any]) -> Table:
    """The sroie-strict profile: whole-string matches, precision over predicted values, recall over the truth."""
    fields = summary["fields"]
    table = Table(title="sroie-strict (SROIE Task 3 protocol: a value is right only when its whole text matches)")
    for col in ["variant", "prompt", *fields, "precision", "recall", "F1", "doc acc"]:
        table.add_column(col, justify="left" if col in ("variant", "prompt") else "right")
    for r in summary["rows"]:
        s = r.get("strict") or {}
        table.add_row(r["variant"], r["prompt"], *[_pct(s.get(f)) for f in fields], _num(s.get("precision")),
                      _num(s.get("recall")), _num(s.get("f1")), _pct(s.get("doc_accuracy")))
    return table


def frontier_table(summary: dict[str, Any]) -> Table:
    """Accuracy against speed, memory and cost; * marks the Pareto set."""
    table = Table(title="quantization frontier (* = Pareto: nothing else is as good on every axis and better on one)")
    for col in ["", "variant", "prompt", "accuracy", "docs/s", "peak memory", "cost/1,000 docs"]:
        table.add_column(col, justify="left" if col in ("variant", "prompt", "") else "right")
    for f in summary.get("frontier", []):
        table.add_row("*" if f["pareto"] else "", f["variant"], f["prompt"], _pct(f.get("accuracy")),
                      _num(f.get("docs_per_s"), "{:.3f}"), _mib(f.get("peak_memory_bytes")),
                      _num(f.get("cost_per_1000"), "{:.4f}"))
    return table


def tests_table(summary: dict[str, Any], title: str) -> Table:
    """Paired tests, B against A: counts, difference with its 95% interval, p and corrected p."""
    method = summary.get("correction_name", summary.get("correction", ""))
    table = Table(title=f"{title}: paired per document, model values only (exact McNemar per field, permutation "
                        f"for all fields; bootstrap 95% CI of B-A; p adjusted by {method})")
    for col in ["A", "B", "field", "n", "fallback excl.", "A only", "B only", "B-A [95% CI]", "p", "p adj.", ""]:
        table.add_column(col, justify="left" if col in ("A", "B", "field") else "right")
    for t in summary.get("tests", []):
        table.add_row(t["a"], t["b"], t["field"], str(t["n"]), str(t["excluded_fallback"]), str(t["a_only"]),
                      str(t["b_only"]), _ci(t), _p(t.get("p_value")), _p(t.get("p_adjusted")),
                      "significant" if t.get("significant") else "")
    return table


def ranking_table(summary: dict[str, Any]) -> Table:
    table = Table(title="model ranking by accuracy (bootstrap 95% CI over documents)")
    for col in ["rank", "variant", "prompt", "accuracy", "95% CI"]:
        table.add_column(col)
    for r in summary.get("ranking", []):
        ci = "-" if r.get("low") is None else f"[{r['low']:.0%}, {r['high']:.0%}]"
        table.add_row(str(r["rank"]), r["variant"], r["prompt"], _pct(r.get("accuracy")), ci)
    return table


ERROR_KINDS = ("right", "wrong", "missing", "invalid", "not_in_text", "error")


def errors_table(summary: dict[str, Any]) -> Table:
    """Where values go wrong: not_in_text = the truth never reached the model (fix OCR), invalid = unreadable
    for its type (fix prompt or format), wrong = a readable wrong value (fix model or prompt)."""
    table = Table(title="error breakdown per field (not_in_text: the truth is not in the text the model saw)")
    for col in ["variant", "prompt", "field", *ERROR_KINDS, "fallback"]:
        table.add_column(col, justify="left" if col in ("variant", "prompt", "field") else "right")
    for e in summary.get("errors", []):
        table.add_row(e["variant"], e["prompt"], e["field"], *[str(e.get(k, 0)) for k in ERROR_KINDS],
                      str(e.get("fallback", 0)))
    return table


def make_console() -> Console:
    """A console that does not squeeze the tables when output goes to a file or a pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def show(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print the run's tables, as its kind asks."""
    console = console or make_console()
    kind = summary["kind"]
    console.print(accuracy_table(summary))
    if "sroie-strict" in summary.get("profiles", []):
        console.print(strict_table(summary))
    if kind == "quantization":
        console.print(frontier_table(summary))
    if kind == "model":
        console.print(ranking_table(summary))
    if summary.get("tests"):
        console.print(tests_table(summary, {"prompt": "prompt A/B", "reference": f"against {summary.get('reference')}",
                                            "model": "model pairs"}.get(summary["tests"][0]["comparison"], "tests")))
    if kind == "extraction":
        console.print(errors_table(summary))
    for name, t in summary.get("timings", {}).items():
        if "rows" not in t:  # a page stage
            console.print(f"  {name}: {t['wall_s']:.1f} s wall")
            continue
        console.print(f"  {name}: {t['rows']} rows computed in {t['wall_s']:.1f} s wall "
                      f"({t['wall_docs_per_s']:.2f} rows/s incl. start-up), {t['filled']} filled as errors")


def publish(run_dir: Path, summary: dict[str, Any], experiment: Any) -> dict[str, str]:
    """Write summary.json and, as the experiment's ``analysis`` asks, report.html, history and MLflow.

    Args:
        run_dir: The run folder (holds results/).
        summary: ``analysis.summarize``'s dict, with ``name`` and ``run_s`` added by the caller.
        experiment: The validated ``Experiment``.

    Returns:
        What was written: ``{"summary": path, "report": path, "history": run id, "mlflow": run id}``.
    """
    from datetime import datetime, timezone

    a = experiment.analysis
    summary.setdefault("finished_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    summary.setdefault("hardware", hardware())
    done = {"summary": str(write_summary(summary, run_dir))}
    if a.history:
        from invoicelab.history import record_run

        try:
            done["history"] = record_run(experiment.store_path, run_dir, summary,
                                         experiment.model_dump(mode="json"), summary["hardware"])
        except Exception as err:  # noqa: BLE001 - a finished run stays finished when its history cannot be written
            log.warning("run not recorded in the history at %s: %s", experiment.store_path, err)
    if a.report:
        done["report"] = str(html_report(run_dir, summary, experiment))
    if a.mlflow is not None:
        from invoicelab.mlflow_log import log_run

        done["mlflow"] = log_run(summary, run_dir, a.mlflow.tracking_uri, a.mlflow.experiment or experiment.name)
    return done


REPORT_COLUMNS = ("doc_id", "variant", "prompt", "file", "raw_output", "error", "parse_error", "fallback_fields")


def html_report(run_dir: Path, summary: dict[str, Any], experiment: Any) -> Path:
    """report.html of a run: its summary, the worst cases (reads only the columns they need) and history trends."""
    from invoicelab import store
    from invoicelab.history import trend
    from invoicelab.report_html import write_html_report

    fields = list(experiment.fields)
    cols = [*REPORT_COLUMNS, *(f"{p}_{f}" for f in fields for p in ("pred", "gt", "truth", "score", "match"))]
    table = store.read_columns(store.results_dir(run_dir), cols)
    results = table.to_pandas() if table is not None else None
    arms = {(r["variant"], r["prompt"]) for r in summary["rows"]}
    try:
        history = trend(experiment.store_path)
        mine = [(v, p) in arms and str(r).startswith(f"{experiment.name}-")
                for v, p, r in zip(history["variant"], history["prompt"], history["run_id"])]
        history = history[mine]
    except Exception:  # noqa: BLE001 - a report without trends beats no report (e.g. no or a locked history file)
        history = None
    return write_html_report(Path(run_dir), summary, results, experiment.model_dump(mode="json"), history)


def hardware() -> dict[str, Any]:
    """CPUs, memory and GPUs (names, one GPU's memory) of this machine, for the history, the report and
    ``invoicelab recommend``."""
    import os
    import platform

    info: dict[str, Any] = {"cpus": os.cpu_count(), "machine": platform.machine(),
                            "processor": platform.processor() or platform.machine()}
    try:
        info["memory_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    found = local_gpus()
    info["gpus"] = [g["name"] for g in found]
    info["gpu_memory_bytes"] = found[0]["memory_bytes"] if found else None
    return info


def local_gpus() -> list[dict[str, Any]]:
    """This machine's GPUs (name, memory) from nvidia-smi; none when it is missing or fails."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        name, _, mib = line.rpartition(",")
        if name.strip():
            gpus.append({"name": name.strip(), "memory_bytes": float(mib) * 2**20 if mib.strip().isdigit() else None})
    return gpus
