"""`invoicelab prompts`: list, show, diff, new --from, bulk edit with a preview, and render for a document and
model; all on a copy of the prompt files, whose untouched lines stay exactly as they were."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from invoicelab.cli_prompts import prompts_group
from invoicelab.prompt_tools import DEFAULT_FIELDS, set_keys
from invoicelab.prompt_versions import prompt_hash
from invoicelab.prompts import available, default_prompts_dir, load_prompt

SENTENCE = "Copy dates exactly as printed."


@pytest.fixture
def folder(tmp_path) -> Path:
    copy = tmp_path / "prompts"
    shutil.copytree(default_prompts_dir(), copy)
    return copy


def invoke(*args: str):
    return CliRunner().invoke(prompts_group, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rewriting_keys_keeps_the_file_as_it_was(folder):
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text()
        data = yaml.safe_load(text)
        same = {k: data[k] for k in ("id", "version", "system", "user")}
        assert set_keys(text, same) == text  # system and user come back as the same literal blocks
        changed = set_keys(text, {"user": data["user"].replace("Document text:", "The document:")})
        assert yaml.safe_load(changed) == {**data, "user": data["user"].replace("Document text:", "The document:")}
        differing = [a for a, b in zip(text.splitlines(), changed.splitlines()) if a != b]
        assert differing == ["  Document text:"]
    commented = "# top\nid: x\n# about the version\nversion: 1\nsystem: |\n  a\n\n# user next\nuser: |\n  b\n"
    assert set_keys(commented, {"version": 2, "system": "c\n"}) == commented.replace(
        "version: 1", "version: 2").replace("  a\n", "  c\n")
    assert set_keys("id: x\nversion: 1", {"answer_prefix": False}) == "id: x\nversion: 1\nanswer_prefix: false\n"


def test_list_shows_id_version_hash_and_description_and_a_broken_file(folder):
    (folder / "broken.yaml").write_text("id: broken\nversion: 1\n")
    result = invoke("list", "--dir", folder, "--store", folder / "no-store")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "version", "hash", "description"]
    terse = next(x for x in lines if x.startswith("terse-json"))
    assert terse.split()[:3] == ["terse-json", "1", prompt_hash(load_prompt("terse-json"), DEFAULT_FIELDS)]
    assert "Short instruction: list the field names" in terse
    broken = next(x for x in lines if x.startswith("broken"))
    assert "error:" in broken and "needs id, version, system and user" in broken
    assert len(lines) == 1 + len(available(folder))


def test_show_prints_the_file_with_its_hash(folder):
    result = invoke("show", "described-json", "--dir", folder)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].endswith(
        f"described-json.yaml  (hash {prompt_hash(load_prompt('described-json'), DEFAULT_FIELDS)})")
    assert result.stdout.split("\n", 1)[1] == (folder / "described-json.yaml").read_text()
    missing = invoke("show", "nope", "--dir", folder)
    assert missing.exit_code == 2 and "unknown prompt 'nope'; available: described-json" in missing.output


def test_diff_of_files_and_of_renderings(folder):
    files = invoke("diff", "terse-json", "described-json", "--dir", folder)
    assert files.exit_code == 0
    lines = files.stdout.splitlines()
    assert lines[:2] == ["--- terse-json", "+++ described-json"]
    assert "-id: terse-json" in lines and "+id: described-json" in lines and " version: 1" in lines
    rendered = invoke("diff", "terse-json", "described-json", "--dir", folder, "--rendered").stdout.splitlines()
    assert "-Fields: invoice_number, invoice_date, vendor_name, total" in rendered
    assert "+- total (amount as printed): total amount due, tax included" in rendered
    assert " ### system" in rendered and not any(x.startswith(("-id:", "+id:")) for x in rendered)
    assert invoke("diff", "terse-json", "terse-json", "--dir", folder).stdout == "no differences\n"


def test_new_copies_a_prompt_under_a_new_id_at_version_1(folder):
    source = folder / "fewshot-json.yaml"
    source.write_text(source.read_text().replace("version: 1", "version: 4"))
    result = invoke("new", "fewshot-v2", "--from", "fewshot-json", "--dir", folder)
    assert result.exit_code == 0 and result.stdout == f"wrote {folder / 'fewshot-v2.yaml'}\n"
    old, new = source.read_text().splitlines(), (folder / "fewshot-v2.yaml").read_text().splitlines()
    assert [(a, b) for a, b in zip(old, new) if a != b] == [("id: fewshot-json", "id: fewshot-v2"),
                                                            ("version: 4", "version: 1")]
    assert len(old) == len(new)
    copy = load_prompt("fewshot-v2", folder)
    assert prompt_hash(copy, DEFAULT_FIELDS) == prompt_hash(load_prompt("fewshot-json", folder), DEFAULT_FIELDS)
    assert invoke("new", "fewshot-v2", "--from", "fewshot-json", "--dir", folder).exit_code == 2  # exists
    bad = invoke("new", "Has Spaces", "--from", "fewshot-json", "--dir", folder)
    assert bad.exit_code == 2 and "lower-case letters" in bad.output
    assert invoke("new", "x", "--from", "nope", "--dir", folder).exit_code == 2


def test_edit_without_yes_previews_every_change_and_writes_nothing(folder):
    before = snapshot(folder)
    result = invoke("edit", "--dir", folder, "--all", "--append-system", SENTENCE)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [x for x in lines if x.startswith("--- a/")] == [f"--- a/{p}.yaml" for p in available(folder)]
    n = len(available(folder))
    assert n >= 3 and lines.count("-version: 1") == lines.count("+version: 2") == n
    assert sum(x.startswith("+  ") and x.endswith(SENTENCE) for x in lines) == n
    assert lines[-1] == f"preview: {n} file(s) would change; nothing written (add --yes to write)"
    assert snapshot(folder) == before


def test_edit_with_yes_writes_and_bumps_each_changed_files_version(folder):
    result = invoke("edit", "--dir", folder, "--ids", "terse-json,fewshot-json", "--append-system", SENTENCE, "--yes")
    assert result.exit_code == 0 and result.stdout.endswith("wrote 2 file(s), each version bumped by 1\n")
    for pid in ("terse-json", "fewshot-json"):
        prompt = load_prompt(pid, folder)
        assert prompt.version == 2 and prompt.system.endswith(f". {SENTENCE}\n")
        messages, _ = prompt.render(DEFAULT_FIELDS, "doc")
        assert messages[0]["content"].endswith(SENTENCE)
    assert load_prompt("described-json", folder).version == 1
    original = (default_prompts_dir() / "terse-json.yaml").read_text().splitlines()
    now = (folder / "terse-json.yaml").read_text().splitlines()
    assert len([1 for a, b in zip(original, now) if a != b]) == 2 and len(original) == len(now)
    again = invoke("edit", "--dir", folder, "--ids", "terse-json", "--append-system", SENTENCE, "--yes")
    assert again.stdout == "no prompt file changes\n" and load_prompt("terse-json", folder).version == 2


def test_edit_replaces_text_and_renames_a_field_as_a_whole_word_without_touching_placeholders(folder):
    (folder / "named.yaml").write_text(
        "id: named\nversion: 3\nsystem: |\n  Extract invoice_number and total.\nuser: |\n"
        "  Return invoice_number, not invoice_number_old or my_invoice_number.\n  Document text:\n  ${text}\n")
    renamed = invoke("edit", "--dir", folder, "--ids", "named", "--rename-field", "invoice_number", "invoice_id",
                     "--yes")
    assert renamed.exit_code == 0, renamed.output
    named = load_prompt("named", folder)
    assert named.version == 4 and named.system == "Extract invoice_id and total.\n"
    assert named.user.startswith("Return invoice_id, not invoice_number_old or my_invoice_number.")
    result = invoke("edit", "--dir", folder, "--ids", "terse-json", "--rename-field", "text", "body",
                    "--replace", "JSON:", "Answer:", "--yes")
    assert result.exit_code == 0, result.output
    terse = load_prompt("terse-json", folder)
    assert terse.version == 2 and "Document body:\n${text}\n\nAnswer:" in terse.user
    messages, _ = terse.render(DEFAULT_FIELDS, "THE DOCUMENT")
    assert "Document body:\nTHE DOCUMENT" in messages[-1]["content"]  # ${text} is still the placeholder


def test_edit_needs_a_selection_and_a_change(folder):
    before = snapshot(folder)
    assert invoke("edit", "--dir", folder, "--append-system", "x").exit_code == 2
    assert invoke("edit", "--dir", folder, "--all", "--ids", "terse-json", "--append-system", "x").exit_code == 2
    assert invoke("edit", "--dir", folder, "--all").exit_code == 2
    unknown = invoke("edit", "--dir", folder, "--ids", "terse-json,nope", "--append-system", "x", "--yes")
    assert unknown.exit_code == 2 and "unknown prompt 'nope'" in unknown.output
    assert snapshot(folder) == before


def _config(tmp_path: Path, shared_data: Path, variant: dict) -> Path:
    path = tmp_path / "render.yaml"
    path.write_text(yaml.safe_dump({
        "name": "render", "dataset": {"source": "folder", "path": str(shared_data / "invoice2data")},
        "fields": {"issuer": "text", "invoice_number": "id", "amount": "amount"},
        "variants": [{"name": "rules", "backend": "rules"}, variant]}, sort_keys=False))
    return path


def test_render_puts_the_documents_text_into_the_prompt(tmp_path, shared_data):
    config = _config(tmp_path, shared_data, {"name": "echo", "backend": "fake", "ocr": {"engine": "pdf-text"}})
    result = invoke("render", "terse-json", "--config", config, "--doc", "AzureInterior")
    assert result.exit_code == 0, result.output
    head, body = result.stdout.split("\n# format: ")
    assert head.startswith("# prompt terse-json version 1 hash ") and head.endswith("document AzureInterior")
    assert "variant echo (fake);" in head and "INV/2023/03/0008" in body and "Fields: issuer, invoice_number, amount" in body
    assert '"content": "{\\"issuer\\": \\""' in body  # the answer prefix
    rules = invoke("render", "terse-json", "--config", config, "--variant", "rules")
    assert rules.exit_code == 2 and "takes no prompt" in rules.output
    nodoc = invoke("render", "terse-json", "--config", config, "--doc", "nope")
    assert nodoc.exit_code == 2 and "no document 'nope'" in nodoc.output and "AzureInterior" in nodoc.output


@pytest.mark.model
def test_render_applies_the_bundled_models_chat_template_or_the_completion_format(tmp_path, shared_data):
    model = {"name": "small", "backend": "ocr-llm", "model": "smollm2-135m-instruct", "ocr": {"engine": "pdf-text"}}
    chat = invoke("render", "described-json", "--config", _config(tmp_path, shared_data, model),
                  "--doc", "AzureInterior")
    assert chat.exit_code == 0, chat.output
    assert "# format: chat template of smollm2-135m-instruct" in chat.stdout
    text = chat.stdout.split("\n", 2)[2]
    assert text.startswith("<|im_start|>system\nYou are an accounts-payable clerk.")
    assert "INV/2023/03/0008" in text and text.endswith('<|im_start|>assistant\n{"issuer": "\n')
    completion = invoke("render", "described-json", "--config",
                        _config(tmp_path, shared_data, {**model, "prompt_format": "completion"}))
    assert completion.exit_code == 0, completion.output
    assert "# format: completion" in completion.stdout and "<|im_start|>" not in completion.stdout
    assert completion.stdout.endswith('Answer with the JSON object only.\n\n{"issuer": "\n')
