"""`invoicelab recommend`: a configuration from a real results store, or a plain 'nothing meets' naming why.

The store is written by a real `invoicelab run` of the fake backend (two variants: one right on every
document but slowed down, one fast that alters half its answers), so the history, its performance table
and the run folder are what a user's run leaves.
"""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest
from click.testing import CliRunner

from invoicelab.cli import main
from invoicelab.history_perf import performance
from invoicelab.recommend import values_needed, wilson

DOCS = 12


@pytest.fixture(scope="module")
def store(ray_cluster, tmp_path_factory):
    """A store holding one recorded run: `careful` (all right, 0.3 s a batch of 2) and `sloppy` (half wrong)."""
    root = tmp_path_factory.mktemp("rec")
    config = root / "e.yaml"
    config.write_text(
        f"name: rec\nkind: model\nstore: {root}/store\noutput_dir: {root}/store/rec\n"
        f"dataset: {{source: synthetic, n: {DOCS}}}\nfields: {{total: amount, invoice_number: id}}\n"
        "variants:\n"
        "  - {name: careful, backend: fake, batch_size: 2, options: {delay_s: 0.3}}\n"
        "  - {name: sloppy, backend: fake, batch_size: 4, options: {wrong_rate: 0.5}}\n")
    result = CliRunner().invoke(main, ["run", str(config)])
    assert result.exit_code == 0, result.output
    return root / "store"


def recommend(store, *args):
    return CliRunner().invoke(main, ["recommend", "--store", str(store), *args])


def as_json(result) -> dict:
    """The JSON document the command printed on stdout (Ray may log to stderr, or after it)."""
    text = result.stdout
    return json.JSONDecoder().raw_decode(text[text.index("{"):])[0]


def test_each_run_records_its_variants_speed_memory_and_batch_sizes(store):
    rows = {r["variant"]: r for r in performance(store)}
    assert set(rows) == {"careful", "sloppy"}
    careful, sloppy = rows["careful"], rows["sloppy"]
    assert careful["docs"] == DOCS and careful["batch_size"] == 2 and careful["micro_batch"] <= 2
    assert careful["peak_memory_bytes"] > 0 and careful["hardware"]["cpus"]
    assert 0 < careful["docs_per_s"] < sloppy["docs_per_s"]  # 0.3 s a batch of 2: at most ~6.7 docs/s
    assert careful["docs_per_s"] < 7.5


def test_recommends_the_configuration_that_meets_the_constraints_with_its_evidence(store):
    result = recommend(store, "--min-accuracy", "total=0.9", "--min-docs-per-s", "1", "--json")
    assert result.exit_code == 0, result.output
    rec = as_json(result)
    choice = rec["choice"]
    assert (choice["variant"], choice["batch_size"]) == ("careful", 2)
    assert choice["accuracy"]["total"]["value"] == 1.0 and choice["accuracy"]["total"]["n"] == DOCS
    assert choice["accuracy"]["total"]["low"] < 1.0  # an interval, not a point
    assert choice["run_id"].startswith("rec-") and choice["same_hardware"]
    assert choice["actors"] >= 1 and choice["pool_docs_per_s"] == pytest.approx(choice["docs_per_s"] * choice["actors"])
    text = recommend(store, "--min-accuracy", "total=0.9", "--min-docs-per-s", "1")
    assert text.exit_code == 0
    assert "careful with prompt" in text.output and "measured on this hardware" in text.output
    assert choice["run_id"] in text.output and "batch_size 2" in text.output


def test_speed_preference_picks_the_fast_one_when_accuracy_allows(store):
    rec = as_json(recommend(store, "--prefer", "speed", "--json"))
    assert rec["choice"]["variant"] == "sloppy"
    rec = as_json(recommend(store, "--prefer", "speed", "--min-accuracy", "total=0.9", "--json"))
    assert rec["choice"]["variant"] == "careful"


def test_nothing_meets_says_so_exits_1_and_names_each_failed_constraint(store):
    result = recommend(store, "--min-accuracy", "total=0.9", "--max-memory-gb", "0.001")
    assert result.exit_code == 1, result.output
    assert "NO measured configuration meets the constraints" in result.output
    assert "careful/" in result.output and "peak memory" in result.output and "> 0.001 GB" in result.output
    assert "accuracy of total" in result.output  # sloppy fails that too
    slow = recommend(store, "--min-docs-per-s", "100000")
    assert slow.exit_code == 1 and "docs/s" in slow.output and "< 100000" in slow.output
    unknown = recommend(store, "--min-accuracy", "vat=0.5")
    assert unknown.exit_code == 1 and "accuracy of vat: not measured" in unknown.output


def test_thin_evidence_names_the_experiment_to_run_next(store):
    """12 documents all right: the interval's lower end (0.76) is below 0.9, so it says how many would clear it."""
    result = recommend(store, "--min-accuracy", "total=0.9")
    assert result.exit_code == 0
    needed = values_needed(1.0, 0.9)
    assert needed > DOCS and wilson(1.0, needed)[0] >= 0.9 > wilson(1.0, needed - 1)[0]
    assert "next experiment:" in result.output
    assert f"run it on about {needed} scored values (now {DOCS})" in result.output
    relaxed = recommend(store, "--min-accuracy", "total=0.5")  # the interval clears 0.5: nothing to add
    assert "total: the 95% interval" not in relaxed.output


def test_evidence_from_other_hardware_is_named_and_actors_follow_the_cluster(store):
    here = as_json(recommend(store, "--min-accuracy", "total=0.9", "--json"))["choice"]
    gpu = as_json(recommend(store, "--min-accuracy", "total=0.9", "--gpus", "1", "--gpu-name", "H100",
                               "--gpu-memory-gb", "80", "--json"))
    assert gpu["choice"]["variant"] == "careful" and not gpu["choice"]["same_hardware"]
    assert any("evidence comes from" in n for n in gpu["notes"])
    assert any("measure careful" in s for s in gpu["next_experiments"])
    wide = as_json(recommend(store, "--cpus", "16", "--min-accuracy", "total=0.9", "--json"))["choice"]
    assert wide["actors"] == 16 and wide["actors"] > here["actors"]  # one CPU per actor
    narrow = recommend(store, "--cpus", "1", "--min-docs-per-s", "20", "--min-accuracy", "total=0.9")
    assert narrow.exit_code == 1 and "with 1 actor(s) < 20" in narrow.output


def test_a_store_recorded_before_the_performance_table_reads_the_run_folders(store, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(store, old, ignore=shutil.ignore_patterns("rec"))  # the run folder stays where it was recorded
    con = duckdb.connect(str(old / "history.duckdb"))
    con.execute("DROP TABLE performance")
    con.close()
    rows = performance(old)
    assert {r["variant"] for r in rows} == {"careful", "sloppy"} and all(r["from_folder"] for r in rows)
    rec = as_json(recommend(old, "--min-accuracy", "total=0.9", "--min-docs-per-s", "1", "--json"))
    assert rec["choice"]["variant"] == "careful" and rec["choice"]["batch_size"] == 2


def test_bad_arguments_and_an_empty_store_exit_2(tmp_path, store):
    assert recommend(tmp_path, "--min-accuracy", "total=0.9").exit_code == 2
    bad = recommend(store, "--min-accuracy", "total")
    assert bad.exit_code == 2 and "FIELD=VALUE" in bad.output
    none = recommend(store, "--dataset", "no-such-dataset")
    assert none.exit_code == 2 and "no recorded run" in none.output


def test_address_recommends_for_the_running_ray_cluster(store):
    rec = as_json(recommend(store, "--address", "auto", "--min-accuracy", "total=0.9", "--json"))
    assert rec["cluster"].startswith("2 CPUs (ray cluster)")  # the session's 2-CPU cluster, not this machine
    assert rec["choice"]["actors"] == 2
