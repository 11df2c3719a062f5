# Two entry points for a fresh machine: `make run` (set up + run the workflow on the
# embedded synthetic data) and `make test` (set up + run the tests).
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= all

.PHONY: setup run test test-fast lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip wheel setuptools
	$(VENV)/bin/pip install -r requirements.txt
	$(VENV)/bin/pip install --no-deps -e .
	touch $@

run: setup
	$(VENV)/bin/snakemake --cores $(CORES)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not slurm and not realdata"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/snakemake --lint

bench: setup
	for b in bench/*.py; do $(PY) $$b | tail -n 1; done

clean:
	rm -rf results/synthetic .snakemake

.PHONY: slurm-up slurm-down test-slurm run-slurm
slurm-up:
	bash .ci/slurm_up.sh
slurm-down:
	bash .ci/slurm_down.sh
test-slurm: setup
	LUS_SLURM=1 $(PY) -m pytest -q -m slurm
run-slurm: setup
	$(VENV)/bin/snakemake --workflow-profile profiles/slurm
