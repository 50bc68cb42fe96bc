# The README's two commands: `make demo` and `make test`. Both set up .venv first.
# `make check` lints and type-checks; `make test-debug` runs the quicker tests again in
# asyncio's debug mode. CI (.ci/run) runs check, test and test-debug.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-debug check install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# (setup.py and the .pyx sources too: the native modules are built at install)
$(STAMP): $(BIN)/python pyproject.toml setup.py $(wildcard shared/*.pyx server/*.pyx)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,fast]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tickline demo

test: $(STAMP)
	$(BIN)/python -m pytest

# asyncio's debug mode: slow callbacks are logged, never-awaited coroutines are traced to
# where they were made; the suite fails on either kind of lost error in every mode.
test-debug: $(STAMP)
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest -m "not slow" -q

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis .mypy_cache .ruff_cache
