"""Generation micro-batches: grouping by length under a token budget, halving on out-of-memory (injected by
the fake backend, and real: an allocation past the actor's memory cap), and the micro-batch on every row."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from invoicelab.actors.extractor import Extractor
from invoicelab.config import parse_experiment
from invoicelab.microbatch import MicroBatcher, is_out_of_memory, plan_calls

FIELDS = {"invoice_number": "id", "total": "amount"}


def test_calls_group_documents_by_length_under_the_token_budget():
    lengths = [900, 100, 120, 880, 110, 95]
    calls = plan_calls(lengths, size=4, token_budget=1000)
    assert sorted(i for c in calls for i in c) == list(range(6))  # every document exactly once
    assert calls[0] == [5, 1, 4, 2]  # the four short ones together, shortest first
    assert all(len(c) * max(lengths[i] for i in c) <= 1000 for c in calls)  # 2 x 900 would pass the budget
    assert plan_calls(lengths, size=3, by_length=False) == [[0, 1, 2], [3, 4, 5]]  # arrival order when asked
    assert plan_calls([5000, 10], size=8, token_budget=1000) == [[1], [0]]  # longer than the budget: alone


def test_out_of_memory_halves_the_micro_batch_down_to_one_then_is_an_error_for_that_document_only():
    calls: list[int] = []

    def model(group):
        calls.append(len(group))
        if len(group) > 2 or 7 in group:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [f"answer {i}" for i in group]

    batcher = MicroBatcher(8, by_length=False)
    answered = batcher.run([10] * 10, model)
    assert calls[:3] == [8, 4, 2]  # 8 fails, then 4 fails, then 2 works
    assert batcher.size == 1 and batcher.halvings == 3  # 7's pair failed too, so the size kept halving
    assert [a.value for a in answered if a.error is None] == [f"answer {i}" for i in range(10) if i != 7]
    assert answered[7].error.startswith("out of memory with the document alone (micro-batch 1)")
    assert answered[0].micro_batch == 2 and answered[0].oom_splits == 2
    assert answered[9].micro_batch == 1 and answered[9].call_size == 1  # after the halving, one at a time


def test_only_out_of_memory_is_halved():
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(ValueError("bad prompt"))
    with pytest.raises(ValueError):
        MicroBatcher(4).run([1, 2], lambda group: (_ for _ in ()).throw(ValueError("bad prompt")))


def _extractor(options: dict, batch_size: int = 8, **variant) -> tuple[Extractor, list]:
    exp = parse_experiment({"name": "mb", "dataset": {"source": "synthetic", "n": 8}, "fields": FIELDS,
                            "variants": [{"name": "fake", "backend": "fake", "batch_size": batch_size,
                                          "options": options, **variant}]})
    truth = json.dumps({"invoice_number": "INV-1", "total": "10.00"})
    pages = [{"doc_id": f"d{i}", "path": f"d{i}.png", "text": "x" * (40 * i), "error": None, "fields_json": truth,
              "normalized_json": truth} for i in range(8)]
    return Extractor(exp.model_dump_json(), "fake", {}), pages


def _rows(extractor: Extractor, pages: list) -> pd.DataFrame:
    import pyarrow as pa

    table = extractor(pa.Table.from_pylist(pages), [(p["doc_id"], "none", f"k{i}") for i, p in enumerate(pages)])
    return table.to_pandas().set_index("doc_id")


def test_injected_out_of_memory_during_a_run_is_survived_and_every_row_says_its_micro_batch():
    extractor, pages = _extractor({"oom_above": 3, "oom_on": ["d6"]})
    rows = _rows(extractor, pages)
    assert len(rows) == 8
    assert rows.loc["d6", "error"].startswith("out of memory with the document alone")
    good = rows.drop(index="d6")
    assert good["error"].isna().all() and good["match_total"].all()
    assert (good["batch_docs"] <= 3).all() and set(good["micro_batch"]) <= {1, 2, 4}
    assert (rows["oom_splits"] >= 1).all()  # the first call of 8 failed for all of them
    assert rows["batch_size"].eq(8).all()


def test_micro_batch_and_token_budget_cut_the_actors_batch():
    extractor, pages = _extractor({}, batching={"micro_batch": 3, "token_budget": 120})
    rows = _rows(extractor, pages)  # estimated prompt tokens: 1, 11, 21, ... 71 (4 characters a token)
    assert rows["error"].isna().all() and rows["oom_splits"].eq(0).all() and rows["micro_batch"].eq(3).all()
    assert rows.loc[["d0", "d1", "d2"], "batch_docs"].eq(3).all()  # the three shortest: 3 x 21 tokens
    assert rows.loc[["d3", "d4"], "batch_docs"].eq(2).all()  # d5 beside them would make 3 x 51 > 120
    assert rows.loc[["d5", "d6", "d7"], "batch_docs"].eq(1).all()  # 2 x 61 > 120: the long ones alone


@pytest.mark.ray
def test_a_real_allocation_past_the_actors_memory_cap_halves_the_micro_batch(ray_cluster, tmp_path):
    """The fake backend really allocates 300 MB a document; the actor's cap (RLIMIT_DATA at 2 GiB, a Ray
    worker starts near 0.3 GiB) makes the call of 8 fail as the kernel refuses the memory; 4 fit."""
    from invoicelab.orchestrator.pipeline import run_experiment

    exp = parse_experiment({
        "name": "capped", "output_dir": str(tmp_path / "{name}"), "dataset": {"source": "synthetic", "n": 8},
        "fields": FIELDS, "variants": [{"name": "capped", "backend": "fake", "batch_size": 8,
                                        "options": {"memory_per_doc_mb": 300},
                                        "resources": {"memory_gb": 2.0}}]})
    df = pd.read_parquet(run_experiment(exp).results)
    assert len(df) == 8 and df["error"].isna().all() and df["match_total"].all()
    assert df["oom_splits"].ge(1).all() and df["micro_batch"].isin([1, 2, 4]).all()
    assert df["peak_rss_bytes"].max() < 2.0 * 2**30


CAPPED_MODEL_RUN = r"""
import json, sys
import pyarrow as pa
from invoicelab.actors.extractor import Extractor
from invoicelab.actors.meter import cap_memory
from invoicelab.config import parse_experiment
from invoicelab.prompts import load_prompt

exp = parse_experiment({"name": "cap", "dataset": {"source": "synthetic", "n": 8}, "fields": {"total": "amount"},
                        "variants": [{"name": "smol", "backend": "ocr-llm", "model": "smollm2-135m-instruct",
                                      "batch_size": 8, "ocr": {"max_chars": 2000},
                                      "generation": {"max_new_tokens": 8}}]})
from dataclasses import asdict
prompt = load_prompt("terse-json", exp.prompts_path())
extractor = Extractor(exp.model_dump_json(), "smol", {prompt.id: asdict(prompt)}, num_threads=1)
assert not extractor.load_error, extractor.load_error
data = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmData"))
cap_memory((data + float(sys.argv[1]) * 2**30) / 2**30)
truth = json.dumps({"total": "12.50"})
text = "INVOICE\n" + "Widget 12.50\n" * 150 + "TOTAL 12.50\n"
pages = [{"doc_id": f"d{i}", "path": "", "text": text, "error": None, "fields_json": truth,
          "normalized_json": truth} for i in range(8)]
rows = extractor(pa.Table.from_pylist(pages), [(p["doc_id"], prompt.id, f"k{i}") for i, p in enumerate(pages)])
print(json.dumps(rows.select(["doc_id", "error", "micro_batch", "oom_splits", "batch_docs"]).to_pylist()))
"""


@pytest.mark.model
def test_the_real_model_under_a_real_memory_cap_halves_its_micro_batch_and_answers_every_document(tmp_path):
    """SmolLM2 in a process whose data segment may grow only 0.5 GiB past the loaded model: a call of 8
    ~500-token prompts fails inside torch's CPU allocator ("can't allocate memory"); halved, they fit."""
    import subprocess
    import sys

    script = tmp_path / "capped.py"
    script.write_text(CAPPED_MODEL_RUN, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), "0.5"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(rows) == 8 and all(r["error"] is None for r in rows), rows
    assert all(r["oom_splits"] >= 1 for r in rows) and max(r["micro_batch"] for r in rows) < 8
