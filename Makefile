# The commands a newcomer needs: `make run` serves the bundled demo models, `make test` passes the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# CPU build of torch, pinned: any looser spec makes pip fetch a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install run test bench bench-model bench-server bench-quick proto clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/perceiver-serve serve

test: $(STAMP)
	$(PY) -m pytest -q

# Both benchmarks; results (JSON, markdown, PNG) go to benchmarks/results/.
bench: bench-model bench-server

bench-model: $(STAMP)
	$(PY) -m benchmarks.run

# Load test of the running server: batching on vs off vs plain transformers + FastAPI (~15 min on 2 cores).
bench-server: $(STAMP)
	$(PY) -m benchmarks.server_bench

bench-quick: $(STAMP)
	$(PY) -m benchmarks.run --quick --out benchmarks/results/tmp/quick
	$(PY) -m benchmarks.server_bench --quick --out benchmarks/results/tmp/quick

# Regenerate server/perceiver_serve/pb/ from proto/ (tests/grpc checks the committed code is current).
proto: $(STAMP)
	$(PY) proto/generate.py

clean:
	rm -rf $(VENV) .pytest_cache
