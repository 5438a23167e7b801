"""CPU precisions beyond the floats: torchao int8 / int4 weight-only, torch dynamic int8 with float
exclusions, each honest about what it loaded, and reproducible within a process.

Unit tests run without a model. ``model`` tests load the real bundled SmolLM2-135M-Instruct on CPU,
each precision once per module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from invoicelab.backends.models import resolve_model
from invoicelab.config import ConfigError, load_experiment, parse_experiment

# torch.ao's dynamic-quantized Linear still uses torch.jit.script_method (deprecated in torch 2.13)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

ALIAS = "smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parents[1]
N_LAYERS = 30  # SmolLM2-135M: 30 decoder layers of 7 Linear each, plus lm_head = 211 Linear layers
DOWN_PROJ = [f"model.layers.{i}.mlp.down_proj" for i in range(N_LAYERS)]
INVOICES = ["ACME Corp\nInvoice No: INV-123\nDate: 2024-03-05\nTotal: $99.50",
            "Blue Fox Trading Ltd\nTax invoice 88/2023\nIssued 1 Feb 2023\nAmount due EUR 1,204.00"]


def conversation(invoice: str) -> list[dict]:
    return [{"role": "system", "content": "Extract invoice_number, invoice_date, total as JSON."},
            {"role": "user", "content": invoice}]


# ---------------------------------------------------------------- config (no model)

def test_config_runs_every_cpu_precision_on_the_quickstart_documents():
    exp = load_experiment(ROOT / "configs" / "quantization_cpu.yaml")
    quickstart = load_experiment(ROOT / "configs" / "quickstart.yaml")
    by_name = {v.name: v for v in exp.variants}
    assert exp.kind == "quantization" and exp.variants[0].precision == "fp32"
    assert {v.precision for v in exp.variants} == {"fp32", "bf16", "bnb-int8", "bnb-nf4", "int8-dynamic",
                                                    "int8-weight-only", "int4-weight-only"}
    kept = by_name["int8-dynamic-keep-down-proj"]
    assert by_name["int8-dynamic"].keep_float == [] and kept.keep_float == ["down_proj"]
    assert kept.precision_label == "int8-dynamic (float: down_proj)"
    assert {v.model for v in exp.variants} == {ALIAS} and all(v.fallback == "none" for v in exp.variants)
    assert all(v.resources.num_cpus == 1 for v in exp.variants)
    assert exp.dataset.source == "synthetic" and exp.dataset.synthetic == quickstart.dataset.synthetic
    assert exp.seed == quickstart.seed and exp.fields == quickstart.fields


def test_keep_float_on_a_precision_that_ignores_it_is_a_config_error():
    variant = {"name": "v", "backend": "ocr-llm", "model": ALIAS, "precision": "bnb-nf4", "keep_float": ["down_proj"]}
    with pytest.raises(ConfigError, match="keep_float applies to int8-dynamic, int8-weight-only, int4-weight-only"):
        parse_experiment({"name": "x", "dataset": {"source": "synthetic", "n": 2}, "fields": {"total": {}},
                          "variants": [variant]})


def test_int8_dynamic_on_a_gpu_is_refused_with_the_reason_before_loading(tmp_path):
    from invoicelab.backends.precision import PrecisionError, load_model

    with pytest.raises(PrecisionError, match="runs on CPU only"):
        load_model(str(tmp_path / "no-model-here"), "int8-dynamic", "cuda")


# ---------------------------------------------------------------- the real bundled model

@pytest.fixture(scope="module")
def engines(private_cache):
    """TextLLM per (precision, keep_float), loaded on first use and kept for the module."""
    from invoicelab.backends.hf import TextLLM

    resolve_model(ALIAS)  # converts the bundled GGUF once (into the session's private cache)
    cache: dict = {}

    def get(precision: str, keep_float: tuple[str, ...] = ()) -> TextLLM:
        if (precision, keep_float) not in cache:
            cache[precision, keep_float] = TextLLM(ALIAS, precision=precision, num_threads=2, device="cpu",
                                                   keep_float=list(keep_float))
        return cache[precision, keep_float]

    return get


def answers(llm, invoices: list[str], tokens: int = 10) -> list[str]:
    return [g.text for g in llm.generate([conversation(i) for i in invoices], ['{"invoice_number": "'] * len(invoices),
                                         max_new_tokens=tokens)]


@pytest.mark.model
@pytest.mark.parametrize("precision, tensor", [("int8-weight-only", "Int8Tensor"),
                                               ("int4-weight-only", "IntxUnpackedToInt8Tensor")])
def test_weight_only_precisions_hold_quantized_weights_in_fewer_bytes(engines, precision, tensor):
    from invoicelab.backends.precision import int4_values_ok

    llm, fp32 = engines(precision), engines("fp32")
    info = llm.info()
    assert info["linear_layers"] == {f"Linear[{tensor}]": 7 * N_LAYERS + 1}  # every Linear, lm_head included
    assert info["quantized_linear_layers"] == info["linear_layers"] and info["float_linear_layers"] == []
    assert info["param_dtypes"]["torch.int8"] > 130e6  # the weights' values, counted as what they are stored in
    assert info["memory_footprint_bytes"] < 0.55 * fp32.info()["memory_footprint_bytes"]
    assert info["batch_dependent"] is False and info["torchao_version"]
    if precision == "int4-weight-only":
        assert int4_values_ok(llm.model) and "one per int8 byte" in info["note"]
    assert all(answers(llm, INVOICES[:1], tokens=4))  # it generates


@pytest.mark.model
def test_keep_float_leaves_exactly_the_named_layers_in_float(engines):
    all_int8, kept = engines("int8-dynamic"), engines("int8-dynamic", ("down_proj",))
    info = kept.info()
    assert info["float_linear_layers"] == DOWN_PROJ
    assert info["linear_layers"] == {"DynamicQuantizedLinear": 6 * N_LAYERS + 1, "Linear": N_LAYERS}
    assert info["precision_loaded"] == "int8-dynamic" and info["batch_dependent"] is True
    assert all_int8.info()["float_linear_layers"] == []
    assert all_int8.info()["memory_footprint_bytes"] < info["memory_footprint_bytes"] \
        < engines("fp32").info()["memory_footprint_bytes"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    """A randomly initialised 2-layer Llama saved as a model folder (built here, nothing downloaded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    return str(folder)


@pytest.mark.model
@pytest.mark.parametrize("precision, quantized", [("int8-weight-only", "Linear[Int8Tensor]"),
                                                  ("int4-weight-only", "Linear[IntxUnpackedToInt8Tensor]")])
def test_weight_only_keep_float_leaves_exactly_the_named_layers_in_float(tiny_llama, precision, quantized):
    from invoicelab.backends.precision import linear_layer_counts, load_model
    from invoicelab.backends.precision_quant import kept_float

    model = load_model(tiny_llama, precision, "cpu", keep_float=["lm_head", "o_proj"])
    assert kept_float(model) == ["model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj", "lm_head"]
    assert linear_layer_counts(model) == {quantized: 2 * 7 - 2, "Linear": 3}


@pytest.mark.model
def test_keep_float_naming_no_layer_fails_and_lists_the_layer_names(tiny_llama):
    from invoicelab.backends.precision import PrecisionError, load_model

    with pytest.raises(PrecisionError, match=r"\['down_prj'\] match no Linear layer.*down_proj, gate_proj"):
        load_model(tiny_llama, "int8-dynamic", "cpu", keep_float=["down_prj"])


@pytest.mark.model
@pytest.mark.parametrize("precision, keep_float, batch_dependent", [
    ("fp32", (), False), ("bf16", (), True), ("int8-dynamic", (), True), ("int8-dynamic", ("down_proj",), True),
    ("bnb-int8", (), True), ("bnb-nf4", (), None), ("int8-weight-only", (), False), ("int4-weight-only", (), False),
])
def test_the_same_batch_twice_gives_the_same_answers(engines, precision, keep_float, batch_dependent):
    llm = engines(precision, keep_float)
    first = answers(llm, INVOICES)
    assert all(first) and answers(llm, INVOICES) == first
    info = llm.info()
    if batch_dependent is not None:  # bnb-nf4: bfloat16 arithmetic only on CPUs with AVX512-BF16
        assert info["batch_dependent"] is batch_dependent
    assert ("batch-dependent" in info.get("note", "")) is info["batch_dependent"]
    if not info["batch_dependent"]:  # what the info promises: a document's answer does not depend on its batch
        assert answers(llm, INVOICES[:1]) == first[:1]
