# The commands a newcomer needs: `make run` serves the bundled demo models, `make test` passes the tests.
# Both install the exact versions of requirements/*.txt (see requirements/README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Which torch build: cpu (the CPU-only wheel, default) or cuda (PyPI's CUDA 13.0 build).
# A .venv holds one of them: `make clean` before switching.
TORCH ?= cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
UV_VERSION := 0.13.9

ifeq ($(filter $(TORCH),cpu cuda),)
$(error TORCH must be cpu or cuda, not '$(TORCH)')
endif

# The CPU wheel (torch==2.13.0+cpu) lives on the CPU index, or in pip's find-links where a
# machine keeps wheels on disk (PIP_FIND_LINKS). It is installed alone first: with that index in the
# command, pip would look every other package up there too.
TORCH_FIRST_cpu = $(PIP) install --quiet --require-hashes --no-deps -r requirements/torch-cpu.txt \
	$(if $(PIP_FIND_LINKS),,--extra-index-url $(TORCH_CPU_INDEX))
TORCH_FIRST_cuda = true

define install_lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(TORCH_FIRST_$(TORCH))
	$(PIP) install --quiet --require-hashes -r $(1)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $@
endef

SERVE_STAMP := $(VENV)/.serve-$(TORCH)
DEV_STAMP := $(VENV)/.dev-$(TORCH)

.PHONY: install install-serve run test mutants demo-models bench bench-model bench-server bench-quick proto lock lock-upgrade clean

$(SERVE_STAMP): requirements/serve-$(TORCH).txt requirements/torch-cpu.txt pyproject.toml
	$(call install_lock,requirements/serve-$(TORCH).txt)

$(DEV_STAMP): requirements/dev-$(TORCH).txt requirements/torch-cpu.txt pyproject.toml
	$(call install_lock,requirements/dev-$(TORCH).txt)
	touch $(SERVE_STAMP)

install-serve: $(SERVE_STAMP)

install: $(DEV_STAMP)

run: $(SERVE_STAMP)
	$(VENV)/bin/perceiver-serve serve

test: $(DEV_STAMP)
	$(PY) -m pytest -q

# The curated mutation suite (tests/mutants): each planted bug must fail its tests (~10 min on 2 cores).
mutants: $(DEV_STAMP)
	$(PY) -m tests.mutants

# Train the shipped demo models in models/ on data shipped in wheels, one after another (minutes each).
demo-models: $(DEV_STAMP)
	$(PY) scripts/train_demo_models.py

# Both benchmarks; results (JSON, markdown, PNG) go to benchmarks/results/.
bench: bench-model bench-server

bench-model: $(DEV_STAMP)
	$(PY) -m benchmarks.run

# Load test of the running server: batching on vs off vs plain transformers + FastAPI (~15 min on 2 cores).
bench-server: $(DEV_STAMP)
	$(PY) -m benchmarks.server_bench

bench-quick: $(DEV_STAMP)
	$(PY) -m benchmarks.run --quick --out benchmarks/results/tmp/quick
	$(PY) -m benchmarks.server_bench --quick --out benchmarks/results/tmp/quick

# Regenerate server/perceiver_serve/pb/ from proto/ (tests/grpc checks the committed code is current).
proto: $(DEV_STAMP)
	$(PY) proto/generate.py

# --- the lock ------------------------------------------------------------------------------
# `make lock` resolves pyproject.toml again, keeping every pinned version that still fits;
# `make lock-upgrade` moves everything to the newest versions the ranges allow.
UV := $(VENV)/bin/uv
LOCK := $(UV) pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock"
# Where uv finds the CPU wheel: pip's find-links where the machine has one, else the CPU index.
TORCH_CPU_SOURCE = $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),--extra-index-url $(TORCH_CPU_INDEX))

$(UV):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "uv==$(UV_VERSION)"

lock: $(UV)
	$(MAKE) --no-print-directory _lock UPGRADE=

lock-upgrade: $(UV)
	$(MAKE) --no-print-directory _lock UPGRADE=--upgrade

_lock:
	$(LOCK) $(UPGRADE) $(TORCH_CPU_SOURCE) --all-extras pyproject.toml requirements/build.in \
		-c requirements/torch-cpu.in -o requirements/dev-cpu.txt
	(echo "# The torch stanza of dev-cpu.txt (make lock): installed alone, first."; \
	 awk '/^torch==/ {keep = 1; print; next} /^[^ ]/ {keep = 0} keep' requirements/dev-cpu.txt) > requirements/torch-cpu.txt
	$(LOCK) $(UPGRADE) $(TORCH_CPU_SOURCE) pyproject.toml requirements/build.in \
		-c requirements/dev-cpu.txt -o requirements/serve-cpu.txt
	# The CUDA locks keep the CPU locks' versions of everything but torch.
	awk '/^torch==/ {skip = 1; next} /^[^ ]/ {skip = 0} !skip' requirements/dev-cpu.txt > $(VENV)/pins-but-torch.txt
	$(LOCK) $(UPGRADE) --all-extras pyproject.toml requirements/build.in \
		-c $(VENV)/pins-but-torch.txt -c requirements/torch-cuda.in -o requirements/dev-cuda.txt
	sed -i 's|-c $(VENV)/pins-but-torch.txt|-c requirements/dev-cpu.txt|' requirements/dev-cuda.txt
	$(LOCK) $(UPGRADE) pyproject.toml requirements/build.in \
		-c requirements/dev-cuda.txt -o requirements/serve-cuda.txt

clean:
	rm -rf $(VENV) .pytest_cache
