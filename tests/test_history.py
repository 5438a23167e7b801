"""The run history: runs recorded in <store>/history.duckdb, the timeline, trends and shared documents."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from invoicelab import history as h
from invoicelab.results import to_table
from invoicelab.store import write_part

FIELDS = ["invoice_number", "total"]
VARIANTS = [{"name": "small", "backend": "ocr-llm", "model": "smollm2-135m", "precision": "int8-dynamic"},
            {"name": "rules", "backend": "rules"}]


def make_run(root: Path, name: str, finished: str, docs: list[str], accuracy: dict[str, float],
             dataset: dict, empty_truth: str | None = None) -> Path:
    """A run folder written by hand: experiment.json, summary.json and one result part."""
    run = root / name
    run.mkdir(parents=True)
    experiment = {"name": name, "kind": "model", "seed": 7, "dataset": dataset, "variants": VARIANTS,
                  "fields": {f: {"type": "text"} for f in FIELDS}, "prompts": ["terse-json"]}
    rows = []
    for v, prompt in (("small", "terse-json"), ("rules", "none")):
        for d in docs:
            row = {"doc_id": d, "variant": v, "prompt": prompt, "key": f"{v}-{d}", "fallback_fields": []}
            for f in FIELDS:
                gt = "" if d == empty_truth else f"{f}-{d}"
                row.update({f"pred_{f}": f"{f}-{d}", f"gt_{f}": gt, f"match_{f}": True, f"score_{f}": 1.0})
            rows.append(row)
    write_part(run / "results", to_table(rows, FIELDS), "part-0")
    summary = {"name": name, "kind": "model", "fields": FIELDS, "documents": len(docs), "finished_at": finished,
               "rows": [{"variant": "small", "prompt": "terse-json", **accuracy, "accuracy": sum(accuracy.values()) / 2,
                         "f1": 0.5, "exact": 0.25, "precision": 0.9},
                        {"variant": "rules", "prompt": "none", "invoice_number": 0.1, "total": 0.2}]}
    (run / "experiment.json").write_text(json.dumps(experiment))
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def record(store: Path, run: Path) -> str:
    return h.record_run(store, run, json.loads((run / "summary.json").read_text()),
                        json.loads((run / "experiment.json").read_text()), {"cpu": "test"})


@pytest.fixture
def two_runs(tmp_path):
    """Run a (January, synthetic, d1-d3) and run b (February, a folder dataset, d2-d4), recorded in tmp/store."""
    store = tmp_path / "store"
    a = make_run(tmp_path / "runs", "jan", "2026-01-05T10:00:00+00:00", ["d1", "d2", "d3"],
                 {"invoice_number": 0.5, "total": 0.25}, {"source": "synthetic", "n": 3}, empty_truth="d3")
    b = make_run(tmp_path / "runs", "feb", "2026-02-07T09:30:00+00:00", ["d2", "d3", "d4"],
                 {"invoice_number": 0.75, "total": 0.5}, {"source": "folder", "path": "data/sroie"})
    return store, a, b, record(store, a), record(store, b)


def test_history_is_a_timeline_newest_first_in_the_chosen_folder(two_runs, tmp_path):
    store, _, _, id_a, id_b = two_runs
    assert (store / "history.duckdb").is_file()
    assert not list((tmp_path / "runs").glob("*.duckdb"))
    df = h.history(store)
    assert list(df.columns) == h.HISTORY_COLUMNS
    assert list(dict.fromkeys(df["run_id"])) == [id_b, id_a]
    assert id_a.startswith("jan-20260105T100000-") and id_b.startswith("feb-20260207T093000-")
    assert str(df["finished_at"].dt.tz) == "UTC"
    row = df[(df.run_id == id_b) & (df.variant == "small") & (df.field == "total")].iloc[0]
    assert (row.accuracy, row.model, row.precision, row.prompt, row.kind) == (0.5, "smollm2-135m", "int8-dynamic",
                                                                              "terse-json", "model")
    # n: rows whose truth is not empty (run a's d3 has none) -> 2 of 3; "all" is the micro accuracy over both fields
    n_a = df[(df.run_id == id_a) & (df.variant == "small")].set_index("field")
    assert n_a.loc["total", "n"] == 2 and n_a.loc["all", "n"] == 4
    assert n_a.loc["all", "accuracy"] == pytest.approx(0.375)
    assert set(df[df.run_id == id_a]["dataset"]) == {"synthetic n=3,seed=7"}


def test_history_filters_by_model_prompt_field_and_dataset(two_runs):
    store, _, _, id_a, id_b = two_runs
    by_model = h.history(store, model="SMOLLM")
    assert set(by_model["variant"]) == {"small"} and len(by_model) == 2 * 3  # 2 runs x (2 fields + all)
    assert set(h.history(store, model="rules")["variant"]) == {"rules"}
    assert set(h.history(store, prompt="terse")["prompt"]) == {"terse-json"}
    by_field = h.history(store, field="total")
    assert set(by_field["field"]) == {"total"} and len(by_field) == 4
    by_dataset = h.history(store, dataset="sroie")
    assert set(by_dataset["run_id"]) == {id_b}
    both = h.history(store, model="small", field="invoice_number", dataset="synthetic")
    assert both[["run_id", "accuracy"]].values.tolist() == [[id_a, 0.5]]
    assert h.history(store, name="nothing-like-this").empty


def test_trend_is_ordered_by_time(two_runs):
    store, *_ = two_runs
    df = h.trend(store, model="small", field="invoice_number")
    assert list(df.columns) == h.TREND_COLUMNS
    assert df["finished_at"].is_monotonic_increasing
    assert df["accuracy"].tolist() == [0.5, 0.75]


def test_recording_again_replaces_instead_of_duplicating(two_runs):
    store, a, _, id_a, _ = two_runs
    before = len(h.history(store))
    assert record(store, a) == id_a
    assert len(h.history(store)) == before
    summary = json.loads((a / "summary.json").read_text())
    summary["rows"][0]["total"] = 0.9
    h.record_run(store, a, summary, json.loads((a / "experiment.json").read_text()))
    df = h.history(store, model="small", field="total")
    assert len(h.history(store)) == before
    assert df[df.run_id == id_a]["accuracy"].tolist() == [0.9]


def test_a_run_is_dated_by_its_summary_file_without_finished_at(tmp_path):
    run = make_run(tmp_path, "undated", "", ["d1"], {"invoice_number": 1.0, "total": 1.0}, {"source": "synthetic"})
    first = record(tmp_path / "store", run)
    assert record(tmp_path / "store", run) == first  # the file's time, not the present, so no duplicate
    assert len(h.history(tmp_path / "store")["run_id"].unique()) == 1


def test_shared_documents_pairs_only_documents_in_both_runs(two_runs):
    _, a, b, *_ = two_runs
    rows_a, rows_b = h.shared_documents(a, b, columns=["match_total"])
    assert list(rows_a.columns) == ["doc_id", "variant", "prompt", "match_total"]
    assert sorted(set(rows_a["doc_id"])) == sorted(set(rows_b["doc_id"])) == ["d2", "d3"]
    assert len(rows_a) == len(rows_b) == 4  # 2 documents x 2 variants
    with pytest.raises(FileNotFoundError, match="results"):
        h.shared_documents(a, a.parent / "missing")


def test_duckdb_reads_a_recorded_runs_parquet_in_place(two_runs):
    store, a, *_ = two_runs
    con = duckdb.connect(str(store / "history.duckdb"), read_only=True)
    try:
        run_dir = con.execute("SELECT run_dir FROM runs WHERE name = 'jan'").fetchone()[0]
        n = con.execute("SELECT count(*) FROM run_results(?)", [run_dir]).fetchone()[0]
        hardware = con.execute("SELECT hardware->>'cpu' FROM runs WHERE name = 'jan'").fetchone()[0]
    finally:
        con.close()
    assert (Path(run_dir), n, hardware) == (a.resolve(), 6, "test")


def test_resolve_run_by_folder_id_or_prefix(two_runs):
    store, a, b, id_a, _ = two_runs
    assert h.resolve_run(store, str(a)) == a
    assert h.resolve_run(store, id_a) == a.resolve()
    assert h.resolve_run(store, "feb") == b.resolve()
    with pytest.raises(FileNotFoundError, match="no run folder"):
        h.resolve_run(store, "march")


def test_a_writer_waits_for_another_process_holding_the_lock(tmp_path):
    run = make_run(tmp_path, "locked", "2026-03-01T00:00:00", ["d1"], {"invoice_number": 1.0, "total": 1.0},
                   {"source": "synthetic"})
    store = tmp_path / "store"
    store.mkdir()
    code = ("import duckdb, time\n"
            f"con = duckdb.connect({str(store / 'history.duckdb')!r})\n"
            "print('held', flush=True); time.sleep(1.5); con.close()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        run_id = record(store, run)
        assert time.monotonic() - start > 0.5  # it did wait for the other process
    finally:
        holder.wait(timeout=30)
    assert set(h.history(store)["run_id"]) == {run_id}


def test_format_history_shows_each_run_once(two_runs):
    store, _, _, id_a, id_b = two_runs
    lines = h.format_history(h.history(store, model="small"))
    assert lines[0].split()[:3] == ["finished", "(UTC)", "run"]
    assert sum(id_a in line for line in lines) == 1 and sum(id_b in line for line in lines) == 1
    row = next(line.split() for line in lines if id_b in line)  # the run's first row: invoice_number
    assert row[-4:] == ["terse-json", "invoice_number", "0.750", "3"]
    assert h.format_history(h.history(store / "empty")) == ["no runs recorded"]


def test_importing_the_history_loads_no_database_or_pandas():
    code = ("import sys\nimport invoicelab.history\n"
            "heavy = [m for m in ('duckdb', 'pandas', 'pyarrow') if m in sys.modules]\nassert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_report_plots_the_experiments_past_runs(tmp_path):
    """A run's report.html gains the trend section once the history holds earlier runs of the same experiment."""
    from invoicelab.report import html_report
    from invoicelab.runs import experiment_of

    store = tmp_path / "runs"
    runs = [make_run(store, f"q{i}", f"2026-0{i + 1}-05T10:00:00+00:00", ["d1", "d2"],
                     {"invoice_number": 0.5 + i / 4, "total": 0.5}, {"source": "synthetic", "n": 2}) for i in range(2)]
    for run in runs:  # both recorded under one experiment name, as two runs of it would be
        summary = json.loads((run / "summary.json").read_text())
        experiment = {**json.loads((run / "experiment.json").read_text()), "name": "trend"}
        h.record_run(store, run, {**summary, "name": "trend"}, experiment)
    exp = experiment_of(runs[1]).model_copy(update={"name": "trend", "store": str(store)})
    summary = json.loads((runs[1] / "summary.json").read_text())
    html = html_report(runs[1], summary, exp).read_text()
    assert "Accuracy over past runs" in html
    other = experiment_of(runs[1]).model_copy(update={"name": "another", "store": str(store)})
    assert "Accuracy over past runs" not in html_report(runs[1], summary, other).read_text()
