# Two entry points for a fresh machine: `make run` (set up + run the workflow on the
# embedded synthetic data) and `make test` (set up + run the tests).
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= all

.PHONY: setup run test test-fast test-readme lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip wheel setuptools
	$(VENV)/bin/pip install -r requirements.txt
	$(VENV)/bin/pip install --no-deps -e .
	touch $@

run: setup
	$(VENV)/bin/snakemake --cores $(CORES) --rerun-incomplete

# two pytest-xdist workers, a test file each at a time: the end-to-end tests share one tiny run
# (tests/conftest.py) and the SLURM test's waits overlap the others
test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not default_run"

test-fast: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow and not slurm and not realdata and not default_run"

# the README's default-run block against a fresh default run (4 minutes; rerun after changing what it computes)
test-readme: setup
	$(PY) -m pytest -q -m default_run

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
