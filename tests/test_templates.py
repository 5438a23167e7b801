"""Hardware templates (configs/templates/) and `invoicelab init --template NAME`."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from invoicelab.cli import main
from invoicelab.config import Experiment, load_experiment
from invoicelab.templates_hw import available, templates_dir

EXPECTED = {"cpu-2core", "gpu-24gb", "gpu-80gb", "gpu-8x80gb"}


def test_the_four_hardware_templates_ship():
    assert set(available()) == EXPECTED


@pytest.mark.parametrize("path", sorted(templates_dir().glob("*.yaml")), ids=lambda p: p.stem)
def test_every_template_validates_and_states_what_it_was_derived_from(path):
    exp = load_experiment(path)
    assert isinstance(exp, Experiment) and exp.variants
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header).lower()
    assert "hardware template:" in text and "assumption" in text and "measured" in text


def test_gpu_templates_fill_their_gpus_and_the_cpu_one_uses_the_measured_batch():
    def gpus(name):
        exp = load_experiment(templates_dir() / f"{name}.yaml")
        return sum(v.resources.num_gpus * v.resources.actors for v in exp.variants)

    assert gpus("gpu-24gb") == gpus("gpu-80gb") == 1 and gpus("gpu-8x80gb") == 8
    big = load_experiment(templates_dir() / "gpu-8x80gb.yaml").variants[0]
    assert big.tensor_parallel_size == 4 and big.resources.num_gpus == 4
    cpu = load_experiment(templates_dir() / "cpu-2core.yaml")
    assert cpu.variants[0].batch_size == "auto" and cpu.variants[0].resources.num_gpus == 0
    text = (templates_dir() / "cpu-2core.yaml").read_text()
    assert "0.384 at 16" in text and "the tuner chose 32" in text  # the and the tuner's measurements


def test_init_writes_a_config_that_validates_with_name_and_dataset_replaced(tmp_path):
    data = tmp_path / "invoices"
    data.mkdir()
    out = tmp_path / "exps" / "mine.yaml"
    result = CliRunner().invoke(main, ["init", "--template", "gpu-80gb", "--out", str(out), "--dataset", str(data),
                                       "--name", "my-invoices"])
    assert result.exit_code == 0, result.output
    exp = load_experiment(out)
    assert exp.name == "my-invoices" and exp.dataset.source == "folder"
    assert exp.resolve_uri(exp.dataset.path) == str(data)
    assert "No GPU was lent" in out.read_text()  # the template's assumptions travel with the file
    assert yaml.safe_load(out.read_text())["variants"][0]["model"] == "Qwen/Qwen2.5-14B-Instruct"


def test_init_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "e.yaml"
    out.write_text("keep me")
    refused = CliRunner().invoke(main, ["init", "--template", "cpu-2core", "--out", str(out)])
    assert refused.exit_code == 2 and "--force" in refused.output and out.read_text() == "keep me"
    forced = CliRunner().invoke(main, ["init", "--template", "cpu-2core", "--out", str(out), "--force"])
    assert forced.exit_code == 0 and load_experiment(out).name == "cpu-2core"


def test_unknown_template_lists_what_exists(tmp_path):
    result = CliRunner().invoke(main, ["init", "--template", "tpu-pod", "--out", str(tmp_path / "e.yaml")])
    assert result.exit_code == 2
    assert "unknown template 'tpu-pod'; available: cpu-2core, gpu-24gb, gpu-80gb, gpu-8x80gb" in result.output
    assert not (tmp_path / "e.yaml").exists()
    listing = CliRunner().invoke(main, ["init"])
    assert listing.exit_code == 0 and all(name in listing.output for name in EXPECTED)


@pytest.mark.ray
def test_plan_accepts_the_cpu_template_written_by_init(ray_cluster, tmp_path):
    out = tmp_path / "cpu.yaml"
    assert CliRunner().invoke(main, ["init", "--template", "cpu-2core", "--out", str(out)]).exit_code == 0
    plan = CliRunner().invoke(main, ["plan", str(out), "--set", f"output_dir={tmp_path}/run"])
    assert plan.exit_code == 0, plan.output
    assert "smollm2-fp32" in plan.output and "16 documents" in plan.output
