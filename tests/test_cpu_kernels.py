"""lus_core pins the numerical libraries' kernels to AVX2 before they load (lus_core.cpu_kernels),
so a convolution gives the same bits whatever the processor would pick; LUS_NATIVE_CPU_KERNELS=1
lets each processor use its own (and its own numbers)."""

import os
import subprocess
import sys

import pytest

from lus_core.cpu_kernels import PINS, has_avx2, pin_cpu_kernels

CONV = """
import lus_core  # first, as every entry point of the project imports it
import hashlib, torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, padding=1))
with torch.no_grad():
    print(hashlib.sha256(net(torch.randn(8, 3, 48, 48)).numpy().tobytes()).hexdigest())
"""


def _conv(**env) -> str:
    out = subprocess.run([sys.executable, "-c", CONV], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}, timeout=120)
    return out.stdout.strip()


def test_the_pins_are_set_and_can_be_declined():
    env = {"ONEDNN_MAX_CPU_ISA": "SSE41"}
    if has_avx2():
        assert pin_cpu_kernels(env) == PINS and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    declined = {"LUS_NATIVE_CPU_KERNELS": "1", "ONEDNN_MAX_CPU_ISA": "SSE41"}
    assert pin_cpu_kernels(declined) == {} and declined["ONEDNN_MAX_CPU_ISA"] == "SSE41"


@pytest.mark.skipif(not has_avx2(), reason="the pins need an AVX2 processor")
def test_a_convolution_gives_the_same_bits_whatever_kernels_the_cpu_offers():
    pinned = _conv()
    assert _conv(ONEDNN_MAX_CPU_ISA="SSE41") == pinned  # an older CPU's kernels asked for: still AVX2
    # the check can fail: left to the processor, another kernel set gives other bits
    assert _conv(ONEDNN_MAX_CPU_ISA="SSE41", LUS_NATIVE_CPU_KERNELS="1") != pinned
