"""lus_core: all logic of the LUS scoring workflow, importable and testable without Snakemake."""

# registers the HDF5 compression filters of the frame stores (Blosc/LZ4) before any module of
# the package opens one, whichever module that is
import hdf5plugin  # noqa: F401

__version__ = "0.1.0"
