"""Logging a run to MLflow: a local file store under tmp_path, read back with MLflow's own client."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from invoicelab.identity import digest

mlflow = pytest.importorskip("mlflow", reason="MLflow logging is an optional extra: pip install 'invoicelab[mlflow]'")

SUMMARY = {"name": "quickstart", "kind": "quantization", "fields": ["invoice_number", "total"], "documents": 16,
           "rows": [{"variant": "smollm2-int8", "prompt": "terse-json", "invoice_number": 0.375, "total": 0.75,
                     "accuracy": 0.5625, "f1": 0.6},
                    {"variant": "rules", "prompt": "none", "invoice_number": 0.25, "total": None}]}


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "runs" / "quickstart"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(SUMMARY))
    (run / "experiment.json").write_text(json.dumps({"name": "quickstart", "seed": 7}))
    return run


def test_a_run_logged_to_a_file_store_reads_back(run_dir, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from invoicelab.mlflow_log import log_run

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    run_id = log_run(SUMMARY, run_dir, uri, experiment_name="invoices")
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # the opt-in lasted only for the call
    assert (tmp_path / "mlruns").is_dir()

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading the legacy file store needs the same opt-in
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "invoices"
    assert run.data.metrics == {"acc.smollm2-int8.terse-json.invoice_number": 0.375,
                                "acc.smollm2-int8.terse-json.total": 0.75,
                                "accuracy.smollm2-int8.terse-json": 0.5625, "f1.smollm2-int8.terse-json": 0.6,
                                "acc.rules.none.invoice_number": 0.25}
    assert run.data.params == {"kind": "quantization", "documents": "16", "variants": "smollm2-int8,rules",
                               "prompts": "terse-json,none",
                               "config_digest": digest({"name": "quickstart", "seed": 7})}
    assert {a.path for a in client.list_artifacts(run_id)} == {"summary.json", "experiment.json"}
    local = client.download_artifacts(run_id, "summary.json", str(tmp_path / "down"))
    assert json.loads(Path(local).read_text()) == SUMMARY

    second = log_run(SUMMARY, run_dir, uri, experiment_name="invoices")  # the experiment is reused
    assert client.get_run(second).info.experiment_id == run.info.experiment_id


def test_metric_names_keep_only_characters_mlflow_accepts():
    from invoicelab.mlflow_log import metric_name

    assert metric_name("acc", "qwen@2.5 (int4)", "my prompt!", "total") == "acc.qwen_2_5 _int4_.my prompt_.total"


def test_without_mlflow_the_error_names_the_extra(run_dir, monkeypatch):
    import sys

    from invoicelab.mlflow_log import log_run

    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ImportError, match=r"pip install 'invoicelab\[mlflow\]'"):
        log_run(SUMMARY, run_dir, "file:///nowhere")
