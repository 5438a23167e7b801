"""Memory estimates before loading, the refusal of a variant that cannot fit, and ``precision: auto``."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from invoicelab.backends.placement import Limits, memory_problems, model_config
from invoicelab.backends.precision_choice import resolve_precisions
from invoicelab.config import load_experiment
from invoicelab.memory import GB, estimate, shape

# SmolLM2-135M's config.json (the bundled model), written out so that its sizes can be checked by hand.
SMOLLM2 = {"architectures": ["LlamaForCausalLM"], "hidden_size": 576, "intermediate_size": 1536,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
           "vocab_size": 49152, "tie_word_embeddings": True, "dtype": "float32"}
EMBED = 49152 * 576
LINEAR = 30 * (576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536)  # q, o; k, v; gate, up, down
NORMS = 61 * 576
ALIAS = "smollm2-135m-instruct"


def test_weights_follow_what_each_precision_stores():
    fp32 = estimate(SMOLLM2, "fp32", batch=1, prompt_tokens=10, new_tokens=1)
    assert fp32.weights == (EMBED + LINEAR + NORMS) * 4  # 134.5 M parameters, lm_head tied to the embedding
    assert estimate(SMOLLM2, "bf16", 1, 10, 1).weights == (EMBED + LINEAR + NORMS) * 2
    # torch dynamic int8 quantizes lm_head too, which unties it: the float embedding stays beside an int8 copy
    int8 = estimate(SMOLLM2, "int8-dynamic", 1, 10, 1)
    assert int8.weights == (EMBED + NORMS) * 4 + LINEAR + EMBED
    assert int8.checkpoint == fp32.weights  # the float32 load stays mapped beside the int8 weights
    assert fp32.checkpoint == fp32.load_transient == 0  # a float32 checkpoint loaded as float32 is used as it is
    bf16 = estimate(SMOLLM2, "bf16", 1, 10, 1)
    assert bf16.checkpoint == 0 and bf16.load_transient == fp32.weights  # converted once, then reused
    assert bf16.total == bf16.weights + bf16.overhead + max(bf16.load_transient, bf16.kv_cache + bf16.activations)
    kept = estimate(SMOLLM2, "int8-dynamic", 1, 10, 1, keep_float=("down_proj",))
    assert kept.weights - int8.weights == pytest.approx(30 * 576 * 1536 * 3)
    nf4, bnb8 = (estimate(SMOLLM2, p, 1, 10, 1).weights for p in ("bnb-nf4", "bnb-int8"))
    assert nf4 < bnb8 < int8.weights < fp32.weights  # bitsandbytes keeps lm_head tied and float


def test_kv_cache_and_activations_grow_with_batch_and_length():
    small = estimate(SMOLLM2, "fp32", batch=8, prompt_tokens=400, new_tokens=64)
    assert small.kv_cache == 2 * 30 * 3 * 64 * 8 * 464 * 4  # keys and values, every layer, every position
    assert estimate(SMOLLM2, "bf16", 8, 400, 64).kv_cache == small.kv_cache / 2
    big = estimate(SMOLLM2, "fp32", batch=16, prompt_tokens=800, new_tokens=64)
    assert big.kv_cache > 3.5 * small.kv_cache and big.activations > 2 * small.activations
    assert big.total - small.total == pytest.approx(big.kv_cache + big.activations
                                                    - small.kv_cache - small.activations)
    text = small.render()
    assert "KV cache" in text and f"{small.total / GB:.3f} GB" in text


def test_a_vision_language_config_counts_its_vision_tower_and_image_tokens():
    vlm = {"text_config": SMOLLM2, "vision_config": {"hidden_size": 768, "intermediate_size": 3072,
                                                     "num_hidden_layers": 12, "patch_size": 16, "image_size": 512}}
    assert shape(vlm).vision_tokens == 32 * 32
    with_image = estimate(vlm, "fp32", batch=2, prompt_tokens=300, new_tokens=64, images=1)
    text_only = estimate(SMOLLM2, "fp32", batch=2, prompt_tokens=300, new_tokens=64)
    assert with_image.vision > 12 * (4 * 768 ** 2 + 2 * 768 * 3072) * 4  # the tower's weights at least
    assert with_image.kv_cache > text_only.kv_cache  # image tokens sit in the cache too


def test_offload_counts_only_the_weights_kept_on_the_device():
    full = estimate(SMOLLM2, "fp32", 1, 100, 8)
    off = estimate(SMOLLM2, "fp32", 1, 100, 8, offload_gb=0.1)
    assert off.offloaded > 0.4 * GB and off.weights < 0.12 * GB and off.total < full.total


# ---------------------------------------------------------------- refusal and auto on the real config

@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs")
    return load_experiment("configs/quickstart.yaml", [f"output_dir={out}/run", f"store={out}/store"])


@pytest.mark.model
def test_a_variant_that_cannot_fit_is_refused_naming_what_would(quickstart):
    small = quickstart.model_copy(deep=True)
    small.variants[0].resources.memory_gb = 1.6  # fp32 at micro-batch 8, 1,300-token prompts: about 2 GB
    [message] = memory_problems(small, Limits(cpu_bytes=24 * GB, cpus=2))
    assert message.startswith("variant 'smollm2-fp32' (smollm2-135m-instruct, fp32, micro-batch 8")
    assert "may use 1.72 GB (resources.memory_gb 1.6)" in message
    assert "precision bf16 (1.12 GB)" in message and "batching.micro_batch 4" in message
    assert "offload: {device_gb:" in message
    assert memory_problems(quickstart, Limits(cpu_bytes=24 * GB, cpus=2)) == []
    # without memory_gb the machine's RAM is shared by the actors on a node: fewer actors is proposed
    many = quickstart.model_copy(deep=True)
    many.variants[0].resources.num_cpus, many.variants[0].resources.actors = 0.25, 8
    [crowded] = memory_problems(many, Limits(cpu_bytes=8 * GB, cpus=2))
    assert "shared by 8 actors per node" in crowded and "resources.actors" in crowded


@pytest.mark.ray
@pytest.mark.model
def test_cli_run_exits_non_zero_before_loading_a_variant_that_cannot_fit(ray_cluster, tmp_path):
    result = CliRunner().invoke(main_cli(), ["run", "configs/quickstart.yaml", "--set", f"output_dir={tmp_path}/out",
                                             "--set", f"store={tmp_path}/store",
                                             "--set", "variants.0.resources.memory_gb=0.5"])
    assert result.exit_code == 2, result.output
    assert "variant 'smollm2-fp32'" in result.output and "What would fit" in result.output
    assert not list((tmp_path / "out").glob("results/*.parquet"))  # nothing was computed


def main_cli():
    from invoicelab.cli import main

    return main


def _auto(exp, memory_gb: float):
    out = exp.model_copy(deep=True)
    v = out.variants[0]
    v.precision, v.resources.memory_gb = "auto", memory_gb
    return out


def _record(store, accuracies: dict[str, float]) -> None:
    """Metrics rows of earlier runs of the bundled model, as the history holds them."""
    from invoicelab.history import connect

    with connect(store) as con:
        for precision, acc in accuracies.items():
            con.execute("INSERT INTO metrics VALUES ('r1', 'v', 'ocr-llm', ?, ?, 'terse-json', 'all', ?, ?, "
                        "NULL, NULL, 48)", [ALIAS, precision, acc, acc])


@pytest.mark.model
def test_precision_auto_follows_the_order_where_nothing_was_measured(quickstart, caplog):
    limits = Limits(cpu_bytes=24 * GB, cpus=2)
    with caplog.at_level(logging.INFO, logger="invoicelab.backends.precision_choice"):
        roomy = resolve_precisions(_auto(quickstart, 4.0), limits)
    assert roomy.variants[0].precision == "fp32"
    assert "no measured accuracy" in caplog.text
    tight = resolve_precisions(_auto(quickstart, 1.5), limits)  # fp32 (about 2 GB) does not fit
    chosen = tight.variants[0].precision
    assert chosen == "bf16"
    config = model_config(ALIAS)
    assert estimate(config, chosen, 8, 1300, 64).total <= 1.5 * GB < estimate(config, "fp32", 8, 1300, 64).total


@pytest.mark.model
def test_precision_auto_takes_the_best_measured_precision_that_fits(quickstart, caplog):
    _record(quickstart.store_path, {"fp32": 0.48, "bf16": 0.50, "int8-weight-only": 0.52, "bnb-nf4": 0.12})
    limits = Limits(cpu_bytes=24 * GB, cpus=2)
    with caplog.at_level(logging.INFO, logger="invoicelab.backends.precision_choice"):
        exp = resolve_precisions(_auto(quickstart, 4.0), limits)
    assert exp.variants[0].precision == "int8-weight-only"
    assert "best measured accuracy" in caplog.text and "int8-weight-only 52.0%" in caplog.text
    # the best measured one does not fit any more: the next best measured that does
    squeezed = resolve_precisions(_auto(quickstart, 1.5), limits)
    assert squeezed.variants[0].precision == "bf16"
