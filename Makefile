# SpatialImpute: every target installs what it needs, idempotently, on a fresh Debian machine.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
PIP := $(PYTHON) -m pip
PY_STAMP := $(VENV)/.spatialimpute-installed
PYTEST_ARGS ?= -q -n 2

.PHONY: help install demo test pytest pytest-fast clean

help:
	@echo "make install   Python virtualenv $(VENV) (torch==2.13.0 CPU first, numpy<2, the package editable with the test, parquet, esm, hf, spatialdata and distributed extras)"
	@echo "make demo      simulate a tissue, impute its missing genes, write demo_out/ (h5ad + PNG), print accuracy"
	@echo "make test      install the Python and R stacks, run the R tests, build the R vignette, run pytest"
	@echo "make pytest-fast  the Python tests without those marked slow (the full suite runs in make test and CI)"
	@echo "make r-check   R CMD check --no-manual of rpkg/ (slow; not part of make test)"

$(PYTHON):
	python3 -m venv $(VENV)

# torch is pinned and installed first: an unpinned torch would pull the CUDA wheels.
$(PY_STAMP): pyproject.toml | $(PYTHON)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q "numpy<2" "zarr<3" -e ".[test,parquet,esm,hf,spatialdata,distributed]"
	touch $@

install: $(PY_STAMP)

demo: install
	$(VENV)/bin/spatialimpute demo --out demo_out

pytest: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

pytest-fast: install
	$(PYTHON) -m pytest $(PYTEST_ARGS) -m "not slow"

test: r-deps r-test r-vignette pytest

clean:
	rm -rf demo_out .pytest_cache

include mk/r.mk
