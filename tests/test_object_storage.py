"""End to end from object storage: a dataset on a real S3-compatible server (moto, on 127.0.0.1),
read by the Ray workers themselves; no local copy of the documents exists anywhere."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from invoicelab.config import parse_experiment
from invoicelab.data.synthetic import generate
from invoicelab.orchestrator.pipeline import run_experiment

pytestmark = pytest.mark.ray

BUCKET = "e2e-invoices"


def upload(folder, endpoint: str, prefix: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


def test_workers_read_an_s3_dataset_with_no_local_copy(ray_cluster, s3_server, tmp_path):
    folder = tmp_path / "local"
    generate(folder, n=5, seed=11)
    upload(folder, s3_server, "ds")
    shutil.rmtree(folder)  # the only copy is now in the bucket
    exp = parse_experiment({
        "name": "s3", "output_dir": str(tmp_path / "{name}"),
        "dataset": {"source": "folder", "path": f"s3://{BUCKET}/ds"},
        "fields": {"invoice_number": "id", "total": "amount"},
        "variants": [{"name": "echo", "backend": "fake", "batch_size": 2}],
    })
    result = run_experiment(exp)
    df = pd.read_parquet(result.results)
    assert len(df) == 5 and df["doc_id"].is_unique
    assert df["error"].isna().all(), df["error"].dropna().tolist()
    assert df["file"].str.startswith(f"s3://{BUCKET}/ds/").all()
    assert df["doc_sha256"].str.len().eq(64).all() and df["match_total"].all()
    # A rerun finds every row by content key, without reading a document again.
    assert run_experiment(exp).summary["computed_rows"] == 0
