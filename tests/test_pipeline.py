"""End to end on a local Ray cluster with the fake backend: one test per experiment kind, faults."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from invoicelab.config import parse_experiment
from invoicelab.orchestrator.pipeline import run_experiment
from invoicelab.report import write_summary

pytestmark = pytest.mark.ray

FIELDS = {"invoice_number": "id", "invoice_date": "date", "vendor_name": {"type": "text", "match": "fuzzy"},
          "total": "amount"}


def experiment(tmp_path, kind, variants, prompts=("terse-json",), n=6, **extra):
    return parse_experiment({
        "name": f"t-{kind}", "kind": kind, "output_dir": str(tmp_path / "{name}"),
        "dataset": {"source": "synthetic", "n": n}, "fields": FIELDS, "prompts": list(prompts),
        "variants": variants, **extra,
    })


def rows(result) -> pd.DataFrame:
    return pd.read_parquet(result.results)


def test_extraction_writes_one_scored_row_per_document(ray_cluster, tmp_path):
    result = run_experiment(experiment(tmp_path, "extraction", [{"name": "echo", "backend": "fake", "batch_size": 4}]))
    df = rows(result)
    assert len(df) == 6 and df["doc_id"].is_unique
    assert df["error"].isna().all()
    assert (df["pred_total"] == df["gt_total"]).all() and df["match_total"].all()
    row = result.summary["rows"][0]
    assert row["accuracy"] == row["field_mean"] == row["doc_accuracy"] == 1.0
    # the fake backend echoes the normalised truth ("1234.50"), which is not the verbatim one ("$1,234.50")
    assert row["exact"] < 1.0
    assert row["f1"] == 1.0 and row["docs"] == 6
    assert {e["field"]: e["right"] for e in result.summary["errors"]} == dict.fromkeys(FIELDS, 6)
    assert write_summary(result.summary, result.out_dir).is_file()
    assert json.loads((result.out_dir / "summary.json").read_text())["documents"] == 6


def test_quantization_view_compares_variants_against_the_first(ray_cluster, tmp_path):
    variants = [{"name": "exact", "backend": "fake"},
                {"name": "lossy", "backend": "fake", "options": {"wrong_rate": 0.5}}]
    result = run_experiment(experiment(tmp_path, "quantization", variants, n=8))
    by = {r["variant"]: r for r in result.summary["rows"]}
    assert by["exact"]["accuracy"] == 1.0 > by["lossy"]["accuracy"]
    assert result.summary["reference"] == "exact"
    assert [f["variant"] for f in result.summary["frontier"]] == ["exact", "lossy"]
    overall = next(t for t in result.summary["tests"] if t["field"] == "all")
    assert overall["a"] == "exact/terse-json" and overall["b"] == "lossy/terse-json" and overall["diff"] < 0
    assert len(rows(result)) == 16


def test_prompt_view_has_paired_tests_per_field(ray_cluster, tmp_path):
    variant = {"name": "echo", "backend": "fake", "options": {"wrong_rate": {"terse-json": 0.9, "described-json": 0.0}}}
    result = run_experiment(experiment(tmp_path, "prompt", [variant], prompts=("terse-json", "described-json"), n=10))
    df = rows(result)
    assert len(df) == 20 and set(df["prompt"]) == {"terse-json", "described-json"}
    tests = {t["field"]: t for t in result.summary["tests"]}
    assert set(tests) == {*FIELDS, "all"} and result.summary["correction_name"] == "Holm"
    assert tests["total"]["b_only"] >= 7 and tests["total"]["a_only"] == 0 and tests["total"]["p_value"] < 0.05
    assert tests["total"]["p_adjusted"] >= tests["total"]["p_value"]


def test_model_view_with_faults_keeps_every_document_exactly_once(ray_cluster, tmp_path):
    docs = [f"synth_{i:05d}" for i in range(8)]
    variants = [
        {"name": "good", "backend": "fake"},
        {"name": "faulty", "backend": "fake", "batch_size": 2,
         "options": {"error_rate": 0.25, "garbage_rate": 0.25, "crash_on": [docs[0]]}},
    ]
    result = run_experiment(experiment(tmp_path, "model", variants, n=8))
    df = rows(result)
    assert len(df) == 16 and not df.duplicated(["doc_id", "variant", "prompt"]).any()
    faulty = df[df["variant"] == "faulty"].set_index("doc_id")
    assert set(faulty.index) == set(docs)
    assert faulty.loc[docs[0], "error"].startswith("backend error: RuntimeError: fake: injected crash")
    assert faulty["error"].notna().sum() >= 3  # the crashed batch of 2, plus injected errors and garbage
    assert faulty["parse_error"].notna().any()
    summary = {r["variant"]: r for r in result.summary["rows"]}
    assert summary["good"]["accuracy"] == 1.0 > summary["faulty"]["accuracy"]
    ranking = result.summary["ranking"]
    assert ranking[0]["variant"] == "good" and ranking[0]["rank"] == 1 and ranking[1]["variant"] == "faulty"


def test_a_variant_that_cannot_start_becomes_error_rows(ray_cluster, tmp_path):
    variants = [{"name": "echo", "backend": "fake"},
                {"name": "broken", "backend": "ocr-llm", "model": str(tmp_path / "no-such-model"), "ocr": {"engine": "none"}}]
    result = run_experiment(experiment(tmp_path, "model", variants, n=4))
    df = rows(result)
    broken = df[df["variant"] == "broken"]
    assert len(broken) == 4 and broken["error"].str.contains("no-such-model").all()
    assert broken["error"].str.startswith("variant failed to load: ").all()
    assert (broken["error_stage"] == "load").all()
    assert df[df["variant"] == "echo"]["error"].isna().all()


def test_a_prompt_set_finds_the_planted_axis_effect_and_confirms_a_winner(ray_cluster, tmp_path):
    """Acceptance test of the prompt analytics: the fake backend gets a field wrong 70% of the time without
    worked examples and never with one; style and format do nothing. The analysis must find the examples
    effect and no other, and confirm a winner with an example on documents it was not picked on."""
    exp = experiment(tmp_path, "prompt", [{"name": "echo", "backend": "fake", "batch_size": 16,
                                           "options": {"wrong_rate_by_axis": {"examples": {"0": 0.7}}}}],
                     prompts=(), n=40, prompt_set={"base": "invoice-axes", "axes": {
                         "style": ["terse", "descriptive"], "examples": [0, 1], "format": ["json", "lines"]}},
                     analysis={"n_boot": 400})
    result = run_experiment(exp)
    view = result.summary["prompt_set"]
    assert len(set(rows(result)["prompt"])) == 8 and len(rows(result)) == 320
    overall = {(e["axis"], e["level"]): e for e in view["effects"] if e["field"] == "all"}
    assert overall[("examples", "1")]["significant"] and overall[("examples", "1")]["low"] > 0.5
    for axis, level in (("style", "descriptive"), ("format", "lines")):
        assert not overall[(axis, level)]["significant"] and abs(overall[(axis, level)]["effect"]) < 0.1
    winner = view["winner"]
    assert "-ex1-" in winner["winner"] and winner["n_confirmation"] == 20 and winner["n_selection"] == 20
    split = view["split"]  # stratified by the synthetic invoices' layout (gt.jsonl meta), each layout split in two
    assert split["stratified"] and not set(split["selection"]) & set(split["confirmation"])
    tests = [t for t in result.summary["tests"] if t["comparison"] == "prompt"]
    assert len({t["b"] for t in tests}) == 7  # each generated prompt against the baseline, not all 28 pairs
