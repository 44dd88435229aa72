# Two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# oneDNN v3.2 headers + runtime (GNU OpenMP build, like torch's): the extension's oneDNN path
ONEDNN := onednn-devel-cpu-gomp==2023.2.0 onednn-cpu-gomp==2023.2.0

.PHONY: demo test test-all lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml setup.py $(wildcard rnnlab/kernels/csrc/*)
	$(PY) -m pip install --quiet torch==2.13.0 "setuptools>=64" wheel ninja $(ONEDNN)
	$(PY) -m pip install --quiet --no-build-isolation -e ".[dev,apps]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m rnnlab demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
