# chat-worker: `make demo` runs a real roleplay chat on the embedded stack; `make test` runs the tests;
# `make bench` the benchmarks.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install demo dev worker test test-faults-full test-compose bench lint format clean

# llama-cpp-python compiles llama.cpp on first install (~5 min on 2 cores); pip caches the wheel after that.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing chat-worker with the embedded stack (first time: llama.cpp compiles for a few minutes)"
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install --progress-bar off -e '.[local,dev]'
	touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	$(PY) -m orchestrator demo

dev: $(INSTALLED)
	$(PY) -m orchestrator dev

worker: $(INSTALLED)
	$(PY) -m orchestrator worker

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

test: $(INSTALLED) lint
	$(PY) -m pytest

# The fault suite (marker faults: tests/faults and the engine outage) at the sizes of issue 12's probes: engine
# down 8.6 s / 40 s / 3 min with 10 jobs, 60 s Temporal outage, 12 jobs per restart,
# 10 × 400-token replies through a worker's SIGTERM, 200 jobs at once; about 10 minutes on 2 busy cores.
# `make test` runs it CI-sized (about 2 minutes on a quiet machine; tests/faults/scale.py has both sizes).
test-faults-full: $(INSTALLED)
	CHAT_WORKER_FAULTS=full $(PY) -m pytest -m faults tests -s

# The production stack (docker-compose.yml) up on this host, one chat job through it, down. Needs a Docker
# engine with Compose v2.20+, an NVIDIA GPU, and internet for the first weights pull (~15 GB, kept in the
# hf-cache volume). Without them it stops at once, before installing anything, saying which is missing.
test-compose:
	$(PYTHON) -m tests.deploy.preflight
	$(MAKE) install
	$(PY) -m pytest -m compose tests/deploy

# Benchmarks on a throwaway stack with the real worker: a table on stdout, the run as JSON in bench/results/
# (git-ignored), compared with the previous run. About 7 minutes on 2 quiet cores (10 at most); `make bench
# BENCH_ARGS=--quick` for a fast check (python -m bench --help for every flag). `make bench` adds the
# reply-quality section (50 fixed prompts on the real model, a few minutes more; BENCH_ARGS=--quality=0 leaves it out).
BENCH_ARGS ?=
bench: $(INSTALLED)
	$(PY) -m bench --quality 50 $(BENCH_ARGS)

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .state .pytest_cache .ruff_cache *.egg-info
