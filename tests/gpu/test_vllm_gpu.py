"""The vllm backend on a CUDA GPU with vLLM installed: a tiny random Llama built here, loaded by vLLM from its folder.

In-process (``VllmBackend``, vLLM's ``LLM.chat``) and through the orchestrator (Ray Data LLM's
processor on a local Ray cluster that sees the GPU). Structured outputs are what these can check on
a random model: vLLM's grammar must make every answer a JSON object holding exactly the fields.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

torch = pytest.importorskip("torch")

from tiny_llama import build

from invoicelab.backends import create_backend
from invoicelab.backends.base import DocInput
from invoicelab.config import parse_experiment
from invoicelab.prompts import load_prompt

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="needs vllm installed (pip install 'invoicelab[vllm]')"),
]
FIELDS = {"invoice_number": "id", "total": "amount"}
# Small engine: little KV cache, no CUDA graph capture or compilation (seconds, not minutes, to start).
ENGINE = {"dtype": "bfloat16", "max_model_len": 1024, "gpu_memory_utilization": 0.2, "max_num_seqs": 8,
          "engine_kwargs": {"enforce_eager": True}, "generation": {"max_new_tokens": 400}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny-llama") / "model")


def experiment(tmp_path, model, data=None, **variant):
    data = data or {"source": "folder", "path": str(tmp_path)}
    return parse_experiment({
        "name": "vllm-gpu", "output_dir": str(tmp_path / "run"), "dataset": data, "fields": FIELDS,
        "variants": [{"name": "tiny-vllm", "backend": "vllm", "model": str(model), "ocr": {"engine": "none"},
                      **ENGINE, **variant}],
    })


def test_in_process_engine_answers_every_document_in_the_schema(tiny, tmp_path):
    exp = experiment(tmp_path, tiny)
    backend = create_backend(exp.variants[0], exp.fields, seed=0, device="cuda")
    docs = [DocInput(f"d{i}", f"Invoice INV-{i} Total: {i}0.00 EUR", f"/d{i}.png") for i in range(4)]
    outs = backend.extract(docs, load_prompt("terse-json"))
    assert len(outs) == 4 and all(o.parse_error is None and o.error is None for o in outs)
    assert all(set(json.loads(o.raw_output)) == set(FIELDS) for o in outs)
    assert all(o.tokens_in > 20 and o.tokens_out >= 1 for o in outs)
    info = backend.info()
    assert info["engine_kwargs"]["dtype"] == "bfloat16" and info["vllm_version"]


@pytest.mark.ray
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray installed")
def test_a_run_through_ray_data_llm_uses_the_gpu(ray_cluster, tiny, tmp_path):
    import pandas as pd

    from invoicelab.orchestrator.pipeline import run_experiment

    exp = experiment(tmp_path, tiny, data={"source": "synthetic", "n": 6}, batch_size=4,
                     resources={"num_cpus": 0.5, "num_gpus": 1})
    df = pd.read_parquet(run_experiment(exp).results)
    assert len(df) == 6 and df["error"].isna().all() and df["parse_error"].isna().all()
    assert (df["tokens_in"] > 20).all() and (df["tokens_out"] >= 1).all()
    assert json.loads(df["backend_info"].iloc[0])["engine_kwargs"]["dtype"] == "bfloat16"
