"""The transformers-vlm backend on tiny random vision-language models of three families, built locally.

LLaVA, Qwen2.5-VL and Idefics3 (SmolVLM's architecture) models are written to a temporary folder
once per session (``tiny_vlm``) and go through the real ``AutoProcessor`` /
``AutoModelForImageTextToText`` loading, the processors' chat templates and image code, and
``generate``. Their answers are random; what is checked is what a user of the backend would see:
batches answer like single documents, every page asked for reaches the model, the pixel limit
changes what the model is given, broken inputs are error rows, and ``info()`` says what was loaded.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict

import pyarrow as pa
import pytest
from PIL import Image, ImageDraw

from invoicelab.backends.base import DocInput
from invoicelab.backends.vlm import VlmBackend, with_images
from invoicelab.config import FieldSpec, parse_experiment
from invoicelab.prompts import load_prompt

FIELDS = {"invoice_number": FieldSpec(type="id"), "total": FieldSpec(type="amount")}
EXPECTED_CLASSES = {  # family -> (model class, processor class)
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "idefics3": ("Idefics3ForConditionalGeneration", "Idefics3Processor"),
}


def png(width: int, height: int, text: str) -> bytes:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((8, 8), text, fill="black")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def variant(model: str, **settings) -> dict:
    return {"name": "vlm", "backend": "transformers-vlm", "model": model,
            "generation": {"max_new_tokens": settings.pop("max_new_tokens", 6)}, **settings}


def experiment(model: str, **settings):
    return parse_experiment({"name": "t", "dataset": {"source": "synthetic", "n": 1, "pdf_dpi": 36},
                             "fields": {"invoice_number": "id", "total": "amount"},
                             "variants": [variant(model, **settings)]})


def backend(model: str, **settings) -> VlmBackend:
    return VlmBackend(experiment(model, **settings).variants[0], FIELDS, num_threads=2, seed=0)


@pytest.fixture(scope="module")
def prompt():
    return load_prompt("terse-json")


@pytest.fixture(scope="module")
def docs() -> list[DocInput]:
    """Three documents of different page sizes and page counts (so the batch needs padding)."""
    return [DocInput("one", "", "one.png", (png(200, 150, "INV-1 total 10.00"),)),
            DocInput("two", "", "two.pdf", (png(260, 190, "INV-2"), png(180, 240, "total 99.50"))),
            DocInput("three", "", "three.png", (png(150, 220, "INV-3"),))]


# ---------------------------------------------------------------- without a model

def test_images_open_the_last_user_turn_only():
    messages, _ = load_prompt("fewshot-json").render(FIELDS, text="")
    out = with_images(messages, 2)
    users = [m for m in out if m["role"] == "user"]
    assert len(users) == 2 and all(p["type"] == "text" for p in users[0]["content"])
    assert [p["type"] for p in users[-1]["content"]] == ["image", "image", "text"]
    assert all(isinstance(m["content"], list) for m in out)


# ---------------------------------------------------------------- tiny random models

@pytest.fixture(scope="session")
def tiny_vlms(tmp_path_factory):
    """family -> folder of its tiny random model (built once per session, about a second each)."""
    from tiny_vlm import build_all

    return build_all(tmp_path_factory.mktemp("tiny-vlm"))


@pytest.mark.model
@pytest.mark.parametrize("family", list(EXPECTED_CLASSES))
def test_each_family_answers_a_batch_exactly_as_one_by_one(tiny_vlms, family, docs, prompt):
    vlm = backend(str(tiny_vlms[family]))
    batched = vlm.extract(docs, prompt)
    single = [vlm.extract([doc], prompt)[0] for doc in docs]
    assert [(r.raw_output, r.tokens_in, r.tokens_out) for r in batched] == \
           [(r.raw_output, r.tokens_in, r.tokens_out) for r in single]
    assert all(r.raw_output.startswith('{"invoice_number": "') and r.tokens_out > 0 for r in batched)
    # padding is not counted: the two-page document has more prompt tokens than the others
    assert batched[1].tokens_in > max(batched[0].tokens_in, batched[2].tokens_in)
    info = vlm.info()
    assert (info["model_class"], info["processor_class"]) == EXPECTED_CLASSES[family]
    assert info["image_processor_class"].endswith("Pil")  # no torchvision here: PIL image processing


def pdf_pages(tmp_path, sizes) -> str:
    """A PDF with one page per size (points at 72 dpi), each page a different picture."""
    pages = [Image.new("RGB", size, (255, 255 - 60 * i, 255)) for i, size in enumerate(sizes)]
    path = tmp_path / "two-pages.pdf"
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=72)
    return str(path)


def through_page_stage(pdf: str, model: str, pages: str) -> DocInput:
    """The document as the page stage gives it to this variant (its own page and image settings)."""
    from invoicelab.actors.pages import PageReader
    from invoicelab.orchestrator.plan import text_setting

    exp = experiment(model, image={"pages": pages})
    reader = PageReader(asdict(text_setting(exp, exp.variants[0])))
    row = reader(pa.table({"doc_id": ["d"], "path": [pdf], "error": pa.array([None], pa.string())})).to_pylist()[0]
    assert row["error"] is None, row["error"]
    return DocInput("d", row["text"], pdf, tuple(row["images_png"]))


@pytest.mark.model
@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_all_pages_reach_the_model_and_first_only_one(tiny_vlms, tmp_path, family, prompt):
    pdf = pdf_pages(tmp_path, [(400, 300), (400, 300)])  # rendered at 36 dpi: 200 x 150 pixels each
    model = str(tiny_vlms[family])
    first, every = through_page_stage(pdf, model, "first"), through_page_stage(pdf, model, "all")
    assert (len(first.images), len(every.images)) == (1, 2)
    vlm = backend(model)
    one, two = (vlm.extract([doc], prompt)[0] for doc in (first, every))
    assert one.error is None or one.error.startswith("unparseable")
    assert two.tokens_in > one.tokens_in
    if family == "llava":  # a 32 x 32 CLIP input in 8 x 8 patches: exactly 16 more image tokens for page 2
        assert two.tokens_in - one.tokens_in == 16


@pytest.mark.model
@pytest.mark.parametrize("family", ["qwen2_5_vl", "idefics3"])
def test_max_pixels_changes_how_many_image_tokens_the_model_reads(tiny_vlms, family, prompt):
    doc = DocInput("big", "", "big.png", (png(448, 336, "INV-9"),))
    model = str(tiny_vlms[family])
    default, capped = backend(model), backend(model, image={"max_pixels": 4096})
    full, small = default.extract([doc], prompt)[0], capped.extract([doc], prompt)[0]
    assert small.tokens_in < full.tokens_in
    used = capped.info()["image_resolution"]
    assert used["max_pixels"] == 4096 and default.info()["image_resolution"]["max_pixels"] is None
    if family == "qwen2_5_vl":
        assert used["size"]["longest_edge"] == 4096  # Qwen2-VL's own knob is a pixel count
    else:
        assert used["size"] == {"longest_edge": 64}  # sqrt(4096), in whole 32-px tiles


@pytest.mark.model
def test_max_pixels_on_a_fixed_resolution_model_is_a_load_error(tiny_vlms):
    with pytest.raises(ValueError, match="no per-image pixel limit"):
        backend(str(tiny_vlms["llava"]), image={"max_pixels": 4096})


@pytest.mark.model
def test_unreadable_or_missing_images_are_error_rows_and_the_rest_is_answered(tiny_vlms, docs, prompt):
    vlm = backend(str(tiny_vlms["idefics3"]))
    broken = [DocInput("garbage", "", "g.png", (b"\x89PNG not really",)), DocInput("none", "", "n.pdf", ()),
              DocInput("second-bad", "", "s.pdf", (docs[0].images[0], b""))]
    out = vlm.extract([docs[0], *broken], prompt)
    assert len(out) == 4 and out[0].tokens_in > 0 and out[0].raw_output
    assert out[1].error.startswith("page 1 image unreadable: UnidentifiedImageError")
    assert out[2].error.startswith("no page image")
    assert out[3].error.startswith("page 2 image unreadable")
    assert all(r.tokens_in == 0 and r.fields == {"invoice_number": None, "total": None} for r in out[1:])
    assert vlm.extract(broken, prompt)[0].error == out[1].error  # a batch with nothing to run is not a crash


@pytest.mark.model
def test_json_schema_makes_even_a_random_model_answer_json(tiny_vlms, docs, prompt):
    fields = {"currency": FieldSpec(type="currency")}  # a value of at most 4 letters: the answer must close
    spec = experiment(str(tiny_vlms["qwen2_5_vl"]), structured="json-schema", max_new_tokens=20).variants[0]
    vlm = VlmBackend(spec, fields, num_threads=2, seed=0)
    out = vlm.extract(docs[:2], prompt)
    for row in out:
        answer = json.loads(row.raw_output)
        assert list(answer) == ["currency"] and row.error is None and row.parse_error is None
    assert [r.raw_output for r in out] == [vlm.extract([d], prompt)[0].raw_output for d in docs[:2]]
    assert vlm.info()["structured"] == "json-schema" and vlm.info()["xgrammar_version"]


@pytest.mark.model
def test_free_answers_by_sampling_are_unprefixed_and_repeat_with_the_seed(tiny_vlms, docs, prompt):
    vlm = backend(str(tiny_vlms["llava"]), structured="none",
                  generation={"max_new_tokens": 8, "temperature": 1.0, "top_p": 0.9})
    first, again = vlm.extract(docs[:2], prompt), vlm.extract(docs[:2], prompt)
    assert [r.raw_output for r in first] == [r.raw_output for r in again]  # seeded per call
    assert not any(r.raw_output.startswith('{"invoice_number"') for r in first)  # no answer prefix
    greedy = backend(str(tiny_vlms["llava"]), structured="none", max_new_tokens=8).extract(docs[:2], prompt)
    assert [r.raw_output for r in greedy] != [r.raw_output for r in first]


@pytest.mark.model
def test_dynamic_int8_quantizes_the_vlm_except_the_layers_kept_float(tiny_vlms, docs, prompt):
    vlm = backend(str(tiny_vlms["llava"]), precision="int8-dynamic", keep_float=["lm_head"])
    info = vlm.info()
    assert info["float_linear_layers"] == ["lm_head"]  # the vision tower and projector are quantized too
    assert info["linear_layers"] == {"DynamicQuantizedLinear": 28, "Linear": 1}
    assert vlm.extract(docs[:1], prompt)[0].tokens_out > 0


@pytest.mark.model
def test_info_reports_what_was_loaded(tiny_vlms):
    from safetensors import safe_open

    folder = tiny_vlms["qwen2_5_vl"]
    info = backend(str(folder), precision="bf16", image={"pages": "all", "max_pixels": 50_000}).info()
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        names = weights.keys()  # a safe_open handle is not iterable itself
        stored = sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    assert info["param_dtypes"] == {"torch.bfloat16": stored}  # every weight of the file, all in bf16
    assert info["precision_loaded"] == "bf16" and info["device"] == "cpu" and info["load_seconds"] > 0
    assert "without its video processor" in info["processor_note"]  # said, not hidden
    assert info["image_resolution"]["size"]["longest_edge"] == 50_000 and info["image_pages"] == "all"
    assert info["transformers_version"] and info["torch_version"] and info["structured"] == "prefix"
    assert info["quantized_linear_layers"] == {} and info["linear_layers"]["Linear"] > 0


@pytest.mark.model
def test_a_processor_without_chat_template_is_refused(tiny_vlms, tmp_path):
    import shutil

    folder = tmp_path / "no-template"
    shutil.copytree(tiny_vlms["idefics3"], folder)
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match="no chat template"):
        backend(str(folder))
