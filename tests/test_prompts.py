"""Prompt templates: every shipped prompt loads and renders; unknown ids and placeholders are errors."""

from __future__ import annotations

import pytest

from invoicelab.config import ConfigError, FieldSpec
from invoicelab.prompts import available, default_prompts_dir, load_prompt

FIELDS = {"invoice_number": FieldSpec(type="id", example="INV-1", description="the number"),
          "total": FieldSpec(type="amount", example="9.99")}


def test_at_least_two_prompts_ship_with_ids_and_versions():
    ids = available(default_prompts_dir())
    assert {"terse-json", "described-json", "fewshot-json"} <= set(ids)
    for prompt_id in ids:
        prompt = load_prompt(prompt_id)
        assert prompt.id == prompt_id and prompt.version >= 1 and prompt.description


@pytest.mark.parametrize("prompt_id", ["terse-json", "described-json", "fewshot-json"])
def test_rendering_puts_fields_and_document_in_and_begins_the_answer(prompt_id):
    messages, prefix = load_prompt(prompt_id).render(FIELDS, "ACME  Invoice INV-77  TOTAL 12.00")
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    assert "ACME  Invoice INV-77  TOTAL 12.00" in messages[-1]["content"]
    assert "invoice_number" in messages[-1]["content"] and "total" in messages[-1]["content"]
    assert "${" not in "".join(m["content"] for m in messages)
    assert prefix == '{"invoice_number": "'


def test_prompts_differ_in_what_they_show():
    terse, _ = load_prompt("terse-json").render(FIELDS, "doc")
    described, _ = load_prompt("described-json").render(FIELDS, "doc")
    fewshot, _ = load_prompt("fewshot-json").render(FIELDS, "doc")
    assert "the number" in described[-1]["content"] and "the number" not in terse[-1]["content"]
    assert "INV-1" not in described[-1]["content"]  # no example values to copy
    assert [m["role"] for m in fewshot] == ["system", "user", "assistant", "user"]
    assert fewshot[2]["content"] == '{"invoice_number": "INV-1", "total": "9.99"}'
    assert "Invoice Number: INV-1" in fewshot[1]["content"]


def test_unknown_prompt_lists_what_exists():
    with pytest.raises(ConfigError, match="unknown prompt 'nope'; available: described-json, fewshot-json"):
        load_prompt("nope")


def test_a_template_with_an_unknown_placeholder_is_refused(tmp_path):
    (tmp_path / "bad.yaml").write_text("id: bad\nversion: 1\nsystem: s\nuser: 'text: ${txt}'\n")
    with pytest.raises(ConfigError, match=r"unknown placeholders \['txt'\]"):
        load_prompt("bad", tmp_path)
