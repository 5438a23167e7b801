"""What a variant really was and cost, per batch: load time, batch size used, latency, tokens/s, memory.

Also the backend contract's input side: documents reach a backend without their ground truth.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict

import pyarrow as pa
import pytest

from invoicelab.actors.extractor import Extractor
from invoicelab.actors.meter import peak_rss_bytes
from invoicelab.backends.base import DocInput
from invoicelab.backends.fake import FakeBackend
from invoicelab.config import parse_experiment
from invoicelab.prompts import load_prompt

FIELDS = {"invoice_number": "id", "total": "amount"}


def _experiment(batch_size: int = 3, delay_s: float = 0.05):
    return parse_experiment({
        "name": "meter", "dataset": {"source": "synthetic", "n": 5}, "fields": FIELDS,
        "variants": [{"name": "echo", "backend": "fake", "batch_size": batch_size, "options": {"delay_s": delay_s}}],
    })


def _pages(n: int) -> pa.Table:
    rows = [{"doc_id": f"d{i}", "path": f"/nowhere/d{i}.png", "error": "", "text": f"Invoice INV-{i} Total 1{i}.00",
             "fields_json": json.dumps({"invoice_number": f"INV-{i}", "total": f"1{i}.00"}), "normalized_json": "{}",
             "doc_sha256": f"{i:064x}", "images_png": None} for i in range(n)]
    return pa.Table.from_pylist(rows)


def _extractor(exp) -> Extractor:
    prompt = load_prompt("terse-json")
    return Extractor(exp.model_dump_json(), "echo", {prompt.id: asdict(prompt)})


def test_every_row_records_its_batch_latency_size_memory_and_load_time():
    extractor = _extractor(_experiment(batch_size=3, delay_s=0.05))
    table = extractor(_pages(3), [(f"d{i}", "terse-json", f"k{i}") for i in range(3)]).to_pylist()
    assert len(table) == 3 and all(r["error"] is None for r in table)
    for row in table:
        assert row["batch_docs"] == 3 and row["batch_size"] == 3
        assert row["batch_latency_s"] >= 0.05  # the fake sleeps 0.05 s per batch
        assert row["latency_s"] == pytest.approx(row["batch_latency_s"] / 3)
        assert row["batch_tokens_per_s"] > 0 and row["tokens_out"] > 0
        assert row["peak_rss_bytes"] >= 50 * 2**20  # this Python process with pyarrow and pydantic loaded
        assert row["load_s"] >= 0 and row["gpu_peak_bytes"] is None  # no GPU here
    # a short last batch reports the size really used, not the configured one
    [last] = extractor(_pages(1), [("d0", "terse-json", "k9")]).to_pylist()
    assert last["batch_docs"] == 1 and last["batch_size"] == 3


def test_peak_rss_grows_with_memory_the_process_touched():
    size = peak_rss_bytes() + 64 * 2**20  # more than this process has ever held
    block = bytearray(size)  # touched: bytearray zero-fills its memory
    assert peak_rss_bytes() >= size
    del block


def test_document_inputs_carry_no_ground_truth():
    assert {f.name for f in dataclasses.fields(DocInput)} == {"doc_id", "text", "path", "images"}
    exp = _experiment()
    backend = FakeBackend(exp.variants[0], exp.fields)
    [blind] = backend.extract([DocInput("d0", "Invoice INV-0 Total 10.00", "/nowhere/d0.png")], None)
    assert blind.fields == {"invoice_number": None, "total": None}  # nothing to echo without its own channel
    backend.see_truth({"d0": {"invoice_number": "INV-0", "total": "10.00"}})
    [seen] = backend.extract([DocInput("d0", "", "/nowhere/d0.png")], None)
    assert seen.fields == {"invoice_number": "INV-0", "total": "10.00"}
