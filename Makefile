# `make demo` and `make test` each work alone from a fresh clone: they create .venv,
# install the pinned dependencies (torch first), and apt-install tesseract when root.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c requirements/constraints.txt
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TQDM_DISABLE := 1

.PHONY: demo test lint install system tiny-model bench clean

demo: install system
	$(BIN)/capflow demo

test: install system
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install system
	$(BIN)/python bench/engine.py

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch torchvision
	$(PIP) -e '.[dev]'
	touch $(STAMP)

# Tesseract powers the OCR tool agent (without it the engine warns and runs without OCR);
# Chromium renders the HTML quality report in the report test; PostgreSQL backs the Prefect
# server of the multi-process cluster test.
APT_PACKAGES := tesseract:tesseract-ocr chromium:chromium pg_ctlcluster:postgresql
system:
	@missing=""; for pair in $(APT_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing (OCR grounding / report browser test)"; \
	  else echo "warning: missing$$missing; run 'sudo apt-get install$$missing'"; fi; \
	fi

clean:
	rm -rf $(VENV) .capflow .pytest_cache .ruff_cache
