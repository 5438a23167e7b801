"""Prompt sets: variants generated along axes, their renderings per model format, and refusals before a run."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from invoicelab.backends.base import DocInput
from invoicelab.backends.fake import FakeBackend
from invoicelab.backends.hf import completion_text
from invoicelab.config import ConfigError, FieldSpec, PromptSetSpec, parse_experiment
from invoicelab.parsing import parse_fields
from invoicelab.prompt_sets import (
    RenderError,
    RenderTarget,
    expand,
    render_for,
    render_problems,
    variant_id,
)
from invoicelab.prompts import default_prompts_dir, example_values

PROMPTS = default_prompts_dir()
FIELDS = {
    "invoice_number": FieldSpec(type="id", example="INV-2024-0042", description="the number the vendor gave it"),
    "invoice_date": FieldSpec(type="date", example="2024-03-05"),
    "vendor_name": FieldSpec(type="text", example="ACME Ltd"),
    "total": FieldSpec(type="amount", example="1,234.50"),
}
ALL_LEVELS = {"style": ["terse", "descriptive"], "descriptions": ["on", "off"], "examples": [0, 1, 3],
              "order": ["given", "reversed", "shuffled"], "format": ["json", "lines"], "language": ["en", "de", "fr"]}
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Gemma 2's template shape: a system turn is refused, turns must alternate.
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
             "{% endif %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
             "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
LAST_ONLY = "{{ messages[-1]['content'] }}{% if add_generation_prompt %}\nAnswer:{% endif %}"
VLM_PARTS = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for p in m['content'] %}{% if p['type'] == "
             "'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ p['text'] }}{% endif %}{% endfor %}"
             "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXT_PARTS_ONLY = VLM_PARTS.replace("<|vision_start|><|image_pad|><|vision_end|>", "")


def generated(**axes) -> dict:
    return {p.id: p for p in expand(PromptSetSpec(base="invoice-axes", axes=axes), PROMPTS)}


def one(**axes):
    (prompt,) = generated(**{k: [v] for k, v in axes.items()}).values()
    return prompt


# ------------------------------------------------------------------------------------------- expansion


def test_the_full_grid_has_one_prompt_per_combination_with_readable_unique_ids():
    spec = PromptSetSpec(base="invoice-axes", axes=ALL_LEVELS)
    prompts = expand(spec, PROMPTS)
    assert len(prompts) == 2 * 2 * 3 * 3 * 2 * 3
    ids = [p.id for p in prompts]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "axes.terse-desc1-ex0-given-json-en" and ids[-1] == "axes.descriptive-desc0-ex3-shuf-lines-fr"
    assert all(re.fullmatch(r"axes\.[a-z]+-desc[01]-ex[013]-(given|rev|shuf)-(json|lines)-(en|de|fr)", i) for i in ids)
    for p in prompts:
        assert p.id == variant_id("axes", p.axes) and p.source == "set:axes" and p.version == 1
        assert p.n_examples == int(p.axes["examples"]) and p.output == p.axes["format"]
    assert [p.id for p in expand(spec, PROMPTS)] == ids  # deterministic


def test_an_axis_left_out_keeps_its_first_level():
    prompts = generated(format=["json", "lines"])
    assert list(prompts) == ["axes.terse-desc1-ex0-given-json-en", "axes.terse-desc1-ex0-given-lines-en"]


def test_a_sample_is_seeded_reproducible_and_keeps_the_baseline():
    def sample(seed, baseline=None):
        spec = PromptSetSpec(base="invoice-axes", axes=ALL_LEVELS, sample=0.25, seed=seed, baseline=baseline)
        return [p.id for p in expand(spec, PROMPTS)]

    first = sample(7)
    assert len(first) == 54 and first == sample(7) and first != sample(8)
    chosen = "axes.descriptive-desc0-ex3-shuf-lines-fr"
    for seed in range(6):
        assert "axes.terse-desc1-ex0-given-json-en" in sample(seed)  # the default baseline: the first
        assert chosen in sample(seed, baseline=chosen)


def test_a_baseline_that_is_not_generated_is_refused():
    spec = PromptSetSpec(base="invoice-axes", axes={"style": ["terse"]}, baseline="axes.nope")
    with pytest.raises(ConfigError, match="prompt_set.baseline: no generated prompt 'axes.nope'; generated: axes.terse"):
        expand(spec, PROMPTS)


def test_a_set_file_is_read_from_the_configs_prompts_dir_and_checked(tmp_path):
    (tmp_path / "my-prompts" / "sets").mkdir(parents=True)
    mini = {"name": "mini", "version": 2, "user": "${ask} ${fields}\n${text}",
            "axes": {"style": ["short"], "language": ["en", "de"]},
            "texts": {"en": {"ask": "Fields:"}, "de": {"ask": "Felder:"}}}
    (tmp_path / "my-prompts" / "sets" / "mini.yaml").write_text(yaml.safe_dump(mini))
    exp = parse_experiment({"name": "t", "dataset": {"source": "synthetic", "n": 2}, "fields": {"total": "amount"},
                            "variants": [{"name": "f", "backend": "fake"}], "prompts_dir": "my-prompts",
                            "base_dir": str(tmp_path), "prompt_set": {"base": "mini", "axes": {"language": ["de"]}}})
    (prompt,) = expand(exp.prompt_set, exp.prompts_path())
    assert prompt.id == "mini.short-desc1-ex0-given-json-de" and prompt.version == 2 and prompt.system == ""
    assert prompt.render({"total": FieldSpec(type="amount")}, "DOC")[0] == [{"role": "user", "content": "Felder: total\nDOC"}]
    broken = {**mini, "axes": {"style": ["Kurz"], "language": ["en", "fr"], "format": ["xml"]},
              "texts": {"en": {"ask": {"a": "x"}}}}
    (tmp_path / "my-prompts" / "sets" / "mini.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(ConfigError) as err:
        expand(PromptSetSpec(base="mini"), exp.prompts_path())
    for expected in ("axes.style: levels ['Kurz'] not allowed", "axes.format: levels ['xml'] not allowed; available: json",
                     "texts.fr: missing", "texts.en.ask: keys ['a'] are not the levels of one axis"):
        assert expected in str(err.value)


# ------------------------------------------------------------------------------------------- rendering


def test_field_descriptions_on_and_off():
    on, _ = one(descriptions="on").render(FIELDS, "DOC")
    off, _ = one(descriptions="off").render(FIELDS, "DOC")
    assert "- invoice_number (identifier as printed): the number the vendor gave it" in on[-1]["content"]
    assert "the number the vendor gave it" not in off[-1]["content"]
    assert "- invoice_number\n- invoice_date\n- vendor_name\n- total\n" in off[-1]["content"]


@pytest.mark.parametrize("n", [0, 1, 3])
def test_worked_examples_are_separate_chat_turns_each_a_different_document(n):
    messages, _ = one(examples=n).render(FIELDS, "THE DOCUMENT")
    assert [m["role"] for m in messages] == ["system", *["user", "assistant"] * n, "user"]
    assert "THE DOCUMENT" in messages[-1]["content"]
    assert not any("THE DOCUMENT" in m["content"] for m in messages[:-1])
    answers = [json.loads(m["content"]) for m in messages if m["role"] == "assistant"]
    assert answers == [example_values(FIELDS, k) for k in range(n)]
    assert len({json.dumps(a) for a in answers}) == n  # three examples, three different documents
    for user, answer in zip(messages[1::2], answers):  # each answer is read from the document before it
        assert all(v in user["content"] for v in answer.values())


def test_varied_examples_keep_each_values_shape():
    second = example_values(FIELDS, 1)
    assert re.fullmatch(r"INV-\d{4}-\d{4}", second["invoice_number"]) and second["invoice_number"] != "INV-2024-0042"
    assert re.fullmatch(r"2024-\d\d-\d\d", second["invoice_date"]) and second["invoice_date"] != "2024-03-05"
    assert re.fullmatch(r"\d,\d{3}\.\d\d", second["total"]) and second["vendor_name"].endswith(" Ltd")


def test_field_order_given_reversed_and_shuffled():
    def listed(prompt):
        messages, prefix = prompt.render(FIELDS, "DOC")
        return re.findall(r"^- (\w+)", messages[-1]["content"], flags=re.MULTILINE), prefix

    names = list(FIELDS)
    assert listed(one(order="given")) == (names, '{"invoice_number": "')
    assert listed(one(order="reversed")) == (names[::-1], '{"total": "')
    shuffled = [listed(expand(PromptSetSpec(base="invoice-axes", axes={"order": ["shuffled"]}, seed=s), PROMPTS)[0])[0]
                for s in range(5)]
    assert all(sorted(order) == sorted(names) for order in shuffled)
    assert any(order != names for order in shuffled)
    assert listed(one(order="shuffled")) == listed(one(order="shuffled"))  # seeded


def test_key_value_lines_are_asked_for_and_parsed_back():
    prompt = one(format="lines", examples=1)
    messages, prefix = prompt.render(FIELDS, "DOC")
    assert prefix == "invoice_number: " and "`name: value`" in messages[-1]["content"]
    assert messages[2]["content"].splitlines()[0] == "invoice_number: INV-2024-0042"
    assert parse_fields(messages[2]["content"], list(FIELDS)).fields == example_values(FIELDS, 0)
    answer = 'INV-9\n- invoice_date: "2024-01-31"\n**vendor_name**: Joe: The Shop\ntotal: null\nThanks!'
    parsed = parse_fields(answer, list(FIELDS), prefix=prefix)
    assert parsed.error is None and parsed.repaired
    assert parsed.fields == {"invoice_number": "INV-9", "invoice_date": "2024-01-31", "vendor_name": "Joe: The Shop",
                             "total": None}
    assert parse_fields("I cannot read it.", list(FIELDS)).error == "no JSON object in output"


@pytest.mark.parametrize(("language", "words"), [("en", "invoices"), ("de", "Rechnungen"), ("fr", "factures")])
def test_the_instruction_language(language, words):
    messages, _ = one(language=language, format="lines").render(FIELDS, "DOC")
    assert words in messages[0]["content"]
    assert "invoice_number" in messages[-1]["content"] and "${" not in messages[-1]["content"]
    others = {"en": "Answer", "de": "Antworte", "fr": "Réponds"}
    assert [w for w in others.values() if w in messages[-1]["content"]] == [others[language]]


# ------------------------------------------------------------------------------ model formats and refusals


def test_one_prompt_renders_for_chat_completion_and_vlm():
    prompt = one(examples=1)
    chat = render_for(prompt, "chat", FIELDS, "DOC", template=CHATML)
    assert chat.text.count("<|im_start|>") == 5 and chat.text.endswith('<|im_start|>assistant\n{"invoice_number": "')
    completion = render_for(prompt, "completion", FIELDS, "DOC")
    messages, prefix = prompt.render(FIELDS, "DOC")
    assert completion.text == completion_text(messages) + prefix  # as the transformers backend flattens it
    vlm = render_for(prompt, "vlm", FIELDS, template=VLM_PARTS)
    assert vlm.messages[-1]["content"][0] == {"type": "image"}
    assert sum(p["type"] == "image" for m in vlm.messages for p in m["content"]) == 1
    last_turn = vlm.text.rsplit("<|im_start|>user\n", 1)[1]
    assert last_turn.startswith("<|vision_start|><|image_pad|><|vision_end|>")


def test_a_template_that_refuses_or_drops_a_turn_is_named():
    prompt = one()
    with pytest.raises(RenderError, match="refuses this conversation: System role not supported"):
        render_for(prompt, "chat", FIELDS, template=NO_SYSTEM)
    with pytest.raises(RenderError, match="leaves out the system turn"):
        render_for(prompt, "chat", FIELDS, template=LAST_ONLY)
    with pytest.raises(RenderError, match="no place for the page image"):
        render_for(prompt, "vlm", FIELDS, template=TEXT_PARTS_ONLY)


def test_render_problems_name_prompt_variant_and_reason():
    prompts = list(generated(format=["json", "lines"]).values())
    targets = [RenderTarget("gemma2", "chat", "prefix", NO_SYSTEM), RenderTarget("chatml", "chat", "prefix", CHATML),
               RenderTarget("base", "completion", "prefix", NO_SYSTEM, prompt_format="completion"),
               RenderTarget("served", "chat", "json-schema"),
               RenderTarget("vlm", "vlm", "prefix", VLM_PARTS, prompt_format="completion")]
    problems = render_problems(prompts, FIELDS, targets)
    assert sorted(p.split(":")[0] for p in problems) == sorted([
        "prompt 'axes.terse-desc1-ex0-given-json-en', variant 'gemma2'",
        "prompt 'axes.terse-desc1-ex0-given-lines-en', variant 'gemma2'",
        "prompt 'axes.terse-desc1-ex0-given-lines-en', variant 'served'",
        "prompt 'axes.terse-desc1-ex0-given-json-en', variant 'vlm'",
        "prompt 'axes.terse-desc1-ex0-given-lines-en', variant 'vlm'"])
    assert any("System role not supported" in p for p in problems)
    assert any("constrained to JSON (structured: json-schema)" in p for p in problems)
    assert any("prompt_format: completion" in p for p in problems)


def test_a_prompt_the_model_cannot_render_is_refused_before_the_run(tmp_path):
    """prepare refuses it before it reads any document (the dataset folder does not even exist)."""
    from invoicelab.orchestrator.pipeline import prepare

    model = tmp_path / "gemma2-like"
    model.mkdir()
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": NO_SYSTEM, "bos_token": "<bos>"}))

    def config(**variant):
        return parse_experiment({
            "name": "refuse", "output_dir": str(tmp_path / "out"), "dataset": {"source": "folder", "path": "missing"},
            "fields": {"total": "amount"}, "prompt_set": {"base": "invoice-axes", "axes": {"style": ["terse"]}},
            "variants": [{"name": "g2", "backend": "ocr-llm", "model": str(model), **variant}],
            "base_dir": str(tmp_path)})

    with pytest.raises(ConfigError) as err:
        prepare(config())
    assert ("prompt 'axes.terse-desc1-ex0-given-json-en', variant 'g2': chat: the chat template refuses this "
            "conversation: System role not supported") in str(err.value)
    from invoicelab.data.documents import DatasetError

    with pytest.raises(DatasetError):  # as plain text for a base model the same prompt renders: on to the data
        prepare(config(prompt_format="completion"))


# ------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(("prompt_set", "expected"), [
    ({"base": "invoice-axes", "axes": {"colour": ["red"]}},
     "prompt_set.axes: unknown axis 'colour'; available: style, descriptions, examples, order, format, language"),
    ({"base": "invoice-axes", "axes": {"language": ["en", "it"]}},
     "prompt_set.axes.language: unknown level 'it'; available: en, de, fr"),
    ({"base": "invoice-axes", "axes": {"format": ["xml"]}}, "prompt_set.axes.format: unknown level 'xml'; available: json, lines"),
    ({"base": "invoice-axes", "axes": {"examples": [2]}}, "prompt_set.axes.examples: unknown level '2'; available: 0, 1, 3"),
    ({"base": "nope"}, "prompt_set.base: no set file"),
    ({"base": "invoice-axes", "sample": 0}, "prompt_set.sample: Input should be greater than 0"),
    ({"base": "invoice-axes", "confirm_fraction": 1}, "prompt_set.confirm_fraction"),
])
def test_config_errors_name_the_field_and_what_is_allowed(prompt_set, expected):
    config = {"name": "t", "dataset": {"source": "synthetic", "n": 2}, "fields": {"total": "amount"},
              "variants": [{"name": "f", "backend": "fake"}], "prompt_set": prompt_set}
    with pytest.raises(ConfigError) as err:
        parse_experiment(config)
    assert expected in str(err.value)


def test_a_bad_level_in_a_config_file_exits_2_naming_it(tmp_path):
    from invoicelab.cli import main

    config = {"name": "t", "dataset": {"source": "synthetic", "n": 2}, "fields": {"total": "amount"},
              "variants": [{"name": "f", "backend": "fake"}],
              "prompt_set": {"base": "invoice-axes", "axes": {"style": ["chatty"]}}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["plan", str(tmp_path / "e.yaml")])
    assert result.exit_code == 2
    assert "prompt_set.axes.style: unknown level 'chatty'; available: terse, descriptive" in result.output


def test_yaml_levels_and_the_default_prompt_beside_a_set(tmp_path):
    text = ("name: t\ndataset: {source: synthetic, n: 2}\nfields: {total: amount}\nvariants: [{name: f, backend: fake}]\n"
            "prompt_set: {base: invoice-axes, axes: {descriptions: [on, off], examples: [0, 3]}}\n")
    exp = parse_experiment(yaml.safe_load(text))
    assert exp.prompts == [] and exp.prompt_set.axes == {"descriptions": ["on", "off"], "examples": ["0", "3"]}
    both = parse_experiment({**yaml.safe_load(text), "prompts": ["terse-json"]})
    assert both.prompts == ["terse-json"]
    with pytest.raises(ConfigError, match="give at least one prompt id, or a prompt_set"):
        parse_experiment({**yaml.safe_load(text), "prompt_set": None, "prompts": []})


# ----------------------------------------------------------------------------------- the fake's planted effect


def test_the_fake_backend_plants_an_effect_on_one_axis_only():
    from invoicelab.config import FakeVariant

    variant = FakeVariant(name="f", backend="fake", options={"wrong_rate_by_axis": {"format": {"lines": 0.5}}})
    fake = FakeBackend(variant, FIELDS, seed=3)
    docs = [DocInput(doc_id=f"d{i}", text="", path=f"d{i}.png") for i in range(300)]
    fake.see_truth({d.doc_id: example_values(FIELDS, 0) for d in docs})

    def wrong_share(prompt):
        out = fake.extract(docs, prompt)
        return sum(v != example_values(FIELDS, 0)[f] for e in out for f, v in e.fields.items()) / (len(docs) * 4)

    shares = {p.id: wrong_share(p) for p in generated(style=["terse", "descriptive"], format=["json", "lines"]).values()}
    assert shares["axes.terse-desc1-ex0-given-json-en"] == shares["axes.descriptive-desc1-ex0-given-json-en"] == 0
    assert 0.44 < shares["axes.terse-desc1-ex0-given-lines-en"] < 0.56
    assert 0.44 < shares["axes.descriptive-desc1-ex0-given-lines-en"] < 0.56
    lines = one(format="lines")
    assert fake.extract(docs[:5], lines) == fake.extract(docs[:5], lines)  # deterministic
    assert fake.extract(docs[:1], lines)[0].raw_output.startswith("invoice_number: ")  # answers in the asked format


# ----------------------------------------------------------------------------------- end to end on Ray


@pytest.mark.ray
def test_a_prompt_set_experiment_runs_one_row_per_document_and_generated_prompt(ray_cluster, tmp_path):
    from invoicelab.orchestrator.describe import describe
    from invoicelab.orchestrator.pipeline import run_experiment

    exp = parse_experiment({
        "name": "t-prompt-set", "kind": "prompt", "output_dir": str(tmp_path / "{name}"),
        "dataset": {"source": "synthetic", "n": 6},
        "fields": {"invoice_number": "id", "total": "amount", "vendor_name": {"type": "text", "match": "fuzzy"}},
        "prompt_set": {"base": "invoice-axes", "axes": {"style": ["terse", "descriptive"], "format": ["json", "lines"]}},
        "variants": [{"name": "echo", "backend": "fake",
                      "options": {"wrong_rate_by_axis": {"style": {"descriptive": 1.0}}}}],
    })
    lines, ok = describe(exp)
    assert ok and "prompt set 'invoice-axes': 4 generated prompts varying style, format; baseline " \
        "axes.terse-desc1-ex0-given-json-en" in lines
    assert re.fullmatch(r"  axes\.terse-desc1-ex0-given-json-en  [0-9a-f]{16}", lines[lines.index(
        "prompt set 'invoice-axes': 4 generated prompts varying style, format; baseline "
        "axes.terse-desc1-ex0-given-json-en") + 1])
    df = pd.read_parquet(run_experiment(exp).results)
    ids = {"axes.terse-desc1-ex0-given-json-en", "axes.terse-desc1-ex0-given-lines-en",
           "axes.descriptive-desc1-ex0-given-json-en", "axes.descriptive-desc1-ex0-given-lines-en"}
    assert len(df) == 24 and set(df["prompt"]) == ids
    assert not df.duplicated(["doc_id", "prompt"]).any() and df["error"].isna().all()
    terse = df[df["prompt"].str.startswith("axes.terse")]
    assert terse["match_total"].all() and terse["match_invoice_number"].all()  # lines answers parse back too
    assert not df[df["prompt"].str.startswith("axes.descriptive")]["match_total"].any()
