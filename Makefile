# Each target installs into its own virtualenv under .venv, so a fresh clone
# needs only Python 3.11 and these two commands: `make run`, `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint fuzz bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/smimegw run $(if $(CONFIG),--config $(CONFIG),)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy smimegw services schemas

# Coverage-guided fuzzing of the parsers (atheris); not part of `make test`.
fuzz: $(STAMP)
	$(BIN)/pip install --quiet -e '.[fuzz]'
	$(BIN)/python -m fuzz.run --runs 200000

# Throughput, latency and memory against the baselines; not part of `make test`.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks

# 10,000 messages with random kills; reports lost, duplicated, time to recover.
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var
