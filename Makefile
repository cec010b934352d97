# Two commands do everything on a fresh machine with Python 3.10+: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.demo: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e ".[test,bench]"
	touch $@ $(VENV)/.demo

demo: $(VENV)/.demo
	$(BIN)/python -m transconv_jax demo

test: $(VENV)/.test
	$(BIN)/python -m pytest -n 2 -q --nbmake tests transconv_jax notebooks

bench: $(VENV)/.test
	$(BIN)/python benchmarks/bench.py

lint: $(VENV)/.test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV)
