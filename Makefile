# `make test` and `make demo` work on a fresh machine with only Python 3.11 and pip:
# they create .venv when missing and install the project into it once (stamp files
# remember the install; editing setup.cfg or pyproject.toml triggers a reinstall). `make demo`
# installs only the package and its runtime dependencies (BASE); `make test` and the other
# targets add the dev extras (test tools and the edge runtimes) on top, with their own stamp.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
BASE   := $(VENV)/.edgedepth-base-installed
STAMP  := $(VENV)/.edgedepth-installed
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: test test-fast demo bench lint format clean

$(BASE): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing edgedepth and its runtime dependencies into $(VENV) (torch, ONNX Runtime, OpenCV," \
	      "dask, matplotlib...): about 6 GB on a fresh machine, torch most of it; a few minutes, silent"
	$(PIP) -e .
	@touch $(BASE)

$(STAMP): $(BASE)
	@echo "adding the dev extras to $(VENV) (pytest, ruff, Playwright, Keras, OpenVINO, LiteRT," \
	      "ModelOpt): about 1.5 GB more; a few minutes, silent"
	$(PIP) -e '.[dev]'
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

demo: $(BASE)  ## the whole pipeline on the embedded Motorcycle scene; opens nothing, writes demo_out/report.html; a rerun reuses finished steps
	$(BIN)/edgedepth demo --out demo_out $(DEMO_ARGS)

bench: $(STAMP)  ## student speed table (CPU unless --device cuda)
	$(BIN)/python benchmarks/student_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
