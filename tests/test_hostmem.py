"""Host malloc tuning: where it applies, and that freed large blocks are reused without page faults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from datarater import hostmem

# Allocates and touches a 64 MiB block twice (freeing it between); prints the minor page faults
# of the second touch. glibc's default hands such a block back to the kernel on free, so the
# second touch faults every page again (~16,000 faults).
_PROBE = """
import ctypes, resource, sys
from datarater.hostmem import tune_malloc
tuned = tune_malloc() if sys.argv[1] == "tuned" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
n = 64 << 20
def touch():
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    return p
libc.free(touch())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
libc.free(touch())
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(mode: str) -> tuple[bool, int]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop(hostmem.ENV_SWITCH, None)
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=env, capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    return tuned == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                    reason="the tuning is for glibc")
def test_tuned_malloc_reuses_a_freed_large_block_without_faults():
    tuned, faults_tuned = _probe("tuned")
    untuned, faults_default = _probe("default")
    assert tuned and not untuned
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert faults_default > pages // 2  # the default gives the block back: the check can see the difference
    assert faults_tuned < pages // 20


@pytest.mark.parametrize("env", [{hostmem.ENV_SWITCH: "0", "JAX_PLATFORMS": "cpu"}, {"JAX_PLATFORMS": "cuda"},
                                 {"JAX_PLATFORMS": "tpu,cpu"}])
def test_tuning_stays_off_when_switched_off_or_on_an_accelerator(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    called = []
    monkeypatch.setattr(hostmem, "_glibc", lambda: called.append(1))
    assert hostmem.tune_malloc() is False
    assert not called
