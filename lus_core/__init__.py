"""lus_core: all logic of the LUS scoring workflow, importable and testable without Snakemake."""

# first, before NumPy or torch load: the same kernels, hence the same numbers, on every x86-64 CPU
from lus_core.cpu_kernels import pin_cpu_kernels

pin_cpu_kernels()

# registers the HDF5 compression filters of the frame stores (Blosc/LZ4) before any module of
# the package opens one, whichever module that is
import hdf5plugin  # noqa: E402, F401

__version__ = "0.1.0"
