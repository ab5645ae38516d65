# svdflow: `make demo` and `make test` do all the set-up they need (the venv lives in .venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MANIFEST ?= manifests/smoke.yaml
# With an NVIDIA driver, pip's default torch wheel is a CUDA build; without one, pin the CPU build
# (on this project's CI machines torch 2.13.0 is a CPU wheel on local disk). Override with TORCH_SPEC=...
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.4' || echo 'torch==2.13.0')
PIP := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: install demo test test-fast validate plan schemas lint run bench fmt clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH_SPEC)"
	$(PIP) -e ".[dev,ray]"
	touch $(STAMP)

install:
	rm -rf $(VENV)
	$(MAKE) $(STAMP)

# builtin:toy (trained weights shipped with svdflow): the contact sheet shows the sample images moving.
demo: $(STAMP)
	$(PY) -m svdflow run manifests/demo.yaml --report
	@echo "open the contact sheet: file://$(CURDIR)/manifests/renders/demo/index.html"

# Two workers, one test module each at a time (a module's Ray cluster or tmpfs stays in its worker):
# most slow tests wait on subprocesses starting, so two run in about the time of one. Modules go out
# in collection order, longest first (tests/conftest.py says why), not xdist's most-tests-first.
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: $(STAMP)
	$(PY) -m pytest -q $(XDIST)

# The inner loop: everything but the tests marked slow (real launchers, kill -9 crash tests).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(XDIST)

validate: $(STAMP)
	$(PY) -m svdflow validate manifests/*.yaml

plan: $(STAMP)
	$(PY) -m svdflow plan $(MANIFEST)

run: $(STAMP)
	$(PY) -m svdflow run $(MANIFEST)

schemas: $(STAMP)
	$(PY) -m svdflow schema --write schemas

lint: $(STAMP)
	$(PY) -m ruff check svdflow tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_manifest.py

clean:
	rm -rf manifests/renders .pytest_cache
