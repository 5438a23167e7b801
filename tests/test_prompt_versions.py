"""Prompt identity and history: the hash follows what the model reads, rows carry it, an edited prompt's
old rows are superseded, the history shows each version with a diff and warns of an unbumped version."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from invoicelab.actors.extractor import Extractor
from invoicelab.cli_prompts import prompts_group
from invoicelab.config import FieldSpec, parse_experiment
from invoicelab.history import record_run
from invoicelab.prompt_versions import check_versions, mixed_hashes, prompt_hash, rendered_text, save_prompts, versions
from invoicelab.prompts import default_prompts_dir, load_prompt
from invoicelab.results import to_table
from invoicelab.store import write_part

FIELDS = {"invoice_number": FieldSpec(type="id", description="the number", example="INV-1"),
          "total": FieldSpec(type="amount", example="9.99")}
SENTENCE = "Copy every value exactly as printed."


def edited(prompt, sentence: str = SENTENCE):
    """The prompt with a sentence added to its system message and its version left as it was."""
    return dataclasses.replace(prompt, system=prompt.system.rstrip() + " " + sentence + "\n")


def test_hash_follows_the_rendered_text_and_the_fields_not_the_yaml_layout(tmp_path):
    terse = load_prompt("terse-json")
    base = prompt_hash(terse, FIELDS)
    assert len(base) == 16 and base == prompt_hash(load_prompt("terse-json"), FIELDS)
    # the same texts laid out otherwise: keys reordered, a comment, a quoted scalar, another version and description
    (tmp_path / "terse-json.yaml").write_text(
        "# the same prompt, written differently\nanswer_prefix: yes\nuser: |-\n" + "".join(
            f"    {line}\n" if line else "\n" for line in terse.user.rstrip("\n").split("\n"))
        + f"system: {json.dumps(terse.system)}\nversion:   7\nid: terse-json\ndescription: another description\n")
    relaid = load_prompt("terse-json", tmp_path)
    assert (relaid.version, relaid.description) == (7, "another description")
    assert prompt_hash(relaid, FIELDS) == base
    assert prompt_hash(edited(terse), FIELDS) != base  # one sentence more
    assert prompt_hash(dataclasses.replace(terse, answer_prefix=False), FIELDS) != base
    # the fields it renders for: names and their order, descriptions and examples; not the scoring rules
    described = {**FIELDS, "invoice_number": FieldSpec(type="id", description="its id", example="INV-1")}
    assert prompt_hash(terse, described) != base
    assert prompt_hash(terse, dict(reversed(FIELDS.items()))) != base
    assert prompt_hash(terse, {**FIELDS, "total": FieldSpec(type="amount", example="9.99", tolerance=1.0)}) == base
    assert prompt_hash(None, FIELDS) is None


def _pages(n: int) -> pa.Table:
    rows = [{"doc_id": f"d{i}", "path": f"/nowhere/d{i}.png", "error": "", "text": f"Invoice INV-{i} Total 1{i}.00",
             "fields_json": json.dumps({"invoice_number": f"INV-{i}", "total": f"1{i}.00"}), "normalized_json": "{}",
             "doc_sha256": f"{i:064x}", "images_png": None} for i in range(n)]
    return pa.Table.from_pylist(rows)


def test_every_result_row_carries_its_prompts_hash():
    exp = parse_experiment({"name": "hash", "dataset": {"source": "synthetic", "n": 3},
                            "fields": {"invoice_number": "id", "total": "amount"},
                            "variants": [{"name": "echo", "backend": "fake"}]})
    terse, described = load_prompt("terse-json"), load_prompt("described-json")
    changed = dataclasses.replace(edited(described), id="changed")
    prompts = {p.id: asdict(p) for p in (terse, described, changed)}
    todo = [(f"d{i}", pid, f"{pid}-{i}") for pid in prompts for i in range(3)]
    rows = Extractor(exp.model_dump_json(), "echo", prompts)(_pages(3), todo).to_pylist()
    assert len(rows) == 9 and all(r["error"] is None for r in rows)
    by_prompt = {r["prompt"]: {x["prompt_hash"] for x in rows if x["prompt"] == r["prompt"]} for r in rows}
    expected = {p.id: {prompt_hash(p, exp.fields)} for p in (terse, described, changed)}
    assert by_prompt == expected
    assert len({h for hs in by_prompt.values() for h in hs}) == 3  # an edited text is another identity


def make_run(root: Path, name: str, finished: str, prompt, fields=FIELDS, saved: bool = True,
             experiment_extra: dict | None = None) -> Path:
    """A run folder written by hand: two documents of one prompt, their rows stamped with its hash."""
    run = root / name
    h = prompt_hash(prompt, fields)
    rows = [{"doc_id": d, "variant": "echo", "prompt": prompt.id, "prompt_version": prompt.version,
             "prompt_hash": h, "key": f"{name}-{d}", "fallback_fields": [],
             **{f"gt_{f}": "x" for f in fields}, **{f"match_{f}": True for f in fields}} for d in ("d1", "d2")]
    write_part(run / "results", to_table(rows, list(fields)), "part-0")
    if saved:
        save_prompts(run, [prompt])
    experiment = {"name": name, "kind": "prompt", "dataset": {"source": "synthetic", "n": 2},
                  "variants": [{"name": "echo", "backend": "fake"}], "prompts": [prompt.id],
                  "fields": {f: s.model_dump(mode="json") for f, s in fields.items()}, **(experiment_extra or {})}
    summary = {"name": name, "kind": "prompt", "fields": list(fields), "documents": 2, "finished_at": finished,
               "rows": [{"variant": "echo", "prompt": prompt.id, "accuracy": 1.0}]}
    (run / "experiment.json").write_text(json.dumps(experiment))
    (run / "summary.json").write_text(json.dumps(summary))
    record_run(root / "store", run, summary, experiment)
    return run


def test_log_shows_each_version_when_and_where_with_a_diff_and_warns_of_an_unbumped_version(tmp_path):
    terse = load_prompt("terse-json")
    make_run(tmp_path, "jan", "2026-01-05T10:00:00+00:00", terse)
    make_run(tmp_path, "jan-again", "2026-01-06T10:00:00+00:00", terse)
    make_run(tmp_path, "feb", "2026-02-07T09:30:00+00:00", edited(terse))  # edited, version still 1
    old, new = prompt_hash(terse, FIELDS), prompt_hash(edited(terse), FIELDS)
    found = versions(tmp_path / "store", "terse-json")
    assert [v.hash for v in found] == [old, new]
    assert [len(v.runs) for v in found] == [2, 1] and [v.rows for v in found] == [4, 2]
    assert f"{found[0].first:%m-%d}" == "01-05" and f"{found[0].last:%m-%d}" == "01-06"
    assert found[1].rendered == rendered_text(edited(terse), FIELDS)

    result = CliRunner().invoke(prompts_group, ["log", "terse-json", "--store", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "prompt terse-json: 2 version(s) that produced results, oldest first"
    assert lines[1].startswith(f"  {old}  version 1  first 2026-01-05 10:00  last 2026-01-06 10:00 UTC  4 rows")
    assert "jan-20260105T100000-" in lines[2] and "jan-again-20260106T100000-" in lines[2]
    assert lines[3].startswith(f"  {new}  version 1  first 2026-02-07 09:30")
    assert f"--- terse-json {old} (version 1)" in lines and f"+++ terse-json {new} (version 1)" in lines
    removed = [x for x in lines if x.startswith("-You extract")]
    added = [x for x in lines if x.startswith("+You extract")]
    assert len(removed) == len(added) == 1 and added[0].endswith(SENTENCE)
    assert f"prompt terse-json version 1 has 2 texts: {old}" in result.stderr
    assert "bump `version`" in result.stderr

    backwards = CliRunner().invoke(prompts_group, ["log", "terse-json", "--store", str(tmp_path / "store"),
                                                   "--diff", new[:6], old[:6]])
    assert backwards.exit_code == 0 and any(x.startswith("-You extract") and x.endswith(SENTENCE)
                                            for x in backwards.stdout.splitlines())
    unknown = CliRunner().invoke(prompts_group, ["log", "terse-json", "--store", str(tmp_path / "store"),
                                                 "--diff", "ffff", old])
    assert unknown.exit_code == 2 and "matches 0 versions" in unknown.output


def test_a_bumped_version_is_no_warning(tmp_path):
    terse = load_prompt("terse-json")
    make_run(tmp_path, "jan", "2026-01-05T10:00:00+00:00", terse)
    make_run(tmp_path, "feb", "2026-02-07T09:30:00+00:00", dataclasses.replace(edited(terse), version=2))
    result = CliRunner().invoke(prompts_group, ["log", "terse-json", "--store", str(tmp_path / "store")])
    assert result.exit_code == 0 and "version 2" in result.stdout and not result.stderr
    # the same text for other fields is another identity, but not a text changed under one version number
    make_run(tmp_path, "mar", "2026-03-01T09:00:00+00:00", terse, fields={"total": FieldSpec(type="amount")})
    again = CliRunner().invoke(prompts_group, ["log", "terse-json", "--store", str(tmp_path / "store")])
    assert again.stdout.count("  version 1  ") == 2 and not again.stderr


def test_list_and_run_start_warn_when_a_file_changed_without_a_version_bump(tmp_path):
    folder = tmp_path / "prompts"
    shutil.copytree(default_prompts_dir(), folder)
    store = tmp_path / "store"
    make_run(tmp_path, "jan", "2026-01-05T10:00:00+00:00", load_prompt("terse-json", folder))
    quiet = CliRunner().invoke(prompts_group, ["list", "--dir", str(folder), "--store", str(store)])
    assert quiet.exit_code == 0 and not quiet.stderr
    path = folder / "terse-json.yaml"
    path.write_text(path.read_text().replace("nothing else.", "nothing else. " + SENTENCE))
    now = load_prompt("terse-json", folder)
    result = CliRunner().invoke(prompts_group, ["list", "--dir", str(folder), "--store", str(store)])
    assert result.exit_code == 0
    assert result.stderr.startswith("warning: prompt terse-json version 1 has 2 texts: "
                                    f"{prompt_hash(load_prompt('terse-json'), FIELDS)} (jan-20260105T100000-")
    assert f"{prompt_hash(now, FIELDS)} (its file now)" in result.stderr
    # what a run start checks: its own prompts and fields
    assert len(check_versions(store, [now], FIELDS)) == 1
    assert check_versions(store, [now], {"total": FieldSpec(type="amount")}) == []  # never recorded for these
    assert check_versions(store, [load_prompt("described-json", folder)], FIELDS) == []
    assert check_versions(tmp_path / "no-store", [now], FIELDS) == []
    path.write_text(path.read_text().replace("version: 1", "version: 2"))
    bumped = CliRunner().invoke(prompts_group, ["list", "--dir", str(folder), "--store", str(store)])
    assert bumped.exit_code == 0 and not bumped.stderr


def test_without_a_saved_copy_the_text_is_recorded_only_if_the_file_still_renders_the_rows_hash(tmp_path):
    folder = tmp_path / "prompts"
    shutil.copytree(default_prompts_dir(), folder)
    terse = load_prompt("terse-json", folder)
    make_run(tmp_path, "jan", "2026-01-05T10:00:00+00:00", terse, saved=False,
             experiment_extra={"prompts_dir": str(folder)})
    make_run(tmp_path, "feb", "2026-02-07T09:30:00+00:00", edited(terse), saved=False,
             experiment_extra={"prompts_dir": str(folder)})
    old, new = versions(tmp_path / "store", "terse-json")
    assert old.rendered == rendered_text(terse, FIELDS)
    assert new.rendered is None  # the file never held the edited text: its hash is recorded, its text is unknown
    result = CliRunner().invoke(prompts_group, ["log", "terse-json", "--store", str(tmp_path / "store")])
    assert result.exit_code == 0 and f"no diff: the text of {new.hash} was not recorded" in result.stdout


def test_a_generated_variants_text_is_recorded_from_the_experiments_prompt_set(tmp_path):
    from invoicelab.prompt_sets import expand

    extra = {"prompt_set": {"base": "invoice-axes", "axes": {"examples": ["0", "1"]}}}
    exp = parse_experiment({"name": "set", "kind": "prompt", "dataset": {"source": "synthetic", "n": 2},
                            "fields": {f: s.model_dump(mode="json") for f, s in FIELDS.items()},
                            "variants": [{"name": "echo", "backend": "fake"}], **extra})
    variant = expand(exp.prompt_set, exp.prompts_path(), exp.seed)[-1]
    make_run(tmp_path, "set", "2026-01-05T10:00:00+00:00", variant, saved=False, experiment_extra=extra)
    [found] = versions(tmp_path / "store", variant.id)
    assert found.hash == prompt_hash(variant, FIELDS) and found.rendered == rendered_text(variant, FIELDS)


def test_rows_of_two_texts_under_one_prompt_id_are_reported():
    frame = pd.DataFrame({"variant": ["v", "v", "v", "w"], "prompt": ["p", "p", "p", "p"],
                          "prompt_hash": ["aaa", "aaa", "bbb", "aaa"]})
    assert mixed_hashes(frame) == [("variant v prompt p holds rows of 2 prompt texts (aaa, bbb): "
                                    "rerun to supersede the old rows")]
    assert mixed_hashes(frame[frame.prompt_hash == "aaa"]) == []


@pytest.mark.ray
def test_an_edited_prompt_supersedes_its_old_rows_on_the_next_run(ray_cluster, tmp_path):
    from invoicelab.orchestrator.pipeline import run_experiment

    folder = tmp_path / "prompts"
    shutil.copytree(default_prompts_dir(), folder)
    config = {"name": "edited", "kind": "prompt", "output_dir": str(tmp_path / "{name}"),
              "dataset": {"source": "synthetic", "n": 4}, "fields": {"invoice_number": "id", "total": "amount"},
              "prompts": ["terse-json", "described-json"], "prompts_dir": str(folder),
              "variants": [{"name": "echo", "backend": "fake"}]}
    first = run_experiment(parse_experiment(config))
    before = pd.read_parquet(first.results)
    old = set(before.loc[before.prompt == "terse-json", "prompt_hash"])
    path = folder / "terse-json.yaml"
    path.write_text(path.read_text().replace("nothing else.", "nothing else. " + SENTENCE))  # version not bumped
    second = run_experiment(parse_experiment(config))
    after = pd.read_parquet(second.results)
    assert second.summary["superseded_rows"] == 4 and second.summary["computed_rows"] == 4
    assert len(after) == 8 and mixed_hashes(after) == []
    new = set(after.loc[after.prompt == "terse-json", "prompt_hash"])
    assert len(old) == len(new) == 1 and old != new
    assert new == {prompt_hash(load_prompt("terse-json", folder), parse_experiment(config).fields)}
    assert set(after.loc[after.prompt == "described-json", "prompt_hash"]) == set(
        before.loc[before.prompt == "described-json", "prompt_hash"])  # untouched prompt: its rows kept
    superseded = pd.read_parquet(tmp_path / "edited" / "superseded")
    assert set(superseded["prompt_hash"]) == old and len(superseded) == 4
