"""The self-contained HTML report of one run: ``report.html`` next to ``summary.json``.

One file that opens without a network: CSS, SVG figures (``plots``) and page thumbnails (base64
JPEG data URIs) are all inline, and the page has no script. What it shows follows the summary's
``kind`` (quantization, prompt, model, extraction); a section whose summary key is absent is left
out. This module must never compute a statistic (it formats ``analysis.summarize``'s output), never
put an external URL in the page, never emit unescaped model output (Jinja autoescape is on), and
never fail on a page that cannot be read (a placeholder stands in for its thumbnail).
"""

from __future__ import annotations

import base64
import importlib.metadata
import io
import json
import math
import numbers
import os
import platform
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoicelab import plots

if TYPE_CHECKING:
    import pandas as pd

CASES_PER_FIELD = 5
THUMBNAIL_PX = 200
RAW_OUTPUT_CHARS = 4000  # enough for any JSON answer; a runaway generation is cut with a note
VERSIONED = ("invoicelab", "torch", "transformers", "ray", "vllm")
# (key, column title, format) of the summary tables: what was extracted, then what it cost
_QUALITY = [
    ("field_mean", "field mean", "pct"), ("accuracy", "accuracy", "pct"), ("precision", "precision", "pct"),
    ("recall", "recall", "pct"), ("f1", "F1", "pct"), ("doc_accuracy", "doc accuracy", "pct"),
    ("exact", "exact", "pct"), ("similarity", "ANLS", "num3"), ("model_accuracy", "model accuracy", "pct"),
    ("fallback_share", "fallback", "pct")]
_RUNNING = [
    ("docs", "docs", "int"), ("errors", "errors", "int"),
    ("parse_errors", "parse errors", "int"), ("docs_per_s", "docs/s", "num2"), ("latency_s", "s/doc", "num3"),
    ("tokens_per_s", "tokens/s", "num1"), ("peak_rss_bytes", "peak RSS", "bytes"),
    ("gpu_peak_bytes", "GPU peak", "bytes"), ("memory_bytes", "model memory", "bytes"),
    ("precision_loaded", "loaded as", "text"), ("cost_per_1000", "$/1,000 docs", "money"),
]


def write_html_report(run_dir: Path, summary: dict, results: pd.DataFrame, experiment: dict,
                      history: pd.DataFrame | None = None) -> Path:
    """Write ``run_dir/report.html``.

    Args:
        run_dir: The run's folder.
        summary: ``analysis.summarize``'s dict (see the issue 7 contract); optional keys may be absent.
        results: The run's result rows (one per document, variant and prompt).
        experiment: The experiment configuration, shown verbatim as JSON.
        history: Past runs' accuracies (``finished_at, variant, prompt, field, accuracy``) for the trend
            plot; None, or fewer than two runs, leaves the trend section out.

    Returns:
        The path of the report.
    """
    path = Path(run_dir) / "report.html"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(render_html(summary, results, experiment, history), encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a report
    return path


def render_html(summary: dict, results: pd.DataFrame, experiment: dict,
                history: pd.DataFrame | None = None) -> str:
    """The report as one HTML string; arguments as in ``write_html_report``."""
    import jinja2

    from invoicelab.report_prompts import prompt_set_section  # here: it builds on this module's helpers

    label = _labeller(summary, results)
    kind_sections = {"quantization": _quantization, "prompt": _prompt, "model": _model}
    sections = [_summary(summary, label), *kind_sections.get(summary.get("kind"), lambda *_: [])(summary, label),
                prompt_set_section(summary),  # None (left out) unless the summary has "prompt_set"
                _errors(summary, label), _cases(summary, results, label), _trends(summary, history, label),
                _setup(summary, experiment)]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(resources.files("invoicelab").joinpath("templates/report.html.j2").read_text("utf-8"))
    return template.render(summary=summary, header=_header(summary), sections=[s for s in sections if s],
                           strict="sroie-strict" in summary.get("profiles", []))


# --- formatting -------------------------------------------------------------------------------


def _finite(x: Any) -> bool:
    """A finite number, numpy scalars included (summaries built in-process carry them); not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(x: Any, how: str) -> str:
    if how == "text":
        return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)
    if not _finite(x):
        return "–"
    if how == "pct":
        return f"{100 * x:.1f}%"
    if how == "int":
        return f"{int(x):,}"
    if how == "bytes":
        return f"{x / 2**30:.2f} GiB" if x >= 2**30 else f"{x / 2**20:.0f} MiB"
    if how == "money":
        return f"${x:,.4f}"
    if how == "p":
        return "<0.001" if x < 0.001 else f"{x:.3f}"
    if how == "pp":
        return f"{100 * x:+.1f} pp"
    return f"{x:,.{how[-1]}f}"  # num1, num2, num3


def _ci(t: dict) -> str:
    bounds = [f"{100 * t[k]:+.1f}" for k in ("low", "high") if _finite(t.get(k))]
    return _fmt(t.get("diff"), "pp") + (f" [{bounds[0]}, {bounds[1]}]" if len(bounds) == 2 else "")


def _labeller(summary: dict, results: pd.DataFrame) -> Callable[[Any, Any], str]:
    """Rows are named by what varies: the variant, the prompt, or both."""
    pairs = [(r.get("variant"), r.get("prompt")) for r in summary.get("rows", [])]
    if not pairs and {"variant", "prompt"} <= set(results.columns):
        pairs = list(results[["variant", "prompt"]].drop_duplicates().itertuples(index=False, name=None))
    several_variants, several_prompts = len({v for v, _ in pairs}) > 1, len({p for _, p in pairs}) > 1

    def label(variant: Any, prompt: Any) -> str:
        if several_variants and several_prompts:
            return f"{variant} · {prompt}"
        return str(prompt if several_prompts else variant)

    label.title = "variant · prompt" if several_variants and several_prompts else (  # type: ignore[attr-defined]
        "prompt" if several_prompts else "variant")
    return label


def _columns(spec: list[tuple[str, str, str]], rows: list[dict]) -> list[tuple[str, Callable]]:
    """Table columns from (key, title, format), leaving out keys that no row has."""
    return [(title, lambda r, k=key, h=how: _fmt(r.get(k), h)) for key, title, how in spec
            if any(r.get(key) is not None for r in rows)]


def _table(columns: list[tuple[str, Callable[[dict], str]]], rows: list[dict], caption: str = "",
           text_columns: int = 1, flag: Callable[[dict], str] | None = None) -> dict:
    """A table for the template: head, per-row cells, a CSS class per row; numbers right-aligned."""
    return {"caption": caption, "head": [c for c, _ in columns], "text_columns": text_columns,
            "rows": [{"cells": [fn(r) for _, fn in columns], "cls": flag(r) if flag else ""} for r in rows]}


def _section(sid: str, title: str, intro: list[str] | None = None, plots_: list[str] | None = None,
             tables: list[dict] | None = None, **extra: Any) -> dict:
    from markupsafe import Markup

    # The SVG comes from matplotlib, which escapes every label it writes; it is markup, not text.
    return {"id": sid, "title": title, "intro": intro or [], "plots": [Markup(p) for p in plots_ or [] if p],
            "tables": tables or [], "cases": extra.get("cases", []), "pre": extra.get("pre", [])}


# --- sections ---------------------------------------------------------------------------------


def _header(summary: dict) -> list[tuple[str, str]]:
    run_s = summary.get("run_s")
    items = [("experiment", _fmt(summary.get("name"), "text")), ("kind", _fmt(summary.get("kind"), "text")),
             ("documents", _fmt(summary.get("documents"), "int")),
             ("fields", ", ".join(summary.get("fields", [])) or "–"),
             ("run time", f"{run_s:,.1f} s" if _finite(run_s) else "–")]
    items += [(k.replace("_", " "), str(summary[k])) for k in ("started_at", "finished_at") if summary.get(k)]
    items.append(("report written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
    return items


def _summary(summary: dict, label: Callable) -> dict:
    rows, fields = summary.get("rows", []), summary.get("fields", [])
    labels = [label(r.get("variant"), r.get("prompt")) for r in rows]
    heat = plots.heatmap(labels, fields, [[r.get(f) for f in fields] for r in rows])
    names = [(label.title, lambda r: label(r.get("variant"), r.get("prompt")))]
    quality = [(f, f, "pct") for f in fields] + _QUALITY
    tables = [_table(names + _columns(quality, rows), rows, "quality, lenient profile (the fields' own rules)"),
              _table(names + _columns(_RUNNING, rows), rows, "speed, memory and cost")]
    strict = [r["strict"] | {"variant": r.get("variant"), "prompt": r.get("prompt")}
              for r in rows if isinstance(r.get("strict"), dict)]
    if strict:
        keys = [("precision", "precision", "pct"), ("recall", "recall", "pct"), ("f1", "F1", "pct"),
                ("doc_accuracy", "doc accuracy", "pct"), *[(f, f, "pct") for f in fields]]
        caption = "sroie-strict profile (SROIE Task 3 protocol)"
        tables.append(_table(names + _columns(keys, strict), strict, caption))
    intro = "Accuracy per field: rows are variants or prompts; colour and number give the share of right values."
    return _section("summary", "Summary", [intro], [heat], tables)


def _test_columns(summary: dict, tests: list[dict]) -> list[tuple[str, Callable]]:
    from invoicelab.stats import METHOD_NAMES

    method = summary.get("correction", "holm")
    name = METHOD_NAMES.get(method, method)
    spec = [
        ("a", "A", "text"), ("b", "B", "text"), ("field", "field", "text"), ("n", "n", "int"),
        ("excluded_fallback", "excl. fallback", "int"), ("a_only", "A only", "int"), ("b_only", "B only", "int")]
    p_values = [("p_value", "p", "p"), ("p_adjusted", f"adjusted p ({name})", "p")]
    return [*_columns(spec, tests), ("B − A [95% CI]", _ci), *_columns(p_values, tests), ("significant", _verdict)]


def _verdict(t: dict) -> str:
    if not t.get("significant"):
        return "no"
    return "B better" if (t.get("diff") or 0) > 0 else "B worse"


def _loss(t: dict) -> str:
    return "loss" if t.get("significant") and (t.get("diff") or 0) < 0 else ""


def _tests(summary: dict, comparison: str) -> list[dict]:
    return [t for t in summary.get("tests", []) if t.get("comparison") == comparison]


def _quantization(summary: dict, label: Callable) -> list[dict]:
    points = summary.get("frontier")
    if points is None:  # the rows carry the same numbers; only the summary's Pareto flag is then missing
        points = [{**r, "peak_memory_bytes": r.get("gpu_peak_bytes") or r.get("peak_rss_bytes")}
                  for r in summary.get("rows", [])]
    points = [{**p, "label": label(p.get("variant"), p.get("prompt"))} for p in points]
    figures = [plots.frontier(points, "docs_per_s", "documents per second", True, size="peak_memory_bytes"),
               plots.frontier(points, "cost_per_1000", "cost per 1,000 documents ($)", False, size="peak_memory_bytes")]
    table = _table([("variant", lambda p: p["label"]), ("accuracy", lambda p: _fmt(p.get("accuracy"), "pct")),
                    ("docs/s", lambda p: _fmt(p.get("docs_per_s"), "num2")),
                    ("peak memory", lambda p: _fmt(p.get("peak_memory_bytes"), "bytes")),
                    ("$/1,000 docs", lambda p: _fmt(p.get("cost_per_1000"), "money")),
                    ("Pareto", lambda p: "yes" if p.get("pareto") else "")], points, "speed, memory and cost")
    intro = ("Each point is a variant; its area is its peak memory. Blue points, joined by the dashed line, are on "
             "the Pareto front: no other variant is both more accurate and faster (or cheaper).")
    out = [_section("frontier", "Accuracy against speed and cost", [intro], figures, [table])] if points else []
    tests = _tests(summary, "reference")
    if tests:
        out.append(_section("reference", "Against the reference precision",
                            [("Each quantized variant (B) against the reference (A) on the same documents. "
                             "Rows in red lose accuracy significantly after the correction for multiple tests.")],
                            tables=[_table(_test_columns(summary, tests), tests, "", 3, _loss)]))
    return out


def _prompt(summary: dict, label: Callable) -> list[dict]:
    tests = _tests(summary, "prompt")
    if not tests:
        return []
    variants = len({t.get("variant") for t in tests}) > 1
    rows = [{**t, "label": (f"{t.get('variant')}: " if variants else "") + f"{t.get('a')} → {t.get('b')} · "
             f"{t.get('field')}"} for t in tests]
    figure = plots.forest(rows, "accuracy of B minus A, with 95% interval")
    intro = ("Pairs of prompts on the same documents: A only and B only count the documents that exactly one prompt "
             "got right (exact McNemar test); values from the rules fallback are excluded. Coloured differences are "
             f"significant at alpha = {summary.get('alpha', 0.05)} after the correction for multiple tests.")
    table = _table(_test_columns(summary, rows), rows, "", 3, lambda t: "win" if t.get("significant") else "")
    return [_section("ab", "Prompt A/B", [intro], [figure], [table])]


def _model(summary: dict, label: Callable) -> list[dict]:
    ranking = [{**r, "label": label(r.get("variant"), r.get("prompt"))} for r in summary.get("ranking", [])]
    out = []
    if ranking:
        table = _table([("rank", lambda r: _fmt(r.get("rank"), "int")), ("model", lambda r: r["label"]),
                        ("accuracy", lambda r: _fmt(r.get("accuracy"), "pct")),
                        ("95% interval", lambda r: f"{_fmt(r.get('low'), 'pct')} – {_fmt(r.get('high'), 'pct')}")],
                       sorted(ranking, key=lambda r: r.get("rank") or 0), "", 2)
        out.append(_section("ranking", "Model ranking", [("Accuracy with its 95% bootstrap interval; "
                                                         "overlapping intervals are not a test, see below.")],
                            [plots.ranking(ranking)], [table]))
    tests = _tests(summary, "model")
    if tests:
        significant = [t for t in tests if t.get("significant")]
        intro = [(f"{len(significant)} of {len(tests)} pairs differ significantly at alpha = "
                 f"{summary.get('alpha', 0.05)} after the correction for multiple tests.")]
        tables = [_table(_test_columns(summary, significant), significant, "", 3)] if significant else []
        out.append(_section("pairs", "Pairwise differences", intro, tables=tables))
    return out


def _errors(summary: dict, label: Callable) -> dict | None:
    rows = [{**e, "label": label(e.get("variant"), e.get("prompt"))} for e in summary.get("errors", [])]
    if not rows:
        return None
    counts = ["right", "wrong", "missing", "invalid", "not_in_text", "error", "spurious", "fallback"]
    columns = [(label.title, lambda e: e["label"]), ("field", lambda e: str(e.get("field")))]
    columns += [(c.replace("_", " "), lambda e, c=c: _fmt(e.get(c), "int")) for c in counts]
    return _section("errors", "Where the errors come from",
                    ["What happened to each value with ground truth, per field."],
                    [plots.error_breakdown(rows, summary.get("fields", []))], [_table(columns, rows, "", 2)])


def _cases(summary: dict, results: pd.DataFrame, label: Callable) -> dict | None:
    rows = summary.get("rows", [])
    first = (rows[0].get("variant"), rows[0].get("prompt")) if rows else None
    groups, thumbs = [], {}
    for field in summary.get("fields", []):
        cases = []
        for _, r in _worst(results, field, first).iterrows():
            truth = r.get(f"truth_{field}")
            truth = r.get(f"gt_{field}") if _blank(truth) else truth
            raw = "" if _blank(r.get("raw_output")) else str(r["raw_output"])
            if len(raw) > RAW_OUTPUT_CHARS:
                raw = raw[:RAW_OUTPUT_CHARS] + f"\n… ({len(raw) - RAW_OUTPUT_CHARS:,} more characters)"
            file = r.get("file")
            if file not in thumbs:
                thumbs[file] = _thumbnail(file)
            cases.append({"doc_id": str(r.get("doc_id")), "label": label(r.get("variant"), r.get("prompt")),
                          "score": _fmt(r.get(f"score_{field}"), "num2"), "thumbnail": thumbs[file],
                          "prediction": _fmt(r.get(f"pred_{field}"), "text"), "truth": _fmt(truth, "text"),
                          "normalized": _fmt(r.get(f"gt_{field}"), "text"), "raw": raw,
                          "error": "" if _blank(r.get("error")) else str(r["error"])})
        groups += [{"field": field, "cases": cases}] if cases else []
    if not groups:
        return None
    return _section("cases", "Worst cases per field", [
        (f"Up to {CASES_PER_FIELD} wrong or missing values per field, lowest score first, from the first "
        "variant and prompt (others fill in when it has fewer).")], cases=groups)


def _blank(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or (isinstance(x, str) and not x.strip())


def _worst(results: pd.DataFrame, field: str, first: tuple | None) -> pd.DataFrame:
    """The field's wrong or missing values, the first (variant, prompt)'s first, lowest score first."""
    if not {f"gt_{field}", f"pred_{field}"} <= set(results.columns):
        return results.iloc[0:0]
    wrong = results[results[f"gt_{field}"].notna()]
    if f"match_{field}" in wrong.columns:
        wrong = wrong[wrong[f"match_{field}"].fillna(False).astype(bool).eq(False)]
    score = wrong[f"score_{field}"] if f"score_{field}" in wrong.columns else 0.0
    other = False
    if first is not None and {"variant", "prompt"} <= set(wrong.columns):
        other = ~(wrong["variant"].eq(first[0]) & wrong["prompt"].eq(first[1]))
    ordered = wrong.assign(_other=other, _score=score)
    return ordered.sort_values(["_other", "_score"], na_position="first", kind="stable").head(CASES_PER_FIELD)


def _thumbnail(location: Any) -> str | None:
    """A JPEG data URI of the document's first page, at most THUMBNAIL_PX a side; None if unreadable."""
    from invoicelab.data import pages, storage

    if _blank(location):
        return None
    try:
        page = pages.load_pages(storage.local_copy(str(location), None), dpi=72, max_pages=1)[0]
    except (pages.DocumentError, OSError, ValueError):
        return None
    page.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buf = io.BytesIO()
    page.convert("RGB").save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _trends(summary: dict, history: pd.DataFrame | None, label: Callable) -> dict | None:
    if history is None or history.empty or history["finished_at"].nunique() < 2:
        return None
    frame = history.assign(label=[label(v, p) for v, p in zip(history["variant"], history["prompt"])])
    figure = plots.trends(frame, summary.get("fields", []))
    return _section("trends", "Accuracy over past runs",
                    [f"{history['finished_at'].nunique()} runs of this experiment, oldest first."], [figure])


def _setup(summary: dict, experiment: dict) -> dict:
    versions = [("python", platform.python_version())]
    for name in VERSIONED:
        try:  # the installed distribution's metadata: no package is imported to learn its version
            versions.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            versions.append((name, "not installed"))
    hardware = [("CPUs", str(os.cpu_count())), ("processor", platform.processor() or platform.machine()),
                ("platform", platform.platform())]
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        hardware.append(("memory", _fmt(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "bytes")))
    recorded = summary.get("hardware") if isinstance(summary.get("hardware"), dict) else {}
    hardware += [(f"run: {k}", ", ".join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in recorded.items()]
    if summary.get("gpus"):
        hardware.append(("GPUs", ", ".join(map(str, summary["gpus"]))))
    pre = [("experiment", json.dumps(experiment, indent=2, default=str, sort_keys=False))]
    if summary.get("backends"):
        pre.append(("backends", json.dumps(summary["backends"], indent=2, default=str)))
    return _section("setup", "Configuration, versions and hardware",
                    [("Versions and hardware of the machine that wrote this report; lines starting with "
                     "'run:' are what the run itself recorded.")],
                    tables=[_table([("", lambda r: r[0]), ("", lambda r: r[1])], [*versions, *hardware],
                                   "versions and hardware", 2)], pre=pre)
