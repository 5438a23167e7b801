"""The vllm backend without vLLM or a GPU: settings mapping, requests, answers, and the rows of a whole run.

Unit tests check our side (``invoicelab.backends.vllm_engine``, ``invoicelab.actors.llm_rows``).
The Ray tests run the real Ray Data LLM pipeline (``ray.data.llm``'s processor: chat template stage,
vLLM engine stage, placement groups) through our orchestrator on the session's local cluster.
Only the engine itself is replaced: a stand-in ``vllm`` package (``STANDIN`` below, put on the workers'
path by the variant's ``runtime_env: {env_vars: {PYTHONPATH: ...}}``) implements the few calls Ray Data
LLM's vLLM stage makes (``AsyncEngineArgs``, ``AsyncLLMEngine.generate``, ``SamplingParams``,
``StructuredOutputsParams``, ``RequestOutput``), logs what it was asked and answers from its
environment. Real vLLM runs are in ``tests/gpu/test_vllm_gpu.py``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import textwrap
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from gpu.tiny_llama import build as build_tiny_llama

from invoicelab.actors.llm_rows import InputErrorRows, RequestRows, ResultRows
from invoicelab.backends.base import DocInput
from invoicelab.backends.structured import answer_schema
from invoicelab.backends.vllm_engine import (
    MISSING_VLLM,
    build_request,
    engine_bundles,
    engine_kwargs,
    extraction,
    processor_settings,
)
from invoicelab.config import ConfigError, parse_experiment
from invoicelab.prompts import load_prompt
from invoicelab.results import schema

FIELDS = {"invoice_number": "id", "total": "amount"}
GT = {"invoice_number": "INV-1", "total": "10.00"}


def experiment(tmp_path: Path, variant: dict, prompts=("terse-json",), **extra):
    base = {"name": "v", "backend": "vllm", "model": "org/model", "batch_size": 2}
    return parse_experiment({
        "name": "vllm-test", "seed": 7, "output_dir": str(tmp_path / "{name}"),
        "dataset": {"source": "folder", "path": str(tmp_path)}, "fields": FIELDS, "prompts": list(prompts),
        "variants": [{**base, **variant}], **extra,
    })


def variant_of(tmp_path: Path, **settings):
    exp = experiment(tmp_path, settings)
    return exp, exp.variants[0]


# --- settings -> engine arguments and Ray Data LLM processor settings ----------------------------------


def test_every_setting_lands_in_its_engine_argument(tmp_path):
    _, v = variant_of(tmp_path, dtype="bfloat16", quantization="awq", max_model_len=4096, gpu_memory_utilization=0.6,
                      max_num_seqs=32, tensor_parallel_size=2, revision="abc123",
                      engine_kwargs={"enforce_eager": True, "max_num_seqs": 16})
    kwargs = engine_kwargs(v, seed=7)
    assert kwargs == {"dtype": "bfloat16", "quantization": "awq", "max_model_len": 4096, "gpu_memory_utilization": 0.6,
                      "max_num_seqs": 16, "tensor_parallel_size": 2, "seed": 7, "revision": "abc123",
                      "tokenizer_revision": "abc123", "enforce_eager": True}  # engine_kwargs win over settings


@pytest.mark.parametrize("method", ["awq", "gptq", "fp8", "bitsandbytes"])
def test_quantization_methods_pass_through_and_none_stays_out(tmp_path, method):
    _, quantized = variant_of(tmp_path, quantization=method)
    _, plain = variant_of(tmp_path)
    assert engine_kwargs(quantized, 0)["quantization"] == method
    assert "quantization" not in engine_kwargs(plain, 0) and "max_model_len" not in engine_kwargs(plain, 0)


def test_tensor_parallel_engine_is_one_placement_group_on_one_node(tmp_path):
    _, v = variant_of(tmp_path, tensor_parallel_size=4, resources={"accelerator_type": "H100", "actors": 2})
    assert v.resources.num_gpus == 4 and v.resources.num_cpus == 4  # defaults: a GPU and a CPU per rank
    settings = processor_settings(v, "/models/m", seed=0)
    assert settings["placement_group_config"] == {"bundles": [{"CPU": 1.0, "GPU": 1.0}] * 4,
                                                  "strategy": "STRICT_PACK"}
    assert settings["engine_kwargs"]["tensor_parallel_size"] == 4
    assert settings["concurrency"] == (2, 2) and settings["accelerator_type"] == "H100"


def test_tensor_parallel_without_a_gpu_per_rank_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="num_gpus must be tensor_parallel_size"):
        variant_of(tmp_path, tensor_parallel_size=2, resources={"num_gpus": 1})
    with pytest.raises(ConfigError, match="num_cpus must be >= tensor_parallel_size"):
        variant_of(tmp_path, tensor_parallel_size=2, resources={"num_cpus": 1})


def test_processor_settings_are_accepted_by_ray_data_llm(tmp_path):
    from ray.data.llm import vLLMEngineProcessorConfig

    _, v = variant_of(tmp_path, batch_size=16, resources={"num_cpus": 2, "num_gpus": 0.5, "custom": {"spot": 1}},
                      input="image")
    env = {"env_vars": {"A": "1"}}
    config = vLLMEngineProcessorConfig(**processor_settings(v, "/models/m", seed=3, max_images=2, runtime_env=env))
    assert config.model_source == "/models/m" and config.batch_size == 16 and config.concurrency == (1, 1)
    assert config.should_continue_on_error and config.runtime_env == env
    bundle = config.placement_group_config["bundles"][0]
    assert (bundle["CPU"], bundle["GPU"], bundle["spot"]) == (2.0, 0.5, 1.0)
    assert config.engine_kwargs["limit_mm_per_prompt"] == {"image": 2}
    assert config.prepare_multimodal_stage == {"enabled": True, "num_cpus": 2.0}
    assert config.chat_template_stage == {"enabled": True, "num_cpus": 2.0}
    assert config.tokenize_stage is False and config.detokenize_stage is False


def test_fractional_gpu_engines_share_a_gpu(tmp_path):
    _, v = variant_of(tmp_path, resources={"num_gpus": 0.5, "num_cpus": 0.5, "actors": 2})
    assert engine_bundles(v) == [{"CPU": 0.5, "GPU": 0.5}]


# --- requests ----------------------------------------------------------------------------------------


def test_text_request_renders_the_prompt_with_ocr_text_and_the_shared_sampling_settings(tmp_path):
    exp, v = variant_of(tmp_path, generation={"max_new_tokens": 77, "temperature": 0.3, "top_p": 0.9},
                        ocr={"max_chars": 100})
    prompt = load_prompt("terse-json")
    text = "Invoice INV-1 total 10.00 " * 20
    request = build_request(DocInput("d", text, "/x.png"), prompt, exp.fields, v, seed=7,
                            schema=answer_schema(exp.fields))
    assert request.messages == prompt.render(exp.fields, text[:100])[0]
    assert request.prefix == ""  # json-schema: the grammar writes the whole object
    assert request.sampling == {"max_tokens": 77, "temperature": 0.3, "top_p": 0.9, "seed": 7,
                                "structured_outputs": {"json": json.dumps(answer_schema(exp.fields))}}


def test_prefix_request_begins_the_answer_and_stops_at_its_closing_brace(tmp_path):
    exp, v = variant_of(tmp_path, structured="prefix")
    request = build_request(DocInput("d", "text", "/x.png"), load_prompt("terse-json"), exp.fields, v, seed=0)
    assert request.prefix == '{"invoice_number": "'
    assert request.messages[-1] == {"role": "assistant", "content": request.prefix}
    assert request.sampling["stop"] == ["}"] and request.sampling["include_stop_str_in_output"]
    assert "structured_outputs" not in request.sampling
    free = build_request(DocInput("d", "t", "/x"), load_prompt("terse-json"), exp.fields,
                         variant_of(tmp_path, structured="none")[1], seed=0)
    assert free.prefix == "" and "stop" not in free.sampling and "structured_outputs" not in free.sampling


def test_image_request_gives_every_page_as_a_data_url_and_no_ocr_text(tmp_path):
    exp, v = variant_of(tmp_path, input="image", image={"pages": "all"})
    pages = (b"\x89PNG page one", b"\x89PNG page two")
    request = build_request(DocInput("d", "OCR TEXT", "/x.pdf", pages), load_prompt("terse-json"), exp.fields, v, 0)
    user = request.messages[-1]
    assert user["role"] == "user" and [p["type"] for p in user["content"]] == ["image_url", "image_url", "text"]
    urls = [p["image_url"]["url"] for p in user["content"][:2]]
    assert [base64.b64decode(u.split(",", 1)[1]) for u in urls] == list(pages)
    assert all(u.startswith("data:image/png;base64,") for u in urls)
    assert "OCR TEXT" not in json.dumps(request.messages)
    with pytest.raises(ValueError, match="no page image"):
        build_request(DocInput("d", "", "/x.pdf"), load_prompt("terse-json"), exp.fields, v, 0)


# --- answers -> Extraction ----------------------------------------------------------------------------


def test_answer_becomes_fields_with_token_counts():
    out = extraction('{"invoice_number": "INV-1", "total": "10.00"}', 120, 14, "", list(FIELDS))
    assert out.fields == GT and (out.tokens_in, out.tokens_out) == (120, 14) and out.error is None
    continued = extraction('INV-1", "total": null}', 50, 9, '{"invoice_number": "', list(FIELDS))
    assert continued.fields == {"invoice_number": "INV-1", "total": None}
    assert continued.raw_output == '{"invoice_number": "INV-1", "total": null}'


def test_answer_without_json_is_a_parse_error_row():
    out = extraction("I cannot read this invoice.", 30, 7, "", list(FIELDS))
    assert out.fields == {"invoice_number": None, "total": None}
    assert out.parse_error and out.error.startswith("unparseable model output")


# --- the pipeline's row steps -------------------------------------------------------------------------


def page_row(doc_id: str, **extra) -> dict:
    return {"doc_id": doc_id, "path": f"/data/{doc_id}.png", "fields_json": json.dumps(GT), "normalized_json": "{}",
            "doc_sha256": "ab" * 32, "ocr_s": 0.5, "ocr_cached": False, "error": "", "error_stage": None,
            "text": "Invoice INV-1 total 10.00", "images_png": None, "size": 10, "mtime_ns": 1, **extra}


def steps(tmp_path, **settings):
    exp = experiment(tmp_path, settings, prompts=("terse-json", "described-json"))
    prompts = {p: asdict(load_prompt(p)) for p in exp.prompts}
    return exp.model_dump_json(), exp.variants[0].name, prompts


def test_request_rows_one_per_prompt_and_key_and_none_for_documents_that_cannot_be_asked(tmp_path):
    exp_json, name, prompts = steps(tmp_path)
    units = {"a": [("terse-json", "k1"), ("described-json", "k2")], "bad": [("terse-json", "k3")]}
    make = RequestRows(exp_json, name, prompts, units)
    rows = make(page_row("a"))
    assert [(r["key"], r["prompt_id"]) for r in rows] == [("k1", "terse-json"), ("k2", "described-json")]
    assert "Invoice INV-1 total 10.00" in rows[0]["messages"][-1]["content"]
    assert rows[0]["fields_json"] == json.dumps(GT) and rows[0]["sampling_params"]["seed"] == 7
    # Ray Data LLM reads a `model` column as a LoRA adapter, and its stages write these columns
    taken = {"model", "prompt", "tokenized_prompt", "params", "generated_text", "multimodal_data", "request_id"}
    assert not taken & set(rows[0])
    assert make(page_row("bad", error="cannot open file", error_stage="load")) == []
    assert make(page_row("other")) == []  # another variant's document in the same page table


def test_result_rows_are_scored_and_engine_errors_become_error_rows(tmp_path):
    exp_json, name, prompts = steps(tmp_path)
    engine_rows = pa.Table.from_pylist([
        {**page_row("a"), "key": "k1", "prompt_id": "terse-json", "prefix": "", "messages": None,
         "generated_text": '{"invoice_number": "INV-1", "total": "10.50"}', "num_input_tokens": 200,
         "num_generated_tokens": 20, "time_taken_llm": 0.8, "__inference_error__": ""},
        {**page_row("b"), "key": "k2", "prompt_id": "described-json", "prefix": "", "messages": None,
         "generated_text": "", "num_input_tokens": 0, "num_generated_tokens": 0, "time_taken_llm": -1.0,
         "__inference_error__": "ValueError: prompt too long"},
    ])
    table = ResultRows(exp_json, name, prompts, '{"backend": "vllm"}')(engine_rows)
    assert table.schema == schema(list(FIELDS))
    good, bad = table.to_pylist()
    assert (good["key"], good["variant"], good["backend"], good["prompt"]) == ("k1", "v", "vllm", "terse-json")
    assert good["pred_invoice_number"] == "INV-1" and good["match_invoice_number"] is True
    assert good["pred_total"] == "10.50" and good["match_total"] is False and good["gt_total"] == "10.00"
    assert (good["tokens_in"], good["tokens_out"], good["latency_s"]) == (200, 20, 0.8) and good["error"] is None
    assert good["backend_info"] == '{"backend": "vllm"}' and good["precision"] == "auto"
    assert bad["error"] == "vllm engine error: ValueError: prompt too long" and bad["error_stage"] == "model"
    assert bad["prompt"] == "described-json" and bad["pred_total"] is None and bad["gt_total"] == "10.00"


def test_input_error_rows_for_unreadable_documents_and_image_input_without_pages(tmp_path):
    exp_json, name, prompts = steps(tmp_path)
    units = {"a": [("terse-json", "k1")], "bad": [("terse-json", "k2"), ("described-json", "k3")]}
    pages = pa.Table.from_pylist([page_row("a"), page_row("bad", error="truncated image", error_stage="load"),
                                  page_row("other", error="x", error_stage="load")])
    rows = InputErrorRows(exp_json, name, prompts, units, "")(pages).to_pylist()
    assert [(r["key"], r["error"], r["error_stage"]) for r in rows] == [("k2", "truncated image", "load"),
                                                                       ("k3", "truncated image", "load")]
    exp_json, name, prompts = steps(tmp_path, input="image")
    rows = InputErrorRows(exp_json, name, prompts, units, "")(pages.slice(0, 1)).to_pylist()
    assert [(r["key"], r["error"]) for r in rows] == [("k1", "no page image to read")]


# --- whole runs through the orchestrator and Ray Data LLM, the engine replaced by a stand-in ------------

STANDIN = {
    "__init__.py": '''
        """Stand-in for vLLM's engine (tests only): the calls Ray Data LLM's vLLM stage makes, nothing else."""
        import json
        import os
        import types

        from vllm import inputs, outputs, sampling_params  # noqa: F401 - Ray Data LLM reaches them as vllm.<name>
        from vllm.sampling_params import SamplingParams  # noqa: F401

        __version__ = "0.0.0+standin"


        def log(record):
            with open(os.environ["VLLM_STANDIN_LOG"], "a") as f:
                f.write(json.dumps(record) + "\\n")


        class AsyncEngineArgs:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

            def create_engine_config(self):
                ns = types.SimpleNamespace
                return ns(scheduler_config=ns(max_num_seqs=self.kwargs.get("max_num_seqs", 8)),
                          parallel_config=ns(pipeline_parallel_size=1))


        class AsyncLLMEngine:
            @classmethod
            def from_engine_args(cls, args, stat_loggers=None):
                return cls(args.kwargs)

            def __init__(self, kwargs):
                from transformers import AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(kwargs["model"])
                self.asked = 0
                log({"engine_kwargs": kwargs})

            async def generate(self, request_id, prompt, sampling_params, lora_request=None):
                text, params = prompt["prompt"], sampling_params
                n, self.asked = self.asked, self.asked + 1
                schema = params.structured_outputs.json if params.structured_outputs else None
                log({"prompt": text, "max_tokens": params.max_tokens, "temperature": params.temperature,
                     "top_p": params.top_p, "seed": params.seed, "schema": schema})
                every = int(os.environ.get("VLLM_STANDIN_FAIL_EVERY", "0"))
                if every and n % every == every - 1:
                    raise RuntimeError("stand-in engine: injected failure")
                answer = json.loads(os.environ["VLLM_STANDIN_ANSWER"])
                answer = json.dumps({k: answer.get(k) for k in json.loads(schema)["properties"]})
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                out = self.tokenizer(answer, add_special_tokens=False)["input_ids"][:params.max_tokens]
                yield outputs.RequestOutput(prompt=text, prompt_token_ids=ids, finished=True,
                                            outputs=[outputs.CompletionOutput(text=answer, token_ids=out)])

            async def do_log_stats(self):
                pass

            def shutdown(self):
                pass
    ''',
    "outputs.py": '''
        from dataclasses import dataclass, field


        @dataclass
        class CompletionOutput:
            text: str
            token_ids: list
            logprobs: object = None


        @dataclass
        class RequestOutput:
            prompt: str
            prompt_token_ids: list
            outputs: list
            finished: bool
            metrics: object = None
            prompt_logprobs: object = None


        class PoolingRequestOutput:
            pass
    ''',
    "sampling_params.py": '''
        from dataclasses import dataclass


        @dataclass
        class StructuredOutputsParams:
            json: object = None
            regex: str = None
            choice: list = None
            grammar: str = None


        @dataclass
        class SamplingParams:  # unknown arguments fail, as vLLM's do
            max_tokens: int = 16
            temperature: float = 1.0
            top_p: float = 1.0
            seed: int = None
            stop: list = None
            include_stop_str_in_output: bool = False
            structured_outputs: StructuredOutputsParams = None
    ''',
    "inputs/__init__.py": "from vllm.inputs.llm import TextPrompt, TokensPrompt  # noqa: F401\n",
    "inputs/llm.py": "def TextPrompt(**kwargs):\n    return dict(kwargs)\n\n\nTokensPrompt = TextPrompt\n",
    "v1/__init__.py": "",
    "v1/metrics/__init__.py": "",
    "v1/metrics/ray_wrappers.py": "class RayPrometheusStatLogger:\n    pass\n",
}


def write_standin(folder: Path) -> Path:
    package = folder / "vllm"
    for name, source in STANDIN.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(textwrap.dedent(source).lstrip())
    return package


def write_dataset(folder: Path) -> None:
    from PIL import Image, ImageDraw

    lines = []
    for doc_id in ("good_1", "good_2", "good_3"):
        image = Image.new("RGB", (320, 160), "white")
        ImageDraw.Draw(image).text((10, 60), f"Invoice INV-1 total 10.00 ({doc_id})", fill="black")
        image.save(folder / f"{doc_id}.png")
        lines.append(json.dumps({"doc_id": doc_id, "file": f"{doc_id}.png", "fields": GT}))
    lines.append(json.dumps({"doc_id": "missing", "file": "nowhere.png", "fields": GT}))
    (folder / "gt.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


def vllm_run(tmp_path: Path, model: Path, variant: dict, prompts=("terse-json",)):
    from invoicelab.orchestrator.pipeline import run_experiment

    data = tmp_path / "data"
    data.mkdir()
    write_dataset(data)
    exp = parse_experiment({
        "name": "vllm-e2e", "seed": 7, "output_dir": str(tmp_path / "run"), "fields": FIELDS, "prompts": list(prompts),
        "dataset": {"source": "folder", "path": str(data)},
        "page_stage": {"num_cpus": 0.5},
        "variants": [{"name": "tiny-vllm", "backend": "vllm", "model": str(model), "batch_size": 2,
                      "ocr": {"engine": "none"}, "resources": {"num_cpus": 0.25, "num_gpus": 0}, **variant}],
    })
    return exp, pd.read_parquet(run_experiment(exp).results)


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_vllm_variant_rows_end_to_end_through_ray_data_llm(ray_cluster, tmp_path, tiny_model):
    log = tmp_path / "engine.jsonl"
    env = {"VLLM_STANDIN_LOG": str(log), "VLLM_STANDIN_ANSWER": json.dumps(GT), "VLLM_STANDIN_FAIL_EVERY": "2"}
    variant = {"dtype": "float32", "max_model_len": 512, "max_num_seqs": 8, "gpu_memory_utilization": 0.5,
               "generation": {"max_new_tokens": 48}, "engine_kwargs": {"enforce_eager": True},
               "runtime_env": {"env_vars": {**env, "PYTHONPATH": str(write_standin(tmp_path / "standin").parent)}}}
    exp, df = vllm_run(tmp_path, tiny_model, variant, prompts=("terse-json", "described-json"))

    # every (document, prompt) exactly once, each kind of outcome with its reason
    assert len(df) == 8 and not df.duplicated(["doc_id", "prompt"]).any()
    assert set(df["backend"]) == {"vllm"} and set(df["precision"]) == {"float32"}
    missing = df[df["doc_id"] == "missing"]
    assert len(missing) == 2 and missing["error"].notna().all() and (missing["error_stage"] != "model").all()
    asked = df[df["doc_id"] != "missing"]
    failed = asked[asked["error"].notna()]
    assert len(failed) == 3  # every second of the 6 requests
    assert (failed["error"] == "vllm engine error: RuntimeError: stand-in engine: injected failure").all()
    assert (failed["error_stage"] == "model").all()
    answered = asked[asked["error"].isna()]
    assert answered["match_invoice_number"].all() and answered["match_total"].all()
    assert (answered["tokens_in"] > 20).all() and (answered["tokens_out"] > 5).all()
    info = json.loads(answered["backend_info"].iloc[0])
    assert info["engine"].startswith("ray.data.llm") and info["vllm_version"] == "unknown"

    # what reached the engine: the settings, chat-templated prompts, the shared sampling and the schema
    records = [json.loads(line) for line in log.read_text().splitlines()]
    engine = next(r["engine_kwargs"] for r in records if "engine_kwargs" in r)
    assert {k: engine[k] for k in ("dtype", "max_model_len", "max_num_seqs", "gpu_memory_utilization", "seed",
                                    "enforce_eager")} == {"dtype": "float32", "max_model_len": 512, "max_num_seqs": 8,
                                                          "gpu_memory_utilization": 0.5, "seed": 7,
                                                          "enforce_eager": True}
    requests = [r for r in records if "prompt" in r]
    assert len(requests) == 6
    assert all(r["prompt"].endswith("<|im_start|>assistant\n") and "invoice_number" in r["prompt"] for r in requests)
    assert {(r["max_tokens"], r["temperature"], r["top_p"], r["seed"]) for r in requests} == {(48, 0.0, 1.0, 7)}
    assert {r["schema"] for r in requests} == {json.dumps(answer_schema(exp.fields))}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    sent = {len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in requests}
    assert set(answered["tokens_in"].astype(int)) <= sent  # the prompt's tokens as the engine counted them


@pytest.mark.ray
@pytest.mark.timeout(300)
@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_without_vllm_every_row_says_which_extra_to_install(ray_cluster, tmp_path, tiny_model):
    _, df = vllm_run(tmp_path, tiny_model, {})
    assert len(df) == 4 and df["error"].notna().all()
    assert (df["error"] == MISSING_VLLM).all() and "pip install 'invoicelab[vllm]'" in MISSING_VLLM


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_ray_data_llm_reserves_the_engine_gpus_from_our_settings(ray_cluster, tmp_path, tiny_model):
    """Ray Data LLM's own stage turns our settings into actor resources and a placement group."""
    import ray
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    _, single = variant_of(tmp_path, model=str(tiny_model), resources={"num_cpus": 2})
    stage = build_processor(vLLMEngineProcessorConfig(**processor_settings(single, str(tiny_model), 0)))
    assert stage.list_stage_names() == ["ChatTemplateStage", "vLLMEngineStage"]
    engine = stage.get_stage_by_name("vLLMEngineStage").map_batches_kwargs
    assert (engine["num_gpus"], engine["num_cpus"]) == (1.0, 2.0)

    _, parallel = variant_of(tmp_path, model=str(tiny_model), tensor_parallel_size=2)
    stage = build_processor(vLLMEngineProcessorConfig(**processor_settings(parallel, str(tiny_model), 0)))
    engine = stage.get_stage_by_name("vLLMEngineStage").map_batches_kwargs
    assert engine["num_gpus"] == 0  # the engine's ranks hold the GPUs, in the placement group below
    strategy = engine["ray_remote_args_fn"]()["scheduling_strategy"]
    group = strategy.placement_group
    try:
        assert group.bundle_specs == [{"CPU": 1.0, "GPU": 1.0}] * 2
        assert ray.util.placement_group_table(group)["strategy"] == "STRICT_PACK"
    finally:
        ray.util.remove_placement_group(group)
