"""The orchestrator with real processes: workers killed mid-batch, hung batches, a killed driver,
resume, reuse between experiments, and the plan. All on the session's local Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from invoicelab import store
from invoicelab.cli import main
from invoicelab.config import parse_experiment
from invoicelab.orchestrator.pipeline import ClusterError, run_experiment

pytestmark = pytest.mark.ray

FIELDS = {"invoice_number": "id", "total": "amount"}
DOCS = [f"synth_{i:05d}" for i in range(8)]


def config(tmp_path, variants, name="orch", n=8, prompts=("terse-json",), **extra) -> dict:
    return {"name": name, "kind": "model", "output_dir": str(tmp_path / "{name}"),
            "dataset": {"source": "synthetic", "n": n}, "fields": FIELDS, "prompts": list(prompts),
            "variants": variants, **extra}


def frame(result) -> pd.DataFrame:
    return pd.read_parquet(result.results)


def exactly_once(df: pd.DataFrame) -> bool:
    return not df.duplicated(["doc_id", "variant", "prompt"]).any() and not df["key"].duplicated().any()


def test_a_document_that_kills_its_worker_is_isolated_and_its_batch_mates_succeed(ray_cluster, tmp_path):
    killer = DOCS[5]
    variants = [{"name": "fragile", "backend": "fake", "batch_size": 4,
                 "options": {"kill_on": [killer]}, "faults": {"max_retries": 1}}]
    df = frame(run_experiment(parse_experiment(config(tmp_path, variants))))
    assert len(df) == 8 and exactly_once(df)
    rows = df.set_index("doc_id")
    assert rows.loc[killer, "error"].startswith("worker died while processing this document (2 times)")
    assert rows.loc[killer, "error_stage"] == "worker"
    others = rows.drop(index=killer)
    assert others["error"].isna().all() and others["match_total"].all()  # its batch mates included


def test_a_hung_batch_times_out_into_error_rows_and_the_run_goes_on(ray_cluster, tmp_path):
    variants = [{"name": "slow", "backend": "fake", "batch_size": 2,
                 "options": {"hang_on": [DOCS[0]], "hang_s": 600}, "faults": {"batch_timeout_s": 3}}]
    start = time.perf_counter()
    df = frame(run_experiment(parse_experiment(config(tmp_path, variants))))
    assert time.perf_counter() - start < 300  # not the 600 s the batch would hang
    assert len(df) == 8 and exactly_once(df)
    timed_out = df[df["error_stage"] == "timeout"]
    assert set(timed_out["doc_id"]) == {DOCS[0], DOCS[1]}  # the hung batch of 2
    assert timed_out["error"].str.startswith("batch timed out after 3 s").all()
    assert df[~df["doc_id"].isin([DOCS[0], DOCS[1]])]["error"].isna().all()


def test_a_model_that_cannot_load_is_error_rows_and_other_variants_finish(ray_cluster, tmp_path):
    variants = [{"name": "echo", "backend": "fake"},
                {"name": "missing", "backend": "ocr-llm", "model": str(tmp_path / "no-such-model"),
                 "ocr": {"engine": "none"}}]
    df = frame(run_experiment(parse_experiment(config(tmp_path, variants, n=4))))
    assert len(df) == 8 and exactly_once(df)
    missing = df[df["variant"] == "missing"]
    assert (missing["error_stage"] == "load").all()
    assert missing["error"].str.startswith("variant failed to load").all()
    assert df[df["variant"] == "echo"]["error"].isna().all()


def test_a_pool_the_cluster_can_never_hold_is_refused_before_anything_starts(ray_cluster, tmp_path):
    variants = [{"name": "big", "backend": "fake", "resources": {"num_cpus": 1, "num_gpus": 1}}]
    exp = parse_experiment(config(tmp_path, variants, n=2))
    with pytest.raises(ClusterError, match=r"variant 'big': one actor asks for CPU=1, GPU=1 but no node"):
        run_experiment(exp)
    assert not list((tmp_path / "orch" / "results").glob("*.parquet"))


def test_rerun_computes_nothing_and_another_experiment_reuses_shared_rows(ray_cluster, tmp_path):
    variants = [{"name": "a", "backend": "fake", "batch_size": 3}]
    first = run_experiment(parse_experiment(config(tmp_path, variants, name="one")))
    assert first.summary["computed_rows"] == 8
    again = run_experiment(parse_experiment(config(tmp_path, variants, name="one")))
    assert again.summary["computed_rows"] == 0 and again.summary["reused_rows"] == 0
    assert len(store.parts(first.results)) == len(store.parts(again.results))
    import pyarrow.dataset as pads  # the run's folder is one dataset for Arrow-based readers too

    assert pads.dataset(first.results).to_table(columns=["key"]).num_rows == 8
    # Same variant under another name, plus one more: the shared rows come from the store.
    two = [{"name": "renamed", "backend": "fake", "batch_size": 3}, {"name": "b", "backend": "fake", "batch_size": 5}]
    other = run_experiment(parse_experiment(config(tmp_path, two, name="two")))
    assert other.summary["reused_rows"] == 8 and other.summary["computed_rows"] == 8
    df = frame(other)
    assert exactly_once(df) and set(df["variant"]) == {"renamed", "b"} and len(df) == 16
    assert other.summary["rows"][0]["variant"] == "renamed" and other.summary["rows"][0]["accuracy"] == 1.0


def test_plan_prints_rows_to_compute_and_what_fits(ray_cluster, tmp_path):
    path = tmp_path / "e.yaml"
    variants = [{"name": "a", "backend": "fake"}, {"name": "gpu", "backend": "fake", "resources": {"num_gpus": 2}}]
    path.write_text(yaml.safe_dump(config(tmp_path, variants, n=3)))
    result = CliRunner().invoke(main, ["plan", str(path)])
    assert result.exit_code == 2, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert lines["a"].split()[1:5] == ["3", "0", "0", "3"] and lines["a"].rstrip().endswith("yes")
    assert "cannot run: variant 'gpu'" in result.output and "GPU=2" in result.output
    assert not (tmp_path / "orch").exists()  # a plan starts and writes nothing
    refused = CliRunner().invoke(main, ["run", str(path)])
    assert refused.exit_code == 2 and "the cluster cannot hold this experiment" in refused.output
    assert not list((tmp_path / "orch" / "results").glob("*.parquet"))


def test_killed_driver_then_resume_computes_only_the_missing_rows(ray_cluster, tmp_path, private_cache):
    import ray

    cfg = config(tmp_path, [{"name": "slow", "backend": "fake", "batch_size": 2, "options": {"delay_s": 1.0}},
                            {"name": "fast", "backend": "fake", "batch_size": 4}],
                 name="killed", n=16, prompts=("terse-json", "described-json"))
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "INVOICELAB_CACHE": str(private_cache)}
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-m", "invoicelab.cli", "run", str(path), "--address", address],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "killed" / "results"
    deadline = time.monotonic() + 120
    while len(store.parts(results)) < 4 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    before = store.keys_in(results)
    assert 0 < len(before) < 64, "the driver was killed mid-run"
    result = CliRunner().invoke(main, ["run", "--resume", str(tmp_path / "killed")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["computed_rows"] == 64 - len(before)
    df = pd.read_parquet(results)
    assert len(df) == 64 and exactly_once(df) and df["error"].isna().all()


@pytest.mark.model
def test_ocr_and_inference_overlap(ray_cluster, tmp_path):
    """Rows of a variant are written while the page stage is still OCR-ing later documents."""
    variants = [{"name": "rules", "backend": "rules", "batch_size": 1, "resources": {"num_cpus": 1}}]
    exp = parse_experiment(config(tmp_path, variants, n=6, page_stage={"num_cpus": 1, "actors": 1}))
    result = run_experiment(exp)
    timings = result.summary["timings"]
    assert len(frame(result)) == 6
    assert timings["rules"]["first_s"] < timings["pages (rapidocr)"]["last_s"], timings


def test_rows_of_another_runs_faults_are_not_reused(ray_cluster, tmp_path):
    """A timeout in one experiment says what happened to that run, not what the computation gives."""
    variant = {"name": "v", "backend": "fake", "batch_size": 1,
               "options": {"hang_on": [DOCS[0]], "hang_s": 8}, "faults": {"batch_timeout_s": 2}}
    first = run_experiment(parse_experiment(config(tmp_path, [variant], name="first", n=3)))
    assert (frame(first).set_index("doc_id").loc[DOCS[0], "error_stage"]) == "timeout"
    patient = {**variant, "faults": {"batch_timeout_s": 60}}  # faults are not part of the identity
    second = run_experiment(parse_experiment(config(tmp_path, [patient], name="second", n=3)))
    assert second.summary["reused_rows"] == 2 and second.summary["computed_rows"] == 1
    assert frame(second)["error"].isna().all()


def test_rows_written_before_a_schema_change_are_reused_with_the_new_columns_empty(ray_cluster, tmp_path):
    import pyarrow.parquet as pq

    variants = [{"name": "a", "backend": "fake", "batch_size": 4}]
    first = run_experiment(parse_experiment(config(tmp_path, variants, name="old")))
    for part in store.parts(first.results):  # as an older version wrote them: no truth_/in_text_/prompt_hash
        table = pq.read_table(part)
        pq.write_table(table.drop([c for c in table.column_names if c.startswith(("truth_", "in_text_", "prompt_hash"))]),
                       part)
    other = run_experiment(parse_experiment(config(tmp_path, [{**variants[0], "name": "b"}], name="new")))
    assert other.summary["reused_rows"] == 8 and other.summary["computed_rows"] == 0
    df = frame(other)
    assert exactly_once(df) and len(df) == 8 and df["error"].isna().all()
    assert df["truth_total"].isna().all() and other.summary["rows"][0]["accuracy"] == 1.0
