"""End to end with the real bundled SmolLM2 model and the real OCR engine, on a few synthetic invoices."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from invoicelab.config import parse_experiment
from invoicelab.orchestrator.pipeline import run_experiment
from invoicelab.report import write_summary

pytestmark = [pytest.mark.ray, pytest.mark.model]

FIELDS = {
    "invoice_number": {"type": "id", "example": "INV-2024-0042"},
    "invoice_date": {"type": "date", "day_first": True, "example": "2024-03-05"},
    "total": {"type": "amount", "example": "1,234.50"},
}


@pytest.fixture(scope="module")
def run(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    exp = parse_experiment({
        "name": "e2e", "kind": "quantization", "seed": 3, "output_dir": str(out),
        "dataset": {"source": "synthetic", "n": 4}, "fields": FIELDS, "prompts": ["terse-json"],
        "variants": [
            {"name": "smol-fp32", "backend": "ocr-llm", "model": "smollm2-135m-instruct", "precision": "fp32",
             "batch_size": 4, "generation": {"max_new_tokens": 48}, "fallback": "none", "resources": {"num_cpus": 2}},
            {"name": "rules", "backend": "rules"},
        ],
    })
    result = run_experiment(exp)
    write_summary(result.summary, result.out_dir)
    return result, pd.read_parquet(result.results)


def test_every_document_has_one_row_per_variant(run):
    _, df = run
    assert len(df) == 8 and not df.duplicated(["doc_id", "variant", "prompt"]).any()
    assert set(df["variant"]) == {"smol-fp32", "rules"}
    assert df[df["variant"] == "rules"]["error"].isna().all()
    # The model may ramble past its token budget; that is an error row of the model stage, with its output.
    llm_errors = df[(df["variant"] == "smol-fp32") & df["error"].notna()]
    assert llm_errors["error"].str.startswith("unparseable model output").all(), llm_errors["error"].tolist()
    assert (llm_errors["error_stage"] == "model").all() and llm_errors["raw_output"].str.len().gt(20).all()


def test_the_model_really_generated_and_was_scored(run):
    _, df = run
    llm = df[df["variant"] == "smol-fp32"]
    assert (llm["tokens_out"] > 0).all() and (llm["tokens_in"] > 100).all()
    assert llm["raw_output"].str.startswith('{"invoice_number": "').all()
    assert (llm["latency_s"] > 0).all() and (llm["ocr_s"] >= 0).all()
    for field in FIELDS:
        assert llm[f"gt_{field}"].notna().all()
        scored = llm[f"score_{field}"]
        assert scored.between(0, 1).all()
        assert (llm[f"match_{field}"] == (scored == 1.0)).all()
    info = json.loads(llm["backend_info"].iloc[0])
    assert info["backend"] == "ocr-llm" and "float32" in json.dumps(info)


def test_the_model_itself_answers_and_gets_fields_right(run):
    # The tests above hold even if every model row is an error; this one does not. With 48 new tokens
    # and no fallback, SmolLM2-135M rambles on some of these 4 invoices (3 of 4 at seed 3, before and
    # after the orchestration rewrite), so: some row parses, and the model itself got a field right.
    _, df = run
    llm = df[df["variant"] == "smol-fp32"]
    answered = llm["error"].isna()
    assert answered.any(), llm["error"].tolist()
    model_only = {}  # correct values the model produced itself (not an error row, not a fallback)
    for field in FIELDS:
        own = answered & ~llm["fallback_fields"].map(lambda x, f=field: x is not None and f in list(x)).astype(bool)
        model_only[field] = float((llm[f"match_{field}"].fillna(False).astype(bool) & own).mean())
    assert max(model_only.values()) > 0, (model_only, llm["raw_output"].tolist())


def test_rules_baseline_reads_the_ocr_text(run):
    _, df = run
    rules = df[df["variant"] == "rules"]
    assert rules["match_total"].mean() >= 0.5 and rules["match_invoice_date"].mean() >= 0.5


def test_summary_and_files(run):
    result, df = run
    summary = json.loads((result.out_dir / "summary.json").read_text())
    by = {r["variant"]: r for r in summary["rows"]}
    assert set(by) == {"smol-fp32", "rules"} and summary["documents"] == 4
    llm = df[df["variant"] == "smol-fp32"]
    assert by["smol-fp32"]["total"] == pytest.approx(llm["match_total"].mean())
    assert by["smol-fp32"]["memory_bytes"] > 100e6  # 135M parameters in fp32
