# Two commands on a fresh machine: `make demo` (install + offline demo) and `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/curate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/curate

install: $(BIN)/curate

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/curate demo --out demo_data
	rm -rf builds/demo
	HF_HUB_OFFLINE=1 $(BIN)/curate build --mix mixes/demo.yaml --out builds/demo

test: install
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

.PHONY: install demo test
