#!/usr/bin/env bash
# Runs inside the new conda environment after Snakemake created it: install lus_core itself.
# Snakemake keeps its copy of this script in .snakemake/conda/, two levels below the repository;
# set LUS_REPO when the conda prefix lives elsewhere.
set -euo pipefail
repo="${LUS_REPO:-$(cd "$(dirname "$0")/../.." && pwd)}"
pip install --no-deps -e "$repo"
