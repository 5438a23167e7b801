"""Data on a cluster: datasets read from a real S3 API with no local copy, and manifests kept inside their folder.

The S3 tests run against moto's server mode on 127.0.0.1 (the ``s3_server`` fixture); the dataset is
generated locally, uploaded, and its local folder deleted before anything reads it. The containment
tests prove a manifest entry that leads outside its folder is an error record and its target is never
opened: every Python ``open`` (Pillow, pypdfium2's path loading) is seen by an audit hook and every
pyarrow read or listing goes through ``storage._filesystem``, which is spied on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from invoicelab.actors.pages import PAGE_COLUMNS, PageReader, page_schema
from invoicelab.config import parse_experiment
from invoicelab.data import storage
from invoicelab.data.documents import DatasetError, read_manifest
from invoicelab.data.pages import DocumentError
from invoicelab.data.sources import load_documents
from invoicelab.data.synthetic import generate
from tests.bad_inputs.corpus import CONTAINMENT, GOOD, SECRET_TEXT, make_corpus, secret_path, text_image

BUCKET = "invoices"
SETTING = {"engine": "none", "dpi": 100, "max_pages": 1, "max_pixels": 40_000_000}

# --- every file this process opens, while a test records ---------------------------------------------

_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # hooks cannot be removed; it records only while _opened is a list


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Every location opened during the test: Python-level opens and every storage access."""
    global _opened
    _opened = []
    real = storage._filesystem

    def spy(uri: str):
        _opened.append(str(uri))
        return real(uri)

    monkeypatch.setattr(storage, "_filesystem", spy)
    yield _opened
    _opened = None


# --- an S3 dataset with no local copy -----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_dataset(s3_server, tmp_path_factory) -> dict[str, bytes]:
    """Three synthetic invoices uploaded to s3://invoices/synthetic/, plus objects outside that prefix.

    Returns the uploaded bytes by key, after deleting the local folder they came from.
    """
    import boto3

    folder = tmp_path_factory.mktemp("upload") / "synthetic"
    generate(folder, n=3, seed=1)
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=BUCKET)
    uploaded = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"synthetic/{path.relative_to(folder).as_posix()}"
        uploaded[key] = path.read_bytes()
        s3.put_object(Bucket=BUCKET, Key=key, Body=uploaded[key])
    s3.put_object(Bucket=BUCKET, Key="private/secret.png", Body=text_image(SECRET_TEXT))
    good = json.loads(uploaded["synthetic/gt.jsonl"].splitlines()[0])
    escape = [{"doc_id": "dotdot", "file": "../private/secret.png", "fields": {}},
              {"doc_id": "absolute", "file": "/private/secret.png", "fields": {}},
              {"doc_id": "uri", "file": f"s3://{BUCKET}/private/secret.png", "fields": {}},
              {"doc_id": "inner_dotdot", "file": "x/../../private/secret.png", "fields": {}},
              {"doc_id": "good", "file": good["file"], "fields": good["fields"]}]
    s3.put_object(Bucket=BUCKET, Key="escape/gt.jsonl", Body="\n".join(map(json.dumps, escape)).encode())
    s3.put_object(Bucket=BUCKET, Key=f"escape/{good['file']}", Body=uploaded[f"synthetic/{good['file']}"])
    shutil.rmtree(folder)
    return uploaded


def _batch(docs) -> pa.Table:
    return pa.Table.from_pylist([d.row() for d in docs])


def test_list_files_is_one_recursive_listing_of_the_prefix(s3_dataset):
    files = storage.list_files(f"s3://{BUCKET}/synthetic")
    expected = {key.removeprefix("synthetic/"): len(data) for key, data in s3_dataset.items()}
    assert {name: size for name, (size, _) in files.items()} == expected
    assert "gt.jsonl" in files and any(name.startswith("images/") for name in files)
    assert all(mtime > 0 for _, mtime in files.values())
    assert storage.list_files(f"s3://{BUCKET}/synthetic/") == files


def test_read_bytes_and_sha256_stream_the_object(s3_dataset):
    key = next(k for k in s3_dataset if k.endswith(".jpg"))
    uri = f"s3://{BUCKET}/{key}"
    assert storage.read_bytes(uri) == s3_dataset[key]
    assert storage.sha256(uri) == hashlib.sha256(s3_dataset[key]).hexdigest()
    with pytest.raises(DocumentError, match=f"^file not found: s3://{BUCKET}/synthetic/nope.jpg$"):
        storage.sha256(f"s3://{BUCKET}/synthetic/nope.jpg")
    with pytest.raises(DocumentError, match="s3://no-such-bucket/x.jpg"):
        storage.read_bytes("s3://no-such-bucket/x.jpg")


def test_read_manifest_from_s3_gives_uris_sizes_and_ground_truth(s3_dataset):
    docs = read_manifest(f"s3://{BUCKET}/synthetic")
    records = [json.loads(line) for line in s3_dataset["synthetic/gt.jsonl"].splitlines()]
    assert [d.doc_id for d in docs] == [r["doc_id"] for r in records]
    for doc, record in zip(docs, records):
        assert not doc.error
        assert doc.path == f"s3://{BUCKET}/synthetic/{record['file']}"
        assert doc.size == len(s3_dataset[f"synthetic/{record['file']}"]) and doc.mtime_ns > 0
        assert json.loads(doc.fields_json) == record["fields"]
    assert len(read_manifest(f"s3://{BUCKET}/synthetic", limit=2)) == 2


def test_a_config_naming_an_s3_folder_loads_it(s3_dataset, tmp_path):
    exp = parse_experiment({"name": "s3", "dataset": {"source": "folder", "path": f"s3://{BUCKET}/synthetic"},
                            "fields": {"total": "amount"}, "variants": [{"name": "a", "backend": "fake"}],
                            "base_dir": str(tmp_path)})
    assert [d.path.startswith(f"s3://{BUCKET}/synthetic/images/") for d in load_documents(exp)] == [True] * 3


@pytest.mark.parametrize("folder, message", [
    (f"s3://{BUCKET}/nothing-here", "dataset folder not found: s3://invoices/nothing-here"),
    (f"s3://{BUCKET}/private", "no gt.jsonl in dataset folder s3://invoices/private"),
    ("s3://no-such-bucket/data", "s3://no-such-bucket/data"),
])
def test_unusable_s3_folders_are_dataset_errors(s3_dataset, folder, message):
    with pytest.raises(DatasetError, match=message):
        read_manifest(folder)


def test_local_copy_fetches_each_object_once_into_the_cache(s3_dataset, s3_server, tmp_path, monkeypatch):
    import boto3

    key = next(k for k in s3_dataset if k.endswith(".jpg"))
    uri = f"s3://{BUCKET}/{key}"
    local = storage.local_copy(uri, tmp_path)
    assert local.parent == tmp_path / "fetched" and local.suffix == ".jpg"
    assert local.read_bytes() == s3_dataset[key]
    assert os.listdir(local.parent) == [local.name]  # no temporary file left behind
    monkeypatch.setattr(storage, "_download", lambda *a: pytest.fail("downloaded twice"))
    assert storage.local_copy(uri, tmp_path) == local
    monkeypatch.undo()
    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=BUCKET, Key="changed/a.jpg", Body=b"one")
    first = storage.local_copy(f"s3://{BUCKET}/changed/a.jpg", tmp_path)
    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=BUCKET, Key="changed/a.jpg", Body=b"two!")
    second = storage.local_copy(f"s3://{BUCKET}/changed/a.jpg", tmp_path)
    assert first != second and second.read_bytes() == b"two!"  # a changed object is fetched again
    path = tmp_path / "here.txt"
    path.write_text("x")
    assert storage.local_copy(str(path), tmp_path) == path  # local: as it is, nothing copied


@pytest.mark.parametrize("image_max_side", [0, 64])
def test_page_reader_reads_s3_documents_without_a_local_copy(s3_dataset, tmp_path, image_max_side):
    docs = read_manifest(f"s3://{BUCKET}/synthetic")
    table = PageReader({**SETTING, "image_max_side": image_max_side}, cache_dir=str(tmp_path))(_batch(docs))
    assert table.schema == page_schema(_batch(docs).schema)
    for row, doc in zip(table.to_pylist(), docs):
        assert row["error"] == "" and row["error_stage"] is None, row["error"]
        key = doc.path.removeprefix(f"s3://{BUCKET}/")
        assert row["doc_sha256"] == hashlib.sha256(s3_dataset[key]).hexdigest()
        if image_max_side:
            [png] = row["images_png"]
            image = Image.open(io.BytesIO(png))
            original = Image.open(io.BytesIO(s3_dataset[key]))
            assert image.format == "PNG" and max(image.size) == 64
            assert abs(image.size[0] / image.size[1] - original.size[0] / original.size[1]) < 0.05
        else:
            assert row["images_png"] is None


def test_page_reader_names_the_uri_of_a_document_that_vanished(s3_dataset, s3_server, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=BUCKET, Key="gone/gt.jsonl",
                                                          Body=b'{"doc_id": "g", "file": "g.png", "fields": {}}')
    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=BUCKET, Key="gone/g.png", Body=b"not an image")
    docs = read_manifest(f"s3://{BUCKET}/gone")
    [row] = PageReader({**SETTING, "image_max_side": 64}, cache_dir=str(tmp_path))(_batch(docs)).to_pylist()
    assert row["error"] == f"not an image: s3://{BUCKET}/gone/g.png (neither an image format nor a PDF)"
    assert row["error_stage"] == "load" and row["doc_sha256"] == "" and row["images_png"] is None
    boto3.client("s3", endpoint_url=s3_server).delete_object(Bucket=BUCKET, Key="gone/g.png")
    [row] = PageReader(SETTING, cache_dir=str(tmp_path / "fresh"))(_batch(docs)).to_pylist()
    assert row["error"] == f"file not found: s3://{BUCKET}/gone/g.png" and row["error_stage"] == "load"


def test_s3_entries_leading_out_of_the_prefix_are_never_read(s3_dataset, reads, tmp_path):
    docs = {d.doc_id: d for d in read_manifest(f"s3://{BUCKET}/escape")}
    reasons = {"dotdot": "'..' in the path", "inner_dotdot": "'..' in the path", "absolute": "an absolute path",
               "uri": "a URI, not a path in the folder"}
    for doc_id, reason in reasons.items():
        assert docs[doc_id].error.startswith("file outside the dataset folder: ") and reason in docs[doc_id].error
        assert docs[doc_id].path == ""
    rows = PageReader(SETTING, cache_dir=str(tmp_path))(_batch(docs.values())).to_pylist()
    assert [r["error_stage"] for r in rows] == ["input"] * 4 + [None]
    assert not [r for r in reads if "private" in r or "secret" in r]
    assert any(r.endswith(docs["good"].path.rsplit("/", 1)[1]) for r in reads)  # the spy does see reads


# --- path containment on local disk --------------------------------------------------------------------


def test_local_entries_leading_out_of_the_folder_are_error_records_never_read(tmp_path, reads):
    folder = make_corpus(tmp_path / "corpus", containment=True)
    (folder / "alias").symlink_to(folder / "good_a.png")  # a link that stays inside is fine
    with (folder / "gt.jsonl").open("a") as fh:
        fh.write(json.dumps({"doc_id": "alias", "file": "./alias", "fields": {"total": "1"}}) + "\n")
    reads.clear()  # writing the corpus (and its secret) is not reading it
    docs = {d.doc_id: d for d in read_manifest(folder)}
    for doc_id, reason in CONTAINMENT.items():
        assert docs[doc_id].error.startswith("file outside the dataset folder: "), docs[doc_id]
        assert reason in docs[doc_id].error and docs[doc_id].path == ""
    assert docs["alias"].path == str((folder / "good_a.png").resolve()) and not docs["alias"].error
    rows = PageReader(SETTING, cache_dir=str(tmp_path / "cache"))(_batch(docs.values())).to_pylist()
    by_id = {r["doc_id"]: r for r in rows}
    assert all(by_id[d]["error_stage"] == "input" and by_id[d]["doc_sha256"] == "" for d in CONTAINMENT)
    assert all(not by_id[d]["error"] for d in [*GOOD, "alias"])
    secret = secret_path(folder)
    assert not [r for r in reads if "secret" in r or os.path.realpath(r) == str(secret.resolve())]
    assert any(r.endswith("good_a.png") for r in reads)  # the audit hook does see the reads


def test_local_listing_does_not_walk_into_directory_symlinks(tmp_path):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.png").write_bytes(b"12345")
    (folder / "root").symlink_to("/", target_is_directory=True)  # pyarrow's own listing would walk the disk
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "broken.png").symlink_to(folder / "missing.png")
    files = storage.list_files(str(folder))
    assert set(files) == {"sub/a.png"} and files["sub/a.png"][0] == 5
    with pytest.raises(DocumentError) as info:
        storage.list_files(str(tmp_path / "absent"))
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_local_documents_carry_size_and_mtime_from_the_listing(tmp_path):
    folder = tmp_path / "data"
    generate(folder, n=2, seed=1)
    for doc in read_manifest(folder):
        stat = Path(doc.path).stat()
        assert Path(doc.path).is_absolute() and (doc.size, doc.mtime_ns) == (stat.st_size, stat.st_mtime_ns)


def test_page_columns_have_one_schema_whatever_the_rows_hold(tmp_path):
    folder = make_corpus(tmp_path / "corpus")
    docs = read_manifest(folder)
    reader = PageReader({**SETTING, "image_max_side": 32})
    schemas = {reader(_batch(docs[i:i + 1])).schema for i in range(len(docs))}
    assert len(schemas) == 1
    [schema] = schemas
    assert [f.name for f in schema][-len(PAGE_COLUMNS):] == list(PAGE_COLUMNS)
    assert reader(_batch(docs).slice(0, 0)).schema == schema
