"""invoicelab.load: a run's results as a pandas or polars frame whose columns are all documented."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import invoicelab
from invoicelab import loading
from invoicelab.results import BASE_COLUMNS, to_table
from invoicelab.store import write_part

FIELDS = ["invoice_number", "total"]


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run folder with two result parts (4 rows) and its experiment.json."""
    run = tmp_path / "runs" / "demo"
    for i, variant in enumerate(("small", "rules")):
        rows = [{"doc_id": d, "variant": variant, "prompt": "none", "key": f"{variant}-{d}", "fallback_fields": [],
                 "pred_total": "10.00", "gt_total": "10.00", "match_total": True, "score_total": 1.0,
                 "pred_invoice_number": "A1" if d == "d1" else None, "gt_invoice_number": "A1",
                 "match_invoice_number": d == "d1", "score_invoice_number": float(d == "d1")}
                for d in ("d1", "d2")]
        write_part(run / "results", to_table(rows, FIELDS), f"part-{i}")
    (run / "experiment.json").write_text(json.dumps({"fields": {"invoice_number": {"type": "id"},
                                                                "total": {"type": "amount"}}}))
    return run


def documented() -> tuple[set[str], set[str]]:
    """Base column names and per-field prefixes from the tables of ``load``'s docstring."""
    names = set(re.findall(r"^    ([a-z_0-9]+)\s{2,}\S", loading.load.__doc__, re.MULTILINE))
    prefixes = {n[:-1] for n in names if n.endswith("_f")}
    return names - {p + "f" for p in prefixes}, prefixes


def test_every_column_of_the_frame_is_documented(run_dir):
    df = invoicelab.load(run_dir)
    assert isinstance(df, pd.DataFrame) and len(df) == 4
    base, prefixes = documented()
    assert base == {name for name, _ in BASE_COLUMNS}  # no base column undocumented, none documented but absent
    assert {"pred_", "gt_", "truth_", "score_", "match_", "in_text_"} == prefixes
    assert set(df.columns) <= base | {p + f for p in prefixes for f in FIELDS}  # nothing undocumented
    assert df.set_index(["variant", "doc_id"]).loc[("small", "d1"), "pred_invoice_number"] == "A1"


def test_polars_frame_has_the_same_rows_and_columns(run_dir):
    pl = pytest.importorskip("polars", reason="polars is an optional extra: pip install 'invoicelab[polars]'")
    df = invoicelab.load(run_dir, engine="polars")
    assert isinstance(df, pl.DataFrame)
    assert df.columns == list(invoicelab.load(run_dir).columns)
    assert df.filter(pl.col("match_total")).height == 4


def test_outcomes_are_one_row_per_value(run_dir):
    out = invoicelab.load(run_dir, with_outcomes=True)
    assert len(out) == 4 * len(FIELDS)
    right = out[out["field"] == "invoice_number"].groupby("doc_id")["correct"].all()
    assert right.to_dict() == {"d1": True, "d2": False}


def test_a_folder_without_results_is_named_in_the_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "results"))):
        invoicelab.load(tmp_path)
    (tmp_path / "results").mkdir()
    with pytest.raises(FileNotFoundError, match="no result parts"):
        invoicelab.load(tmp_path)
    with pytest.raises(ValueError, match="available: pandas, polars"):
        invoicelab.load(tmp_path, engine="spark")


def test_missing_polars_names_the_install_command(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "polars", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install polars"):
        invoicelab.load(run_dir, engine="polars")


def test_importing_invoicelab_stays_light():
    code = ("import sys; sys.modules['ray'] = None\nimport invoicelab\n"
            "heavy = [m for m in ('pandas', 'pyarrow', 'polars', 'duckdb') if m in sys.modules]\n"
            "assert not heavy, heavy; assert callable(invoicelab.load)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
