"""configs/ocr_vs_vlm.yaml end to end on a local Ray cluster: OCR + LLM, a VLM and the rules baseline.

The config itself is run, with the VLM swapped for a tiny random Idefics3 model (SmolVLM's
architecture) built here, and short answers. The bundled SmolLM2 and the real OCR engine run as
they are. The VLM's answers are random; what is checked is that the three variants cover the same
documents once each, and that the VLM really read the page image (its prompt tokens are the
processor's count for that page, image tokens included).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from invoicelab.config import load_experiment
from invoicelab.orchestrator.pipeline import run_experiment

pytestmark = [pytest.mark.ray, pytest.mark.model]

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ocr_vs_vlm.yaml"
MAX_PIXELS = 128 * 128  # the tiny model's 32-px tiles: at most 4 x 4 of them plus the whole page


@pytest.fixture(scope="module")
def run(ray_cluster, tmp_path_factory):
    from tiny_vlm import build

    tiny = build("idefics3", tmp_path_factory.mktemp("tiny-vlm") / "idefics3")
    out = tmp_path_factory.mktemp("ocr-vs-vlm")
    exp = load_experiment(CONFIG, [f"output_dir={out}/{{name}}", f"variants.1.model={tiny}",
                                   f"variants.1.image.max_pixels={MAX_PIXELS}",
                                   "variants.0.generation.max_new_tokens=16", "variants.1.generation.max_new_tokens=8"])
    result = run_experiment(exp)
    return exp, pd.read_parquet(result.results)


def test_every_variant_has_one_row_per_document(run):
    exp, df = run
    assert set(df["variant"]) == {"ocr-smollm2", "vlm-smolvlm", "rules"}
    docs = set(df["doc_id"])
    assert len(docs) == exp.dataset.n
    for _, rows in df.groupby("variant"):
        assert len(rows) == exp.dataset.n and set(rows["doc_id"]) == docs
    assert df[df["variant"] == "rules"]["error"].isna().all()
    llm_errors = df[df["variant"] != "rules"]["error"].dropna()  # random or short answers may not parse
    assert llm_errors.str.startswith("unparseable model output").all(), llm_errors.tolist()


def test_the_vlm_read_each_page_image(run):
    exp, df = run
    vlm = df[df["variant"] == "vlm-smolvlm"]
    info = json.loads(vlm["backend_info"].iloc[0])
    assert info["backend"] == "transformers-vlm" and info["model_class"] == "Idefics3ForConditionalGeneration"
    assert info["image_resolution"]["size"] == {"longest_edge": 128}
    assert (vlm["tokens_out"] > 0).all() and vlm["raw_output"].str.startswith('{"invoice_number": "').all()
    processor, text_only = tiny_processor(exp)
    for _, row in vlm.iterrows():
        expected = prompt_tokens(exp, processor, row["file"])
        assert row["tokens_in"] == expected > text_only + 4  # the page's image tokens: tiles and the whole page


def tiny_processor(exp):
    """The tiny model's processor, and the prompt's length in tokens without any image."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(exp.variants[1].model)
    return processor, len(processor.tokenizer(chat(exp, processor, 0), add_special_tokens=False)["input_ids"])


def chat(exp, processor, n_images: int) -> str:
    from invoicelab.backends.vlm import with_images
    from invoicelab.prompts import load_prompt

    messages, prefix = load_prompt("terse-json").render(exp.fields, text="")
    return processor.apply_chat_template(with_images(messages, n_images), add_generation_prompt=True,
                                         tokenize=False) + prefix


def prompt_tokens(exp, processor, file: str) -> int:
    """Tokens the processor makes of the prompt and the document's first page, as the page stage scales it."""
    from invoicelab.data.pages import load_pages

    page = load_pages(Path(file), dpi=exp.dataset.pdf_dpi, max_pages=1)[0]
    page.thumbnail((exp.variants[1].image.max_side,) * 2)
    batch = processor(text=[chat(exp, processor, 1)], images=[[page]], size={"longest_edge": 128})
    return len(batch["input_ids"][0])
