"""lus_core: all logic of the LUS scoring workflow, importable and testable without Snakemake."""

__version__ = "0.1.0"
