"""The transformers backends on a CUDA GPU: a tiny random Llama built here, at bf16, fp16, bnb-int8 and bnb-nf4.

Checks what a GPU run must show: the model really sits on the GPU at the asked precision (dtypes,
quantized layer classes, memory), batches generate with the right token counts, and a variant runs
through the ocr-llm backend as an actor would run it. Answers of a random model are not checked.
"""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")

from tiny_llama import build

from invoicelab.backends import create_backend
from invoicelab.backends.base import DocInput
from invoicelab.backends.hf import TextLLM
from invoicelab.config import parse_experiment
from invoicelab.prompts import load_prompt

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
NEEDS_BNB = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                               reason="needs bitsandbytes installed (pip install 'bitsandbytes>=0.50')")
CONVERSATIONS = [
    [{"role": "system", "content": "You extract fields from invoices."},
     {"role": "user", "content": "Fields: total\n\nDocument text:\nInvoice INV-1 Total: 10.00 EUR\n\nJSON:"}],
    [{"role": "user", "content": "Fields: invoice_number\n\nDocument text:\nNo A-17\n\nJSON:"}],
]
QUANTIZED = {"bnb-int8": "Linear8bitLt", "bnb-nf4": "Linear4bit"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.mark.parametrize("precision", ["bf16", "fp16", pytest.param("bnb-int8", marks=NEEDS_BNB),
                                       pytest.param("bnb-nf4", marks=NEEDS_BNB)])
def test_text_llm_generates_on_the_gpu_at_each_precision(tiny, precision):
    llm = TextLLM(str(tiny), precision=precision, device="cuda")
    outs = llm.generate(CONVERSATIONS, ['{"total": "', ""], max_new_tokens=8)
    assert len(outs) == 2 and all(o.tokens_in > 10 and 1 <= o.tokens_out <= 8 for o in outs)
    info = llm.info()
    assert info["device"].startswith("cuda") and info["precision_loaded"] == precision
    if precision in QUANTIZED:
        assert info["quantized_linear_layers"].get(QUANTIZED[precision], 0) >= 14  # 7 per layer, 2 layers
    else:
        want = {"bf16": "torch.bfloat16", "fp16": "torch.float16"}[precision]
        assert set(info["param_dtypes"]) == {want}


@NEEDS_BNB
def test_quantized_weights_take_less_gpu_memory(tiny):
    footprint = {p: TextLLM(str(tiny), precision=p, device="cuda").info()["memory_footprint_bytes"]
                 for p in ("bf16", "bnb-int8", "bnb-nf4")}
    assert footprint["bnb-nf4"] < footprint["bnb-int8"] < footprint["bf16"]


def test_ocr_llm_variant_extracts_a_batch_on_the_gpu(tiny, tmp_path):
    exp = parse_experiment({
        "name": "gpu", "dataset": {"source": "folder", "path": str(tmp_path)}, "fields": {"total": "amount"},
        "variants": [{"name": "tiny", "backend": "ocr-llm", "model": str(tiny), "precision": "bf16",
                      "structured": "prefix", "fallback": "none", "generation": {"max_new_tokens": 12},
                      "ocr": {"engine": "none"}, "resources": {"num_gpus": 1}}],
    })
    backend = create_backend(exp.variants[0], exp.fields, seed=0, device="cuda")
    docs = [DocInput("a", "Invoice INV-1 Total: 10.00 EUR", "/a.png"), DocInput("b", "Total 5,00", "/b.png")]
    outs = backend.extract(docs, load_prompt("terse-json"))
    assert len(outs) == 2 and all(o.tokens_in > 10 and 1 <= o.tokens_out <= 12 for o in outs)
    assert all(o.raw_output.startswith('{"total": "') for o in outs)
    assert backend.info()["device"].startswith("cuda")


def test_the_batch_tuner_probes_on_the_gpu_and_keeps_its_answers_as_rows(tiny, tmp_path):
    from dataclasses import asdict

    from invoicelab.actors.tuner import ProbeRunner
    from invoicelab.orchestrator.plan import text_setting

    exp = parse_experiment({
        "name": "gpu-tune", "dataset": {"source": "folder", "path": str(tmp_path)}, "fields": {"total": "amount"},
        "tuning": {"max_micro_batch": 8},
        "variants": [{"name": "tiny", "backend": "ocr-llm", "model": str(tiny), "precision": "bf16",
                      "structured": "prefix", "fallback": "none", "generation": {"max_new_tokens": 12},
                      "ocr": {"engine": "none"}, "batch_size": "auto", "resources": {"num_gpus": 1}}],
    })
    prompt = load_prompt("terse-json")
    runner = ProbeRunner(exp.model_dump_json(), "tiny", {prompt.id: asdict(prompt)},
                         asdict(text_setting(exp, exp.variants[0])), None, device="cuda")
    runner.pages = {f"d{i}": {"doc_id": f"d{i}", "path": "", "text": f"Invoice {i} Total: {i}.00 EUR" * (i + 1),
                              "error": None, "images_png": None, "fields_json": "{}", "normalized_json": "{}"}
                    for i in range(8)}
    runner.units = [(f"d{i}", prompt.id, f"k{i}") for i in range(8)]
    gpu = runner.hardware()
    assert gpu["gpu"] and runner.memory_limit() == gpu["gpu_memory_bytes"]  # the whole GPU: one actor on it
    decision, rows = runner.tune(8, 0.05, runner.memory_limit(), 0.15, 1, 2)
    probes = decision["probes"]
    assert len(probes) >= 3 and all(p["peak_bytes"] and not p["out_of_memory"] for p in probes)  # torch's peak
    assert rows.num_rows == 8 and sorted(rows.column("key").to_pylist()) == [f"k{i}" for i in range(8)]
    assert set(rows.column("micro_batch").to_pylist()) <= {1, 2, 4, 8} and rows.column("error").null_count == 8
