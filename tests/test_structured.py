"""Structured output: the answer schema, prompt formats, and the three ways of making the answer JSON.

Schema tests check what xgrammar lets through, against a toy one-character vocabulary (no model).
``model`` tests run the bundled SmolLM2-135M-Instruct on CPU: json-schema (xgrammar-constrained),
prefix (the answer begun with the first key, stopped at "}" by ``generate``'s stop_strings) and none.
"""

from __future__ import annotations

import json
from typing import ClassVar

import pytest

from invoicelab.backends.structured import answer_schema
from invoicelab.config import FieldSpec

ALIAS = "smollm2-135m-instruct"
FIELDS = {
    "invoice_number": FieldSpec(type="id"),
    "invoice_date": FieldSpec(type="date", day_first=True),
    "vendor_name": FieldSpec(type="text", description="company that issued the invoice"),
    "total": FieldSpec(type="amount"),
}
SYSTEM = "You extract fields from invoices. Reply with one JSON object. Use null for a field that is absent."
INVOICES = [
    "ACME Corp\nInvoice No: INV-123\nDate: 2024-03-05\nTotal: $99.50",
    "Invoice 7\nTotal: 5.00 EUR",
    ("Globex Ltd, 12 Long Road, Springfield\nInvoice number: GX-2024-0042\nIssued: 1 February 2024\n"
     "Items: consulting 10 h at 80.00\nSubtotal: 800.00\nVAT 20%: 160.00\nAmount due: 960.00 GBP"),
]


def conversation(invoice: str) -> list[dict]:
    user = f"Fields: {', '.join(FIELDS)}\n\nDocument text:\n{invoice}\n\nJSON:"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


# ---------------------------------------------------------------- the schema (no model)

def accepts(schema: dict, answer: str) -> bool:
    """Whether xgrammar's grammar for ``schema`` takes ``answer`` as one complete answer."""
    import xgrammar as xgr

    vocab = [chr(i) for i in range(32, 127)]
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo(vocab, stop_token_ids=[0]))
    matcher = xgr.GrammarMatcher(compiler.compile_json_schema(json.dumps(schema), any_whitespace=False))
    return matcher.accept_string(answer) and matcher.is_completed()


def answer(**values) -> str:
    full = {name: values.get(name) for name in FIELDS}
    return json.dumps(full, ensure_ascii=False)


def test_schema_lists_every_field_in_order_required_and_nullable():
    schema = answer_schema(FIELDS)
    assert list(schema["properties"]) == list(FIELDS) == schema["required"]
    assert schema["additionalProperties"] is False
    for prop in schema["properties"].values():
        assert {"type": "null"} in prop["anyOf"] and any(s.get("type") == "string" for s in prop["anyOf"])
    assert {"type": "number"} in schema["properties"]["total"]["anyOf"]


def test_schema_takes_values_as_printed_and_nulls():
    schema = answer_schema(FIELDS)
    assert accepts(schema, answer())
    assert accepts(schema, answer(invoice_number="INV-2024-0042", invoice_date="25/12/2018",
                                  vendor_name="Acme {Supplies} Ltd", total="1,234.50"))
    for date in ("2018-12-25", "06 JAN 2018", "Dec 5, 2018", "15.01.19"):
        assert accepts(schema, answer(invoice_date=date)), date
    for amount in ("13.10", "1 234,50", "-5", "960", "RM8.35", "$ 99.50", "5,00 €", "960.00 GBP"):
        assert accepts(schema, answer(total=amount)), amount
    assert accepts(schema, answer().replace('"total": null', '"total": 179.50'))  # an amount may be a bare number


def test_schema_refuses_what_cannot_be_the_answer():
    schema = answer_schema(FIELDS)
    assert not accepts(schema, answer(total="Total: 13.10"))  # an amount is digits, separators and a currency
    assert not accepts(schema, answer(total="twelve"))
    assert not accepts(schema, answer(invoice_date="the 5th of December, two thousand and eighteen"))
    assert not accepts(schema, answer(invoice_number="Invoice number is 12, see above"))
    assert not accepts(schema, json.dumps({"invoice_number": None}))  # a field missing
    assert not accepts(schema, json.dumps({**json.loads(answer()), "notes": None}))  # a field not asked for
    swapped = dict(reversed(list(json.loads(answer()).items())))
    assert not accepts(schema, json.dumps(swapped))  # keys in field order
    assert not accepts(schema, answer(vendor_name="x" * 161))  # a looping model must close the string
    assert not accepts(schema, answer(invoice_number="1234567890" * 3))


def test_currency_schema_is_short():
    schema = answer_schema({"currency": FieldSpec(type="currency")})
    for code in ("EUR", "RM", "$", "S$", "€"):
        assert accepts(schema, json.dumps({"currency": code}, ensure_ascii=False)), code
    assert not accepts(schema, json.dumps({"currency": "Malaysian Ringgit"}))


# ---------------------------------------------------------------- prompt format and stop (no model)

class NoTemplateTokenizer:
    chat_template = None

    pieces: ClassVar[dict[int, str]] = {0: "", 1: '{"a', 2: '": "', 3: 'x}', 4: 'y', 5: '"}', 6: '\n'}  # 0: padding

    def batch_decode(self, rows, skip_special_tokens=True):
        return [self.decode(row) for row in rows]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.pieces[i] for i in ids)


def test_auto_format_is_completion_without_a_chat_template_and_chat_needs_one():
    from invoicelab.backends.hf import resolve_prompt_format

    tokenizer = NoTemplateTokenizer()
    assert resolve_prompt_format("auto", tokenizer) == "completion"
    assert resolve_prompt_format("completion", tokenizer) == "completion"
    with pytest.raises(ValueError, match="no chat template"):
        resolve_prompt_format("chat", tokenizer)


def test_completion_prompt_is_the_messages_as_plain_text_then_the_prefix():
    from invoicelab.backends.hf import TextLLM

    llm = object.__new__(TextLLM)
    llm.tokenizer, llm.prompt_format = NoTemplateTokenizer(), "completion"
    text = llm.prompt_text([{"role": "system", "content": "Be brief. "}, {"role": "user", "content": "Doc:\nX"}],
                           '{"total": "')
    assert text == 'Be brief.\n\nDoc:\nX\n\n{"total": "'


def test_stop_index_finds_the_token_that_completes_the_stop_string():
    from invoicelab.backends.hf import stop_index

    tokenizer = NoTemplateTokenizer()
    assert stop_index(tokenizer, [1, 2, 4, 5, 6], "}") == 3
    assert stop_index(tokenizer, [1, 2, 3, 4, 5], "}") == 2  # inside a value too: prefix mode's known limit
    assert stop_index(tokenizer, [1, 2, 4], "}") is None
    assert stop_index(tokenizer, [1, 2, 4, 5], 'y"}') == 3  # spread over two tokens


def test_a_row_stopped_by_its_stop_string_counts_no_padding_and_keeps_nothing_after_the_stop():
    from invoicelab.backends.hf import TextLLM

    llm = object.__new__(TextLLM)
    llm.tokenizer, llm.eos_ids = NoTemplateTokenizer(), {9}
    out = llm._decode([1, 2, 4, 5, 6, 0, 0], tokens_in=7, stop="}")
    assert (out.text, out.tokens_out) == ('{"a": "y"}', 4)
    cut = llm._decode([1, 2, 3, 4, 5], tokens_in=7, stop="}")  # "x}": the stop inside a value ends prefix mode
    assert (cut.text, cut.tokens_out) == ('{"a": "x}', 3)


# ---------------------------------------------------------------- the real bundled model

@pytest.fixture(scope="module")
def llm(private_cache):
    from invoicelab.backends.hf import TextLLM

    return TextLLM(ALIAS, precision="fp32", num_threads=1)  # one thread: the model is small, the machine shared


@pytest.fixture(scope="module")
def constrained(llm):
    """The three invoices answered in one batch under the answer schema."""
    convs = [conversation(t) for t in INVOICES]
    return llm.generate(convs, [""] * len(convs), max_new_tokens=96, schema=answer_schema(FIELDS))


@pytest.mark.model
def test_json_schema_answers_are_json_with_exactly_the_fields_and_end_by_themselves(constrained):
    for out in constrained:
        parsed = json.loads(out.text)
        assert list(parsed) == list(FIELDS), out.text
        assert all(v is None or isinstance(v, str) for k, v in parsed.items() if k != "total")
        assert parsed["total"] is None or isinstance(parsed["total"], (str, int, float))
        assert out.tokens_out < 96  # the grammar ended the answer with end-of-sequence, not the token limit
    assert json.loads(constrained[0].text)["invoice_number"] == "INV-123"


@pytest.mark.model
def test_json_schema_batch_equals_one_by_one(llm, constrained):
    schema = answer_schema(FIELDS)
    single = [llm.generate([conversation(t)], [""], max_new_tokens=96, schema=schema)[0] for t in INVOICES]
    assert len({g.tokens_in for g in single}) == 3  # the batch really needed padding
    assert [(g.text, g.tokens_in, g.tokens_out) for g in constrained] == [(g.text, g.tokens_in, g.tokens_out)
                                                                          for g in single]


@pytest.mark.model
def test_stop_string_ends_each_row_where_it_first_appears(llm):
    prefix = '{"invoice_number": "'
    convs = [conversation(t) for t in INVOICES[:2]]
    free = llm.generate(convs, [prefix] * 2, max_new_tokens=32)
    stopped = llm.generate(convs, [prefix] * 2, max_new_tokens=32, stop='",')
    for f, s in zip(free, stopped):
        assert s.text == f.text[:f.text.index('",') + 2], (f.text, s.text)
        assert s.tokens_out < f.tokens_out  # generation itself stopped, not only the text was cut


@pytest.mark.model
def test_closing_brace_inside_a_quoted_value_does_not_end_a_constrained_answer(llm):
    fields = {"vendor_name": FIELDS["vendor_name"], "total": FIELDS["total"]}
    conv = conversation("Curly} Braces Ltd\nTotal: 12.00")
    begun = '{"vendor_name": "Curly}'  # the answer already holds a "}" inside a string
    [out] = llm.generate([conv], [begun], max_new_tokens=48, schema=answer_schema(fields))
    parsed = json.loads(begun + out.text)
    assert list(parsed) == ["vendor_name", "total"] and parsed["vendor_name"].startswith("Curly}")
    with pytest.raises(ValueError, match="does not begin any answer"):
        llm.generate([conv], ['{"total": "'], max_new_tokens=4, schema=answer_schema(fields))


@pytest.mark.model
def test_completion_format_feeds_plain_text_to_the_model(llm):
    from invoicelab.backends.hf import TextLLM

    plain = object.__new__(TextLLM)
    plain.__dict__.update(llm.__dict__, prompt_format="completion")
    conv = conversation(INVOICES[0])
    prompt = plain.prompt_text(conv, "")
    assert "<|im_start|>" not in prompt and prompt.startswith(SYSTEM)
    [out] = plain.generate([conv], [""], max_new_tokens=64, schema=answer_schema(FIELDS))
    assert list(json.loads(out.text)) == list(FIELDS)
    assert out.tokens_in == len(llm.tokenizer(prompt)["input_ids"])


# ---------------------------------------------------------------- the ocr-llm backend honours `structured`

@pytest.mark.model
@pytest.mark.parametrize("mode", ["json-schema", "prefix", "none"])
def test_ocr_llm_backend_answers_in_the_variant_s_structured_mode(mode, private_cache):
    from invoicelab.backends.base import DocInput
    from invoicelab.backends.ocr_llm import OcrLlmBackend
    from invoicelab.prompts import load_prompt
    from invoicelab.variants import OcrLlmVariant

    variant = OcrLlmVariant(name=mode, backend="ocr-llm", model=ALIAS, structured=mode, fallback="none",
                            generation={"max_new_tokens": 64})
    backend = OcrLlmBackend(variant, FIELDS, num_threads=1)
    docs = [DocInput(doc_id=str(i), text=t, path=f"{i}.png") for i, t in enumerate(INVOICES[:2])]
    rows = backend.extract(docs, load_prompt("terse-json"))
    raws = [r.raw_output for r in rows]
    if mode == "json-schema":
        assert all(list(json.loads(raw)) == list(FIELDS) for raw in raws), raws
        assert backend.info()["xgrammar_version"]
    elif mode == "prefix":
        assert all(raw.startswith('{"invoice_number": "') and raw.endswith("}") and raw.count("}") == 1
                   for raw in raws), raws
    else:  # the model's own words, up to its end-of-sequence token
        assert not any(raw.startswith('{"invoice_number": "') for raw in raws), raws
    assert backend.info()["structured"] == mode
    if mode != "none":
        assert rows[0].fields["invoice_number"] == "INV-123"
