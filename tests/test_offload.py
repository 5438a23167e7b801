"""Offloading: weights past ``offload.device_gb`` go to disk on a CPU machine, and the answers stay the same."""

from __future__ import annotations

import pytest

from invoicelab.backends.placement import Limits, memory_problems
from invoicelab.backends.precision import PrecisionError, offload_kwargs
from invoicelab.config import load_experiment

ALIAS = "smollm2-135m-instruct"
INVOICE = "ACME SUPPLIES LTD\nInvoice No: INV-123\nDate: 05/03/2024\nTotal: 1,234.50 EUR"


def conversation(text: str) -> list[dict]:
    return [{"role": "system", "content": "Extract the invoice number and total as JSON."},
            {"role": "user", "content": text}]


def test_offload_caps_the_device_and_names_a_folder(tmp_path):
    cpu = offload_kwargs("fp32", "cpu", {"device_gb": 0.25, "cpu_gb": None, "folder": str(tmp_path)})
    assert cpu == {"device_map": "auto", "max_memory": {"cpu": 250_000_000}, "offload_folder": str(tmp_path)}
    gpu = offload_kwargs("bf16", "cuda:1", {"device_gb": 20, "cpu_gb": 64, "folder": None})
    assert gpu["max_memory"] == {1: 20_000_000_000, "cpu": 64_000_000_000} and gpu["offload_folder"]


def test_offload_refuses_a_precision_quantized_after_loading():
    with pytest.raises(PrecisionError, match="offload applies to fp32, bf16, fp16, not to int8-dynamic"):
        offload_kwargs("int8-dynamic", "cpu", {"device_gb": 0.1})
    exp = load_experiment("configs/quickstart.yaml", ["variants.1.offload.device_gb=0.1"])
    exp = exp.model_copy(update={"variants": [exp.variants[1]]})  # the int8-dynamic one only
    [problem] = memory_problems(exp, Limits(cpu_bytes=64e9, cpus=2))  # refused in the driver, before loading
    assert problem.startswith("variant 'smollm2-int8': offload applies to fp32, bf16, fp16, not to int8-dynamic")


@pytest.mark.model
def test_disk_offload_of_the_real_model_generates_the_same_answer(tmp_path):
    from invoicelab.backends.hf import TextLLM

    plain = TextLLM(ALIAS, precision="fp32", num_threads=2, device="cpu")
    [expected] = plain.generate([conversation(INVOICE)], ['{"invoice_number": "'], max_new_tokens=16)
    assert "placement" not in plain.info()
    del plain
    folder = tmp_path / "offload"
    llm = TextLLM(ALIAS, precision="fp32", num_threads=2, device="cpu",
                  offload={"device_gb": 0.15, "cpu_gb": None, "folder": str(folder)})
    places = set(llm.model.hf_device_map.values())
    assert places == {"cpu", "disk"}, llm.model.hf_device_map
    [got] = llm.generate([conversation(INVOICE)], ['{"invoice_number": "'], max_new_tokens=16)
    assert got.text == expected.text and "INV-123" in got.text
    placed = llm.info()["placement"]
    assert placed["modules"]["disk"] > 0 and placed["bytes"]["cpu"] <= 0.15e9 < sum(placed["bytes"].values())
