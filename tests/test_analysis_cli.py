"""The analysis commands on real runs (fake backend, local Ray): report, history, compare, plan-ab."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from invoicelab.cli import main


def config(tmp_path, name: str, wrong: dict[str, float], n: int = 12) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nkind: prompt\nseed: 3\noutput_dir: {tmp_path}/runs/{{name}}\nstore: {tmp_path}/runs\n"
        f"dataset: {{source: synthetic, n: {n}}}\nfields: {{total: amount, invoice_number: id}}\n"
        "prompts: [terse-json, described-json]\n"
        f"variants: [{{name: echo, backend: fake, options: {{wrong_rate: {json.dumps(wrong)}}}}}]\n"
        "analysis: {n_boot: 500}\n"
    )
    return str(path)


@pytest.fixture(scope="module")
def two_runs(ray_cluster, tmp_path_factory):
    """Two prompt experiments on the same 12 invoices: the second prompt is much better in the first run."""
    tmp = tmp_path_factory.mktemp("analysis")
    runner = CliRunner()
    for name, wrong in (("before", {"terse-json": 0.9, "described-json": 0.0}),
                        ("after", {"terse-json": 0.0, "described-json": 0.0})):
        result = runner.invoke(main, ["run", config(tmp, name, wrong)])
        assert result.exit_code == 0, result.output
    return tmp


def test_a_run_writes_its_report_and_history(two_runs):
    run = two_runs / "runs" / "before"
    html = (run / "report.html").read_text()
    assert "Holm" in html and "described-json" in html
    assert (two_runs / "runs" / "history.duckdb").is_file()
    summary = json.loads((run / "summary.json").read_text())
    total = next(t for t in summary["tests"] if t["field"] == "total")
    assert total["significant"] and total["p_adjusted"] < 0.05 and total["b_only"] >= 8


def test_history_lists_both_runs_and_filters(two_runs):
    runner = CliRunner()
    shown = runner.invoke(main, ["history", "--store", str(two_runs / "runs")])
    assert shown.exit_code == 0, shown.output
    assert "before" in shown.output and "after" in shown.output
    only = runner.invoke(main, ["history", "--store", str(two_runs / "runs"), "--name", "after", "--field", "total"])
    assert "after" in only.output and "before" not in only.output
    missing = runner.invoke(main, ["history", "--store", str(two_runs / "nowhere")])
    assert missing.exit_code == 2 and "no history" in missing.output


def test_compare_pairs_the_shared_documents(two_runs):
    runs = two_runs / "runs"
    result = CliRunner().invoke(main, ["compare", str(runs / "before"), str(runs / "after"), "--n-boot", "200"])
    assert result.exit_code == 0, result.output
    assert "12 shared documents" in result.output
    lines = [line for line in result.output.splitlines() if "terse-json" in line and "total" in line]
    assert lines and "significant" in lines[0]  # the terse prompt got much better between the runs


def test_report_command_rewrites_the_report(two_runs):
    run = two_runs / "runs" / "after"
    (run / "report.html").unlink()
    result = CliRunner().invoke(main, ["report", str(run), "--no-history"])
    assert result.exit_code == 0, result.output
    assert (run / "report.html").is_file()
    bad = CliRunner().invoke(main, ["report", str(two_runs)])
    assert bad.exit_code == 2 and "not a run folder" in bad.output


def test_plan_ab_from_rates_and_from_a_pilot(two_runs):
    runner = CliRunner()
    given = runner.invoke(main, ["plan-ab", "--a-only", "0.05", "--b-only", "0.15"])
    assert given.exit_code == 0, given.output
    assert "documents" in given.output
    pilot = runner.invoke(main, ["plan-ab", str(two_runs / "runs" / "before"), "--tests", "2"])
    assert pilot.exit_code == 0, pilot.output
    assert "total" in pilot.output and "0.025 per test" in pilot.output
    neither = runner.invoke(main, ["plan-ab"])
    assert neither.exit_code == 2
