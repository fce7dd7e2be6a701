# Two commands on a fresh clone: `make run` sets up and starts the bot, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test test-sqlite lint setup clean image-test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/perpwatch run

demo: $(STAMP)
	$(BIN)/perpwatch demo

# Both engines: tests/pgserver.py starts a throwaway PostgreSQL for the run (or says in one line why not).
test: $(STAMP)
	$(BIN)/python -m tests.pgserver -- $(BIN)/pytest -q -n 2

# SQLite alone, no server.
test-sqlite: $(STAMP)
	$(BIN)/pytest -q -n 2

# The container image built and run with no network (tests/test_image.py): as root, with Debian's docker.io
# and debootstrap (installed if missing); elsewhere it says why in one line and skips.
image-test: $(STAMP)
	PERPWATCH_IMAGE_TEST=1 $(BIN)/pytest -q -rs -p no:cacheprovider tests/test_image.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
