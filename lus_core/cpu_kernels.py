"""The same numbers on every x86-64 machine.

The numerical libraries choose their kernels by the processor they run on: oneDNN (PyTorch's
convolutions), ATen's vectorised code, MKL and OpenBLAS (NumPy, scikit-learn) take AVX-512 or AMX
paths where the CPU has them. Those paths round differently, and a tiny training amplifies a
rounding difference into another model (measured: another selected configuration on an AVX-512 /
AMX machine). So the workflow pins them all to AVX2, the widest set every x86-64 machine of the
last decade has, before any of them loads: `lus_core` sets the variables when it is first imported
(the Snakefile imports it, so every job inherits them; `lus` imports it before NumPy or torch).
On a machine without AVX2, and where `LUS_NATIVE_CPU_KERNELS=1` asks for each CPU's fastest
kernels instead (results then depend on the processor), nothing is pinned.
"""

from __future__ import annotations

import os
import platform

PINS = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN: convolutions, pooling, batch norm
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's own vectorised kernels
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility (matrix products)
    "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS's kernel set (NumPy, SciPy, scikit-learn)
}
OPT_OUT = "LUS_NATIVE_CPU_KERNELS"


def has_avx2(cpuinfo: str = "/proc/cpuinfo") -> bool:
    try:
        with open(cpuinfo) as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:  # not Linux: the processor's flags are not known
        return False


def pin_cpu_kernels(environ=os.environ) -> dict[str, str]:
    """Set the variables of PINS in `environ` (overriding what is there); returns what was set."""
    if environ.get(OPT_OUT) == "1" or platform.machine().lower() not in ("x86_64", "amd64") or not has_avx2():
        return {}
    environ.update(PINS)
    return dict(PINS)
