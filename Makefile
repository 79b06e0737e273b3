# The two commands of the README. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export SCATTERBRAINED_DISCOVERY ?= loopback

.PHONY: demo test lint install clean bench

$(STAMP): pyproject.toml constraints-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-dev.txt -e '.[torch,dev,tensorboard,mlflow,dashboard,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/scatterbrained demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/transfer.py
	$(BIN)/python benchmarks/convergence.py
	$(BIN)/python benchmarks/scale.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
