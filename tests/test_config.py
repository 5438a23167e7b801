"""Experiment config validation, overrides and the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from invoicelab.config import ConfigError, Experiment, load_experiment, parse_experiment

REPO = Path(__file__).resolve().parents[1]

MINIMAL = {
    "name": "t",
    "dataset": {"source": "synthetic", "n": 4},
    "fields": {"total": "amount", "invoice_date": {"type": "date", "day_first": True}},
    "variants": [{"name": "fake", "backend": "fake"}],
}


def test_minimal_config_gets_documented_defaults():
    exp = parse_experiment(MINIMAL)
    assert exp.fields["total"].type.value == "amount"
    assert exp.fields["invoice_date"].day_first is True
    assert exp.variants[0].batch_size == 4 and exp.prompts == ["terse-json"]
    assert exp.out_path == Path("runs/t").resolve()  # outputs: relative to the working directory


def test_relative_input_paths_are_read_from_the_config_files_folder(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "e.yaml").write_text(yaml.safe_dump({**MINIMAL, "dataset": {"source": "folder", "path": "../data"}}))
    exp = load_experiment(folder / "e.yaml")
    assert exp.resolve_uri(exp.dataset.path) == str(tmp_path / "data")
    assert exp.resolve_uri("s3://bucket/prefix") == "s3://bucket/prefix"
    assert exp.out_path == Path("runs/t").resolve()


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(config):
    assert isinstance(load_experiment(config), Experiment)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"varaints": []}, "varaints: unknown key (typo?)"),
        ({"variants": [{"name": "a", "backend": "vlm"}]},
         "unknown backend 'vlm'; available: fake, rules, ocr-llm, transformers-vlm, vllm, openai-http"),
        ({"variants": [{"name": "a", "backend": "fake", "batch_size": -1}]}, "variants.0.batch_size"),
        ({"variants": [{"name": "a", "backend": "ocr-llm", "model": "m", "precision": "int3"}]},
         "variants.0.precision: unknown precision 'int3'"),
        ({"variants": [{"name": "a", "backend": "fake", "precision": "fp32"}]}, "variants.0.precision: unknown key (typo?)"),
        ({"variants": [{"name": "a", "backend": "fake", "options": {"eror_rate": 1}}]},
         "variants.0.options.eror_rate: unknown key"),
        ({"variants": [{"name": "a", "backend": "ocr-llm", "model": "m", "batch_size": "four"}]}, "variants.0.batch_size: "),
        ({"variants": [{"name": "a", "backend": "openai-http", "base_url": "http://x", "model": "m", "api_key_env": "sk-1"}]},
         "variants.0.api_key_env: api_key_env is the NAME of an environment variable"),
        ({"variants": [{"name": "a", "backend": "ocr-llm"}]}, "variants.0.model: Field required"),
        ({"fields": {"total": "money"}}, "fields.total.type"),
        ({"dataset": {"source": "folder"}}, "needs dataset.path"),
        ({"variants": [{"name": "a", "backend": "fake"}, {"name": "a", "backend": "rules"}]}, "repeated: a"),
    ],
)
def test_bad_configs_name_the_field_and_what_is_allowed(change, expected):
    with pytest.raises(ConfigError) as err:
        parse_experiment({**MINIMAL, **change})
    assert expected in str(err.value)


def test_overrides_are_validated_like_the_file():
    exp = parse_experiment(MINIMAL, ["variants.0.batch_size=8", "dataset.n=2", "prompts=[terse-json, described-json]"])
    assert exp.variants[0].batch_size == 8 and exp.dataset.n == 2 and exp.prompts == ["terse-json", "described-json"]
    with pytest.raises(ConfigError, match="variants.0.batch_size"):
        parse_experiment(MINIMAL, ["variants.0.batch_size=-3"])
    with pytest.raises(ConfigError, match="not an index"):
        parse_experiment(MINIMAL, ["variants.5.batch_size=2"])
    with pytest.raises(ConfigError, match="expected dotted.path=value"):
        parse_experiment(MINIMAL, ["variants.0.batch_size"])


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_experiment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(bad)


def test_json_schema_describes_every_field():
    schema = Experiment.model_json_schema()
    props = schema["properties"]
    assert props["variants"]["description"] and schema["additionalProperties"] is False
    for name, definition in schema["$defs"].items():
        for field, spec in definition.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field} has no description"
    json.dumps(schema)


def test_config_round_trips_through_yaml(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    loaded = load_experiment(path)
    assert loaded.base_dir == str(tmp_path)  # relative inputs are read from the config's folder
    assert loaded.model_dump() == parse_experiment({**MINIMAL, "base_dir": str(tmp_path)}).model_dump()
