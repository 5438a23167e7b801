"""Writing and showing a run's summary: summary.json and the terminal tables.

The only module that writes report files. Tables are built from the summary dict that
``analysis.summarize`` returns; nothing here computes a statistic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def write_summary(summary: dict[str, Any], out_dir: Path) -> Path:
    path = Path(out_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _num(x: Any, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def accuracy_table(summary: dict[str, Any]) -> Table:
    """Per (variant, prompt): accuracy per field, mean, F1, errors and speed."""
    fields, kind = summary["fields"], summary["kind"]
    table = Table(title=f"{summary.get('name', '')}: field accuracy ({kind} view, {summary['documents']} documents)")
    for col in ["variant", "prompt", *fields, "mean", "model only", "fallback", "F1", "errors", "s/doc"]:
        table.add_column(col, justify="left" if col in ("variant", "prompt") else "right")
    extra = []
    if kind == "quantization":
        extra = [("memory", lambda r: _num(r.get("memory_bytes") and r["memory_bytes"] / 2**20, "{:.0f} MiB")),
                 ("Δmean", lambda r: _num(r.get("delta_mean_vs_first"), "{:+.1%}"))]
    elif kind == "model":
        extra = [("Δmean", lambda r: _num(r.get("delta_mean_vs_first"), "{:+.1%}"))]
    for name, _ in extra:
        table.add_column(name, justify="right")
    rows = summary["rows"]
    if kind == "model":
        rows = sorted(rows, key=lambda r: -(r["mean"] or 0))
    for r in rows:
        table.add_row(r["variant"], r["prompt"], *[_pct(r.get(f)) for f in fields], _pct(r["mean"]),
                      _pct(r.get("model_mean")), _pct(r.get("fallback_share")), _num(r["f1"]), str(int(r["errors"])), _num(r["latency_s"]), *[fn(r) for _, fn in extra])
    return table


def prompt_test_table(summary: dict[str, Any]) -> Table:
    """Paired prompt comparison per field: who wins where, and whether it is more than chance."""
    table = Table(title="prompt A/B, paired per document (exact McNemar; bootstrap 95% CI of B-A)")
    for col in ["variant", "A", "B", "field", "n", "A only", "B only", "p", "B-A [95% CI]"]:
        table.add_column(col)
    for t in summary.get("prompt_tests", []):
        ci = f"{t['boot_diff']:+.0%} [{t['boot_low']:+.0%}, {t['boot_high']:+.0%}]" if t["n"] else "-"
        table.add_row(t["variant"], t["a"], t["b"], t["field"], str(t["n"]), str(t["a_only"]), str(t["b_only"]),
                      f"{t['p_value']:.3f}", ci)
    return table


def make_console() -> Console:
    """A console that does not squeeze the tables when output goes to a file or a pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def show(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print the run's tables, as its kind asks."""
    console = console or make_console()
    console.print(accuracy_table(summary))
    if summary["kind"] == "prompt":
        console.print(prompt_test_table(summary))
    for name, t in summary.get("timings", {}).items():
        if "rows" not in t:  # a page stage
            console.print(f"  {name}: {t['wall_s']:.1f} s wall")
            continue
        console.print(f"  {name}: {t['rows']} rows computed in {t['wall_s']:.1f} s wall "
                      f"({t['wall_docs_per_s']:.2f} rows/s incl. start-up), {t['filled']} filled as errors")
