"""The batch tuner: where it stops (plateau, memory limit, out-of-memory), profiles saved, reused and probed
again when their key changes, `batch_size: auto` in a run, and out-of-memory survived while probing (injected
by the fake backend, and real: past the tuner actor's memory cap, and the real model past a cap)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from invoicelab.tuning import Probe, search, sizes_up_to

FIELDS = {"invoice_number": "id", "total": "amount"}


def _curve(rates: dict[int, float], peaks: dict[int, int] | None = None, oom_from: int | None = None):
    seen: list[int] = []

    def measure(size: int) -> Probe:
        seen.append(size)
        if oom_from is not None and size >= oom_from:
            return Probe(size, 0.0, None, 0.1, True, "MemoryError")
        return Probe(size, rates[size], (peaks or {}).get(size), 0.1)

    return measure, seen


# The SmolLM2 fp32 curve on this 2-core machine (docs/s) and its resident memory (GB).
CPU_CURVE = {1: 0.135, 2: 0.144, 4: 0.239, 8: 0.330, 16: 0.384, 32: 0.403, 64: 0.405}
CPU_PEAKS = {1: 1.0, 2: 1.2, 4: 1.4, 8: 1.8, 16: 2.8, 32: 4.8, 64: 8.8}


def test_a_small_first_gain_is_not_a_plateau_and_the_search_stops_when_gains_flatten():
    measure, seen = _curve(CPU_CURVE)
    decision = search(measure, 64, plateau=0.05)
    assert decision.micro_batch == 64 and seen == [1, 2, 4, 8, 16, 32, 64]  # 16->32 +5.0%: flat once only
    measure, seen = _curve(CPU_CURVE)
    decision = search(measure, 64, plateau=0.10)
    assert seen == [1, 2, 4, 8, 16, 32, 64] or seen == [1, 2, 4, 8, 16, 32]
    assert "plateau" in decision.reason and decision.micro_batch in (32, 64)
    assert sizes_up_to(12) == [1, 2, 4, 8, 12]


def test_the_search_stops_before_the_memory_limit_with_its_margin():
    measure, seen = _curve(CPU_CURVE, {k: int(v * 2**30) for k, v in CPU_PEAKS.items()})
    decision = search(measure, 64, limit_bytes=4 * 2**30, margin=0.15)  # 3.4 GiB usable: 32 (4.8) is past it
    assert seen[-1] == 32 and decision.micro_batch == 16 and "past the limit" in decision.reason


def test_out_of_memory_while_probing_takes_the_best_size_below_it():
    measure, seen = _curve(CPU_CURVE, oom_from=16)
    decision = search(measure, 64)
    assert seen == [1, 2, 4, 8, 16] and decision.micro_batch == 8 and decision.reason == "out of memory at 16"
    assert decision.probes[-1].out_of_memory
    measure, _ = _curve(CPU_CURVE, oom_from=1)
    assert search(measure, 64).micro_batch == 1  # nothing fits: 1, and the run makes error rows of such documents


def _config(tmp_path, options: dict, name: str = "tune", **variant) -> dict:
    return {"name": name, "output_dir": str(tmp_path / "{name}"), "dataset": {"source": "synthetic", "n": 8},
            "fields": FIELDS, "tuning": {"sample_docs": 4, "max_micro_batch": 16, "profiles": str(tmp_path / "prof")},
            "variants": [{"name": "fake", "backend": "fake", "batch_size": "auto", "options": options, **variant}]}


def _tune(tmp_path, cfg: dict, *args: str) -> list[dict]:
    from invoicelab.cli import main

    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    result = CliRunner().invoke(main, ["tune", str(path), "--json", *args])
    assert result.exit_code == 0, result.output
    text = result.stdout  # Ray may log to stderr, or after the JSON
    return json.JSONDecoder().raw_decode(text[text.index("["):])[0]


@pytest.mark.ray
def test_tune_probes_survives_injected_out_of_memory_saves_a_profile_and_reuses_it(ray_cluster, tmp_path):
    cfg = _config(tmp_path, {"delay_s": 0.05, "delay_per_doc_s": 0.002, "oom_above": 4})
    first = _tune(tmp_path, cfg)[0]
    assert first["source"] == "probed" and first["micro_batch"] == 4 and first["batch_size"] == 8
    assert first["reason"] == "out of memory at 8" and [p["size"] for p in first["probes"]] == [1, 2, 4, 8]
    assert first["why_probed"] == "no profile for this model, precision and hardware"
    again = _tune(tmp_path, cfg)[0]
    assert again["source"] == "profile" and again["micro_batch"] == 4  # same key: nothing probed
    cfg["variants"][0]["resources"] = {"memory_gb": 8}  # a part of the key changes: probed again, and said why
    changed = _tune(tmp_path, cfg)[0]
    assert changed["source"] == "probed" and changed["why_probed"] == "changed since the last profile: workload"
    assert _tune(tmp_path, cfg, "--retune")[0]["why_probed"] == "retune asked"


@pytest.mark.ray
def test_a_profile_that_stopped_at_its_runs_few_documents_is_probed_again_by_a_run_with_more(ray_cluster, tmp_path):
    cfg = _config(tmp_path, {"delay_s": 0.05}, name="few")
    cfg["dataset"]["n"] = 3
    small = _tune(tmp_path, cfg)[0]  # 3 documents: a call of more never happens, so 1, 2 and 3 are probed
    assert [p["size"] for p in small["probes"]] == [1, 2, 3] and small["micro_batch"] == 3
    assert _tune(tmp_path, cfg)[0]["source"] == "profile"
    cfg["dataset"]["n"] = 24
    more = _tune(tmp_path, cfg)[0]
    assert more["source"] == "probed" and more["micro_batch"] == 16 and [p["size"] for p in more["probes"]][-1] == 16
    assert more["why_probed"] == "the saved profile probed sizes up to 3 only (its run had that many documents)"


@pytest.mark.ray
def test_tuning_survives_a_real_allocation_past_the_tuner_actors_memory_cap(ray_cluster, tmp_path):
    """300 MB a document, a 2 GiB cap: 8 documents (2.4 GB) cannot be allocated; the tuner stops below. The
    0.3 s a call makes larger calls clearly faster (with 0.05 s, touching the memory made every size about as
    fast, and 1 won by noise one time in four)."""
    cfg = _config(tmp_path, {"delay_s": 0.3, "memory_per_doc_mb": 300}, resources={"memory_gb": 2.0})
    tuned = _tune(tmp_path, cfg)[0]
    assert tuned["source"] == "probed" and tuned["micro_batch"] in (2, 4), tuned
    assert tuned["probes"][-1]["out_of_memory"] or "past the limit" in tuned["reason"]


def _rows(cfg: dict):
    from invoicelab.config import parse_experiment
    from invoicelab.orchestrator.pipeline import run_experiment

    result = run_experiment(parse_experiment(cfg))
    return result.summary, pd.read_parquet(result.results)


@pytest.mark.ray
def test_batch_size_auto_keeps_the_probes_answers_as_rows_and_runs_the_rest_at_the_tuned_size(ray_cluster, tmp_path):
    cfg = _config(tmp_path, {"delay_s": 0.05, "oom_above": 2}, name="auto")
    cfg["dataset"]["n"] = 24
    summary, df = _rows(cfg)
    [tuned] = summary["tuning"]
    # sizes 1, 2 and 4 (out of memory, answered in halves), 4 documents each: 12 answers, all kept
    assert tuned["micro_batch"] == 2 and tuned["batch_size"] == 4 and tuned["rows_kept"] == 12 == tuned["answered"]
    assert summary["computed_rows"] == 24 and len(df) == 24 and df["doc_id"].is_unique and df["error"].isna().all()
    assert df["micro_batch"].value_counts().to_dict() == {2: 20, 1: 4}  # 4 probed at 1, 4 at 2, 4 halved from 4
    assert int(df["oom_splits"].gt(0).sum()) == 4
    rest = df[df["oom_splits"].eq(0) & df["batch_size"].eq(4)]
    assert len(rest) == 12 and rest["micro_batch"].eq(2).all()  # the run's own batches, at the tuned sizes


@pytest.mark.ray
def test_tune_then_run_computes_only_the_rows_the_probes_did_not_answer(ray_cluster, tmp_path):
    cfg = _config(tmp_path, {"delay_s": 0.02}, name="then")
    cfg["dataset"]["n"] = 40
    tuned = _tune(tmp_path, cfg)[0]
    assert tuned["source"] == "probed" and 0 < tuned["rows_kept"] < 40
    summary, df = _rows(cfg)
    assert summary["tuning"][0]["source"] == "profile"
    assert summary["computed_rows"] == 40 - tuned["rows_kept"]
    assert len(df) == 40 and df["doc_id"].is_unique and df["error"].isna().all()


CAPPED_TUNING = r"""
import json, sys
from dataclasses import asdict
from invoicelab.actors.meter import cap_memory
from invoicelab.actors.tuner import ProbeRunner
from invoicelab.config import parse_experiment
from invoicelab.orchestrator.plan import text_setting
from invoicelab.prompts import load_prompt

exp = parse_experiment({"name": "cap", "dataset": {"source": "synthetic", "n": 2}, "fields": {"total": "amount"},
                        "variants": [{"name": "smol", "backend": "ocr-llm", "model": "smollm2-135m-instruct",
                                      "batch_size": "auto", "ocr": {"engine": "none"},
                                      "generation": {"max_new_tokens": 8}}]})
prompt = load_prompt("terse-json", exp.prompts_path())
runner = ProbeRunner(exp.model_dump_json(), "smol", {prompt.id: asdict(prompt)},
                     asdict(text_setting(exp, exp.variants[0])), None, num_threads=1)
text = "INVOICE\n" + "Widget 12.50\n" * 150 + "TOTAL 12.50\n"
runner.pages = {f"d{i}": {"doc_id": f"d{i}", "path": "", "text": text, "error": None, "images_png": None,
                          "fields_json": '{"total": "12.50"}', "normalized_json": "{}"} for i in range(2)}
runner.units = [(f"d{i}", prompt.id, f"k{i}") for i in range(2)]
data = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmData"))
cap_memory((data + float(sys.argv[1]) * 2**30) / 2**30)
decision, rows = runner.tune(32, -1.0, None, 0.15)  # plateau -1: every doubling counts as a gain, up to the cap
print(json.dumps({**decision, "rows": rows.num_rows}))
"""


@pytest.mark.model
def test_tuning_the_real_model_under_a_real_memory_cap_stops_at_the_size_that_cannot_be_allocated(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "tune_capped.py"
    script.write_text(CAPPED_TUNING, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), "0.35"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    decision = json.loads(done.stdout.strip().splitlines()[-1])
    oom = [p for p in decision["probes"] if p["out_of_memory"]]
    assert oom and "allocate" in oom[0]["note"], decision["probes"]
    assert 1 <= decision["micro_batch"] < oom[0]["size"] and decision["reason"] == f"out of memory at {oom[0]['size']}"
    assert decision["docs_per_s"] > 0 and decision["rows"] == 2 and decision["answered"] >= 1 + 2 + oom[0]["size"]


def test_auto_on_a_backend_without_a_batch_to_tune_sends_whole_batches_of_the_default_size():
    from types import SimpleNamespace

    from invoicelab.config import parse_experiment
    from invoicelab.orchestrator.tune import apply, tune_variant

    exp = parse_experiment({"name": "r", "dataset": {"source": "synthetic", "n": 4}, "fields": FIELDS,
                            "variants": [{"name": "rules", "backend": "rules", "batch_size": "auto"}]})
    variant = exp.variants[0]
    tuned = tune_variant(SimpleNamespace(exp=exp), SimpleNamespace(variant=variant), retune=False, writer=None)
    apply(variant, tuned)
    assert tuned.source == "default" and variant.batch_size == 4 and variant.micro_batch == 4
