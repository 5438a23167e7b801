"""Bad input, as a corpus: each bad document is an error row with its reason, and nothing else is lost."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from invoicelab.cli import main
from invoicelab.config import parse_experiment
from invoicelab.data.documents import DatasetError, read_manifest
from invoicelab.orchestrator.pipeline import run_experiment
from tests.bad_inputs.corpus import CONTAINMENT, EXPECTED, GOOD, make_corpus


def test_manifest_reading_turns_bad_lines_into_error_records(tmp_path):
    docs = {d.doc_id: d for d in read_manifest(make_corpus(tmp_path / "corpus"))}
    assert set(docs) == set(GOOD) | set(EXPECTED) | {"truncated", "zero_byte", "not_an_image", "bomb",
                                                     "corrupt_pdf", "encrypted_pdf"}
    assert docs["line-11"].error.startswith("gt.jsonl line 11: invalid JSON")
    assert docs["line-12"].error.startswith("gt.jsonl line 12: not valid UTF-8")
    assert docs["missing_file"].error == "file not found: nowhere.png"
    assert not docs["good_a"].error


@pytest.mark.ray
def test_every_bad_document_is_an_error_row_and_good_ones_survive(ray_cluster, tmp_path):
    folder = make_corpus(tmp_path / "corpus", containment=True)
    exp = parse_experiment({
        "name": "bad", "output_dir": str(tmp_path / "out"), "dataset": {"source": "folder", "path": str(folder)},
        "fields": {"invoice_number": "id", "total": "amount"},
        "variants": [{"name": "echo", "backend": "fake", "batch_size": 3}],
    })
    df = pd.read_parquet(run_experiment(exp).results).set_index("doc_id")
    assert df.index.is_unique and len(df) == len(GOOD) + len(EXPECTED) + len(CONTAINMENT)
    for doc_id, reason in {**EXPECTED, **CONTAINMENT}.items():
        assert reason in df.loc[doc_id, "error"], (doc_id, df.loc[doc_id, "error"])
    for doc_id, number in GOOD.items():
        assert pd.isna(df.loc[doc_id, "error"]) and df.loc[doc_id, "pred_invoice_number"] == number
        assert df.loc[doc_id, "match_total"]


@pytest.mark.parametrize(
    "gt_lines, message",
    [
        (['{"doc_id": "a", "file": "x.png", "fields": {}}', '{"doc_id": "a", "file": "y.png", "fields": {}}'],
         "doc_id 'a' appears on lines 1 and 2"),
        ([], "lists no documents"),
    ],
)
def test_unusable_datasets_exit_2_before_anything_starts(tmp_path, gt_lines, message):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "gt.jsonl").write_text("\n".join(gt_lines))
    with pytest.raises(DatasetError, match=message):
        read_manifest(folder)
    config = tmp_path / "e.yaml"
    config.write_text(json.dumps({"name": "d", "dataset": {"source": "folder", "path": str(folder)},
                                  "fields": {"total": "amount"}, "variants": [{"name": "a", "backend": "fake"}],
                                  "output_dir": str(tmp_path / "out")}))
    result = CliRunner().invoke(main, ["run", str(config)])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


def test_folder_without_manifest_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="no gt.jsonl in dataset folder"):
        read_manifest(tmp_path)
