"""The HTML report: sections per experiment kind, self-contained, escaped, and rendered by a real browser.

The summaries are hand-made to the issue 7 contract (summary.json's shape), not computed, so these
tests exercise only the report: what it shows, and that it never fetches anything or runs a script.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from browser import missing_reason, open_pages
from PIL import Image, ImageDraw

from invoicelab.report_html import write_html_report

FIELDS = ["invoice_number", "invoice_date", "total", "company"]
TRUTH = {"invoice_number": "IN2504-{i:03d}", "invoice_date": "30 Apr 2025", "total": "1,{i:03d}.50",
         "company": "Acme Trading Sdn Bhd"}
NORMALIZED = {"invoice_date": "2025-04-30", "total": "1{i:03d}.50"}
XSS = "<script>alert(1)</script>"
STATUSES = ["right", "wrong", "missing", "invalid", "not_in_text", "error"]


def page_files(folder: Path, n: int) -> list[str]:
    """Receipt-like pages: PNGs, one PDF, and one path that does not exist (for the placeholder)."""
    files = []
    for i in range(n):
        img = Image.new("RGB", (600, 840), "white")
        draw = ImageDraw.Draw(img)
        draw.rectangle((30, 30, 570, 120), outline="black", width=3)
        for line, text in enumerate([f"INVOICE IN2504-{i:03d}", "Acme Trading Sdn Bhd", "Date 30 Apr 2025",
                                     f"TOTAL 1,{i:03d}.50"]):
            draw.text((50, 50 + 90 * line), text, fill="black", font_size=28)
        path = folder / (f"doc{i}.pdf" if i == 1 else f"doc{i}.png")
        img.save(path)
        files.append(str(path))
    files[2] = str(folder / "gone" / "doc2.png")
    return files


def results_frame(files: list[str], pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """One row per document x (variant, prompt); later pairs get more fields wrong."""
    rows = []
    for k, (variant, prompt) in enumerate(pairs):
        for i, file in enumerate(files):
            row = {"doc_id": f"doc{i}", "file": file, "variant": variant, "prompt": prompt,
                   "error": "engine died" if (i == 5 and k == 1) else None, "raw_output": "", "fallback_fields": []}
            for j, f in enumerate(FIELDS):
                truth = TRUTH[f].format(i=i)
                wrong = (i + j + k) % 3 == 0
                pred = None if (wrong and i % 2) or row["error"] else (f"{truth}X" if wrong else truth)
                row |= {f"pred_{f}": pred, f"truth_{f}": truth, f"gt_{f}": NORMALIZED.get(f, TRUTH[f]).format(i=i),
                        f"score_{f}": 0.0 if pred is None else (0.4 + 0.1 * i if wrong else 1.0),
                        f"match_{f}": not wrong and pred is not None}
            preds = {f: row[f"pred_{f}"] for f in FIELDS}
            row["raw_output"] = XSS if (i == 0 and k == 0) else json.dumps(preds)
            rows.append(row)
    return pd.DataFrame(rows)


def summary_row(variant: str, prompt: str, k: int) -> dict:
    """A summary row as analysis.summarize writes it; later rows are less accurate, quantized ones faster."""
    acc = {f: round(0.95 - 0.08 * k - 0.05 * j, 3) for j, f in enumerate(FIELDS)}
    mean = sum(acc.values()) / len(acc)
    quality = {"field_mean": mean, "accuracy": mean, "precision": mean + 0.02, "recall": mean, "f1": mean + 0.01,
               "doc_accuracy": mean - 0.2, "exact": mean - 0.1, "similarity": mean + 0.03,
               "model_accuracy": mean - 0.05, "fallback_share": 0.05}
    running = {"docs": 6, "errors": int(k == 1), "parse_errors": 0, "latency_s": 0.5 / (k + 1),
               "docs_per_s": [2.0, 3.1, 6.4, 4.2][k % 4], "tokens_out": 40, "peak_rss_bytes": (4 - k) * 2**30,
               "gpu_peak_bytes": None, "cost_per_1000": [0.21, 0.14, 0.07, 0.09][k % 4],
               "precision_loaded": variant.split("-")[-1]}
    strict = {"precision": mean - 0.1, "recall": mean - 0.12, "f1": mean - 0.11, "doc_accuracy": 0.3,
              **{f: a - 0.1 for f, a in acc.items()}}
    return {"variant": variant, "prompt": prompt, **acc, **quality, **running, "strict": strict}


def make_summary(kind: str, pairs: list[tuple[str, str]]) -> dict:
    rows = [summary_row(v, p, k) for k, (v, p) in enumerate(pairs)]
    errors = [{"variant": v, "prompt": p, "field": f, **dict(zip(STATUSES, [4 - k % 2, 1, k % 2, 0, j % 2, 0])),
               "spurious": 0, "fallback": 0} for k, (v, p) in enumerate(pairs) for j, f in enumerate(FIELDS)]
    summary = {"name": f"receipts-{kind}", "kind": kind, "fields": FIELDS, "documents": 6, "run_s": 93.4,
               "profiles": ["lenient", "sroie-strict"], "alpha": 0.05, "correction": "holm", "rows": rows,
               "errors": errors, "hardware": {"gpus": ["NVIDIA H200"]}}
    if kind == "quantization":
        summary["frontier"] = [{"variant": r["variant"], "prompt": r["prompt"], "accuracy": r["accuracy"],
                                "docs_per_s": r["docs_per_s"], "peak_memory_bytes": r["peak_rss_bytes"],
                                "cost_per_1000": r["cost_per_1000"], "pareto": k < 3} for k, r in enumerate(rows)]
        summary["tests"] = [ab_test("reference", v, "fp32", v, f, k)
                            for k, (v, _) in enumerate(pairs[1:]) for f in FIELDS]
    elif kind == "prompt":
        summary["tests"] = [ab_test("prompt", v, pairs[0][1], p, f, 2 * n + (p == pairs[-1][1]))
                            for v, p in pairs[1:] for n, f in enumerate([*FIELDS, "all"])]
    elif kind == "model":
        summary["ranking"] = [{"variant": r["variant"], "prompt": r["prompt"], "accuracy": r["accuracy"],
                               "low": r["accuracy"] - 0.08, "high": r["accuracy"] + 0.06, "rank": k + 1}
                              for k, r in enumerate(rows)]
        summary["tests"] = [ab_test("model", None, pairs[0][0], v, "all", 2 * k)
                            for k, (v, _) in enumerate(pairs[1:])]
    return summary


def ab_test(comparison: str, variant: str | None, a: str, b: str, field: str, k: int) -> dict:
    """One paired comparison; larger k: B differs more, significantly from k = 2 (B wins for odd k > 2)."""
    diff = (0.02 + 0.04 * k) * (1 if k > 2 and k % 2 else -1)
    a_only, b_only = (1, 1 + k) if diff > 0 else (1 + k, 1)
    return {"comparison": comparison, "variant": variant, "a": a, "b": b, "field": field, "n": 6,
            "excluded_fallback": k % 2, "a_only": a_only, "b_only": b_only, "diff": diff, "low": diff - 0.05,
            "high": diff + 0.05 - 0.03 * (k > 1), "p_value": 0.5 * 0.1**k, "p_adjusted": min(1.0, 1.5 * 0.1**k),
            "sim_diff": diff / 2, "sim_p_value": 0.4, "significant": k > 1}


PAIRS = {"quantization": [("fp32", "terse-json"), ("bf16", "terse-json"), ("int8-dynamic", "terse-json"),
                          ("bnb-nf4", "terse-json")],
         "prompt": [("smol-fp32", "terse-json"), ("smol-fp32", "few-shot"), ("smol-fp32", "schema-first")],
         "model": [("gemma3-270m", "terse-json"), ("smollm2-135m", "terse-json"), ("qwen2.5-0.5b", "terse-json")],
         "extraction": [("smol-fp32", "terse-json")]}
KIND_SECTIONS = {"quantization": ["frontier", "reference"], "prompt": ["ab"], "model": ["ranking", "pairs"],
                 "extraction": []}


def history() -> pd.DataFrame:
    runs = ["2025-05-01T10:00:00Z", "2025-05-08T10:00:00Z", "2025-05-15T10:00:00Z"]
    return pd.DataFrame([{"finished_at": t, "variant": v, "prompt": p, "field": f, "accuracy": 0.6 + 0.1 * n - 0.05 * k}
                         for n, t in enumerate(runs) for k, (v, p) in enumerate(PAIRS["quantization"]) for f in FIELDS])


def write_report(tmp_path: Path, kind: str, with_history: bool = False, name: str = "") -> tuple[Path, str]:
    run_dir = tmp_path / (name or kind)
    run_dir.mkdir()
    results = results_frame(page_files(run_dir, 6), PAIRS[kind])
    experiment = {"name": f"receipts-{kind}", "kind": kind, "variants": [{"name": v} for v, _ in PAIRS[kind]]}
    path = write_html_report(run_dir, make_summary(kind, PAIRS[kind]), results, experiment,
                             history() if with_history else None)
    return path, path.read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", list(PAIRS))
def test_each_kind_shows_its_sections_and_only_those(tmp_path, kind):
    _, html = write_report(tmp_path, kind)
    ids = set(re.findall(r'<section id="([^"]+)"', html))
    assert {"summary", "errors", "cases", "setup"} <= ids
    assert set(KIND_SECTIONS[kind]) <= ids
    other = {s for k, names in KIND_SECTIONS.items() if k != kind for s in names}
    assert not ids & other, f"{kind} report shows another kind's sections: {ids & other}"
    for term in ("field_mean", "doc_accuracy", "similarity (ANLS)", "fallback_share", "SROIE Task 3 protocol"):
        assert term in html
    assert "not_in_text" in html and "fix OCR" in html  # the error breakdown says what to do about each kind


def test_report_is_self_contained_and_escapes_model_output(tmp_path):
    _, html = write_report(tmp_path, "quantization", with_history=True)
    assert not re.search(r'(?:src|href)\s*=\s*["\']?\s*(?:https?:)?//', html), "an external URL in src/href"
    assert "<script" not in html.lower()  # no script at all, and the model's one is shown as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count('src="data:image/jpeg;base64,') >= 1


def test_unreadable_page_gets_a_placeholder_not_a_crash(tmp_path):
    _, html = write_report(tmp_path, "extraction")
    cases = html[html.index('<section id="cases"'):]
    docs = re.findall(r"<dt>document</dt><dd>(doc\d)</dd>", cases)
    previews = re.findall(r'(<img src="data:image/jpeg|<div class="nopreview">)', cases)
    assert len(docs) == len(previews) > 0
    for doc, preview in zip(docs, previews):  # doc2's file does not exist; doc1 is a PDF, rendered
        assert ("nopreview" in preview) == (doc == "doc2"), doc


def test_missing_optional_keys_leave_sections_out(tmp_path):
    summary = {"name": "bare", "kind": "quantization", "fields": FIELDS, "documents": 0, "rows": []}
    path = write_html_report(tmp_path, summary, pd.DataFrame(), {"name": "bare"}, history=None)
    ids = set(re.findall(r'<section id="([^"]+)"', path.read_text()))
    assert ids == {"summary", "setup"}


def test_history_adds_a_trend_plot(tmp_path):
    _, without = write_report(tmp_path, "quantization", name="without")
    _, with_history = write_report(tmp_path, "quantization", with_history=True, name="with")
    assert 'id="trends"' not in without and 'id="trends"' in with_history
    assert with_history.count('<figure class="plot">') == without.count('<figure class="plot">') + 1


def not_blank(png: Path) -> None:
    img = Image.open(png).convert("RGB")
    assert img.width == 1280 and 900 <= img.height <= 40_000, img.size
    small = img.resize((img.width // 4, img.height // 4))
    colours = small.getcolors(maxcolors=1 << 20)
    top = max(count for count, _ in colours)
    assert len(colours) > 200 and top / (small.width * small.height) < 0.99, (len(colours), top)


@pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))
def test_reports_render_in_chromium_without_errors(tmp_path):
    quant, _ = write_report(tmp_path, "quantization", with_history=True)
    prompt, _ = write_report(tmp_path, "prompt")
    # heatmap, 2 frontiers, error breakdown, trends | heatmap, forest, error breakdown
    expected = {quant: 5, prompt: 3}
    checks = open_pages([(quant, tmp_path / "quantization.png"), (prompt, tmp_path / "prompt.png")],
                        selector="figure.plot > svg")
    for (html, want), check in zip(expected.items(), checks):
        assert not check.console_errors and not check.page_errors, (html.name, check)
        assert not check.requests, f"the report fetched {check.requests}"
        assert check.matches >= want, (html.name, check.matches)
        not_blank(check.screenshot)
        if os.environ.get("INVOICELAB_SCREENSHOTS"):  # to look at the layout by eye
            Path(os.environ["INVOICELAB_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(check.screenshot, Path(os.environ["INVOICELAB_SCREENSHOTS"]) / check.screenshot.name)


def test_numpy_numbers_and_odd_names_are_shown_safely(tmp_path):
    import numpy as np

    row = {"variant": "fp<32>", "prompt": "terse-json", "total": np.float64(0.5), "docs": np.int64(7),
           "docs_per_s": np.float32(2.5)}
    summary = {"name": "np", "kind": "extraction", "fields": ["total"], "documents": np.int64(7), "rows": [row],
               "hardware": ["not", "a", "dict"]}
    html = write_html_report(tmp_path, summary, pd.DataFrame(), {}, None).read_text()
    table = html[html.index("speed, memory and cost"):]
    assert "<td>7</td>" in table.replace(' class="t"', "") and "2.50" in table  # numpy scalars are numbers
    assert "50.0%" in html
    assert "fp<32>" not in html and "fp&lt;32&gt;" in html  # in the tables and in the SVG heatmap's labels


def test_worst_cases_come_from_the_first_variant_lowest_score_first(tmp_path):
    _, html = write_report(tmp_path, "quantization")
    cases = html[html.index('<section id="cases"'):]
    numbers = cases[:cases.index("<h3>invoice_date</h3>")]
    shown = re.findall(r"<dt>document</dt><dd>(doc\d)</dd>\s*<dt>run</dt><dd>([^<]+)</dd>", numbers)
    # fp32 got doc3 wrong with no answer (score 0) and doc0 with a near miss (0.4): those first, then others
    assert shown[:2] == [("doc3", "fp32"), ("doc0", "fp32")] and len(shown) == 5
    assert all(run != "fp32" for _, run in shown[2:])
    dates = cases[cases.index("<h3>invoice_date</h3>"):]
    assert "<dt>truth</dt><dd>30 Apr 2025</dd>" in dates  # the verbatim truth, with the normalised form beside it
    assert "<dt>normalised</dt><dd>2025-04-30</dd>" in dates


def test_pareto_front_marks_the_points_nothing_beats():
    from invoicelab.plots import pareto

    speed = [(2.0, 0.875), (3.1, 0.795), (6.4, 0.715), (4.2, 0.635), (6.4, 0.715)]
    assert pareto(speed, x_higher_better=True) == [True, True, True, False, True]  # a tie beats neither
    cost = [(0.21, 0.875), (0.14, 0.795), (0.07, 0.715), (0.09, 0.635)]
    assert pareto(cost, x_higher_better=False) == [True, True, True, False]
    assert pareto(cost, x_higher_better=True) == [True, False, False, False]  # dearer is not better
