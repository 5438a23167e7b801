"""The command line as a user meets it: exit codes and messages, generate, schema, run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from invoicelab.cli import main

BAD_CONFIGS = Path(__file__).parent / "bad_inputs" / "configs"


@pytest.mark.parametrize(
    "config, message",
    [
        ("typo_key.yaml", "variants.0.batchsize: unknown key (typo?)"),
        ("unknown_backend.yaml", "unknown backend 'vlm'; available: fake, rules, ocr-llm, transformers-vlm, vllm, openai-http"),
        ("unknown_prompt.yaml", "unknown prompt 'terse-jsn'; available: described-json, fewshot-json, terse-json"),
        ("negative_batch.yaml", "variants.0.batch_size: must be 'auto' or a whole number from 1 to 4096, got -2"),
        ("missing_dataset.yaml", "dataset folder not found: /nonexistent/invoices"),
    ],
)
def test_bad_config_exits_2_naming_the_problem_and_starts_nothing(config, message, tmp_path):
    result = CliRunner().invoke(main, ["run", str(BAD_CONFIGS / config), "--set", f"output_dir={tmp_path}/out"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_bad_override_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["run", "configs/quickstart.yaml", "--set", "variants.0.batch_size=0"])
    assert result.exit_code == 2 and "variants.0.batch_size" in result.output


def test_generate_writes_images_and_ground_truth(tmp_path):
    result = CliRunner().invoke(main, ["generate", "--n", "3", "--seed", "5", "--out", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "g" / "gt.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        record = json.loads(line)
        assert (tmp_path / "g" / record["file"]).is_file() and record["normalized"]["total"]


def test_generate_rejects_bad_knobs(tmp_path):
    result = CliRunner().invoke(main, ["generate", "--n", "2", "--out", str(tmp_path), "--noise", "3"])
    assert result.exit_code == 2 and "noise" in result.output


def test_schema_is_written(tmp_path):
    result = CliRunner().invoke(main, ["schema", "--out", str(tmp_path / "s.json")])
    assert result.exit_code == 0
    assert "variants" in json.loads((tmp_path / "s.json").read_text())["properties"]


@pytest.mark.ray
def test_run_prints_the_table_and_writes_results(ray_cluster, tmp_path):
    config = tmp_path / "e.yaml"
    config.write_text(
        "name: cli\nkind: extraction\ndataset: {source: synthetic, n: 3}\n"
        "fields: {total: amount, invoice_number: id}\nvariants: [{name: echo, backend: fake}]\n"
        f"output_dir: {tmp_path}/out\n"
    )
    result = CliRunner().invoke(main, ["run", str(config)])
    assert result.exit_code == 0, result.output
    assert "echo" in result.output and "100%" in result.output
    assert len(list((tmp_path / "out" / "results").glob("*.parquet"))) >= 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows"][0]["total"] == 1.0
    shown = CliRunner().invoke(main, ["show", str(tmp_path / "out")])
    assert shown.exit_code == 0 and "echo" in shown.output


def test_models_lists_every_backend_precision_and_ocr_engine_with_what_runs_here():
    from invoicelab.config import BACKENDS, PRECISIONS

    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert [b["backend"] for b in info["backends"]] == list(BACKENDS)
    assert all(b["here"] == "ok" or "pip install" in b["here"] or "GPU" in b["here"] for b in info["backends"])
    assert {b["backend"]: b["here"] for b in info["backends"]}["rules"] == "ok"
    by = {p["precision"]: p for p in info["precisions"]}
    assert list(by) == list(PRECISIONS) and by["fp32"]["cpu"] == "ok"
    if not info["machine"]["gpus"]:
        assert all(p["cuda"] == "no GPU here" for p in info["precisions"])
    assert {"rapidocr", "pdf-text"} <= set(info["ocr_engines"]) and info["ocr_engines"]["rapidocr"].startswith("ok")
    assert "smollm2-135m-instruct" in info["bundled_models"]
