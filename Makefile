# `make test` and `make demo` work on a fresh machine with only Python 3.11 and pip:
# they create .venv when missing and install the project into it once (a stamp file
# remembers the install; editing setup.cfg or pyproject.toml triggers a reinstall).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgedepth-installed

.PHONY: test test-fast demo bench lint format clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP) lint  ## ruff + the whole suite, slow end-to-end tests included, on every core
	$(BIN)/python -m pytest -m "slow or not slow" -q -n auto --dist loadgroup --durations=15

test-fast: $(STAMP)  ## the fast tests only
	$(BIN)/python -m pytest -q -n auto

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: $(STAMP)  ## the whole pipeline on the embedded Motorcycle scene; opens nothing, writes demo_out/report.html
	$(BIN)/edgedepth demo --out demo_out

bench: $(STAMP)  ## student speed table (CPU unless --device cuda)
	$(BIN)/python benchmarks/student_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
