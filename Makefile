# Two commands on a fresh machine:  `make demo` (install + train the tutorial's VAE)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# MNIST's test split lies here on our machines; elsewhere pass DATA_DIR=... (or use fashion-mnist).
DATA_DIR ?= ../shared/datasets/mnist
DEMO_EPOCHS ?= 5

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# The tutorial's VAE exactly (preset seed) and its correctly scaled twin (seed-sum),
# trained on the 10,000 MNIST test images, then 10,000 samples exported to .npy.
demo: install
	$(BIN)/genlab datasets --data-dir $(DATA_DIR)
	$(BIN)/genlab train vae --preset seed --dataset mnist --data-dir $(DATA_DIR) --split test \
		--epochs $(DEMO_EPOCHS) --out runs/demo-seed --overwrite
	$(BIN)/genlab train vae --preset seed-sum --dataset mnist --data-dir $(DATA_DIR) --split test \
		--epochs $(DEMO_EPOCHS) --out runs/demo-seed-sum --overwrite
	$(BIN)/genlab sample runs/demo-seed-sum -n 10000 --out runs/demo-seed-sum/samples-10k.npy --overwrite
	@echo "outputs: runs/demo-seed/ and runs/demo-seed-sum/ (samples.png, manifold.png, latent.png, loss.png)"

test: install
	$(BIN)/python -m pytest -q

# ruff (lint + format check) and mypy over the package; .ci/run runs this before the tests.
lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
