# Two commands on a fresh machine: `make demo` (install, offline demo build, then the workbench on it) and
# `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/curate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# A venv without torch gets 2.13.0: PyPI's CUDA build on a GPU machine, the CPU wheel cached on CI's image.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	# `distributed` (Ray) only for its tests: the default engine never imports it.
	$(BIN)/pip install --quiet -e '.[dev,semantic,train,distributed]'
	touch $(BIN)/curate

install: $(BIN)/curate

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/curate demo --out demo_data
	rm -rf builds/demo
	HF_HUB_OFFLINE=1 $(BIN)/curate build --mix mixes/demo.yaml --out builds/demo
	# A few steps of the tiny offline model, so the workbench's Runs page has a run to show.
	rm -rf builds/runs/demo-tiny
	HF_HUB_OFFLINE=1 $(BIN)/trainer fit --shards builds/demo --model tiny --out builds/runs/demo-tiny \
		--global-batch 8 --micro-batch 4 --epochs 3 --lr 2e-3 --set eval_fraction=0.2
	HF_HUB_OFFLINE=1 $(BIN)/trainer eval --model builds/runs/demo-tiny \
		--bench vl_rewardbench=demo_data/native/vl_rewardbench/data.jsonl \
		--images-root vl_rewardbench=demo_data/native/vl_rewardbench/images
	$(BIN)/streamlit run app/Home.py --server.headless true --browser.gatherUsageStats false -- --data builds

test: install
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

# The tests marked slow (long learning runs, the real browser), which `make test` leaves out; CI runs both.
test-slow: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m slow

.PHONY: install demo test test-slow
