"""Keep freed host memory in the process on CPU-only machines (glibc ``mallopt``).

XLA:CPU allocates each executable's buffers with ``malloc`` and frees them after the call. glibc
serves every request of 32 MiB or more with a fresh ``mmap`` and gives it back on ``free``, so a
training step whose temporaries are hundreds of MiB touches every page anew each step: one page
fault per 4 KiB. On the 2-core machines this project targets that was ~380,000 faults per `micro`
LM step, 0.3 s of a 1.05 s step, and a lone ``[8192, 256] @ [256, 1024]`` product (a 32 MiB
result) ran at 37% of the matmul peak against 100% at half the rows (``benchmarks/lm_step.py
--no-malloc-tuning`` reproduces the before).

``tune_malloc()`` makes glibc keep that memory: one arena (threads' own arenas cap a heap at
64 MiB and fall back to ``mmap`` above it), no ``mmap`` for large blocks, and freed heap never
trimmed (given back to the kernel) but kept for reuse. Peak resident memory is about what the
program needs at its peak plus fragmentation, and stays there. An earlier version kept at most
2 GiB (the largest positive threshold ``mallopt`` takes); a `micro` T=2 meta-step, with 7.3 GiB of
temporaries, then faulted 1.46 million pages back in every call: 7.5-8.0 s per call against 6.1 s
with no trimming (``benchmarks/meta_step.py`` prints the page faults per call).

The one arena has a cost where many threads allocate at once: the test suite, which is mostly
compilation, ran `tests/test_meta_core.py` in 126 s against 93 s untuned, and a nano T=8
meta-step (a compiled loop) took 3.05 s against 2.87 s; so the tests run untuned. The quickstart,
mostly steps, went from 10:41 to 8:29. It does nothing off glibc/Linux, on machines with a GPU or
TPU (host memory is not where their steps run), or when ``DATARATER_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import sys

ENV_SWITCH = "DATARATER_MALLOC_TUNING"

# glibc <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER = -1  # M_TRIM_THRESHOLD -1: never trim (mallopt(3))
_TOP_PAD_BYTES = 2**31 - 1  # mallopt takes an int: grow the heap in steps of up to 2 GiB


def _cpu_only_host() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms == "cpu"
    return not (glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL("libc.so.6")
    except (ValueError, OSError, AttributeError):  # musl, or no confstr name: not glibc
        return None


def tune_malloc() -> bool:
    """Apply the settings above if they apply here; True when they were applied.

    Call it first thing in a process (before JAX starts its thread pools): a thread that already
    has its own arena keeps it.
    """
    if os.environ.get(ENV_SWITCH, "1") == "0" or not _cpu_only_host():
        return False
    libc = _glibc()
    if libc is None:
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER), (_M_TOP_PAD, _TOP_PAD_BYTES))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


def add_benchmark_flag(parser: argparse.ArgumentParser) -> None:
    """``--no-malloc-tuning`` on a benchmark's parser, to measure what ``tune_malloc`` changes."""
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="leave glibc's malloc as it is (datarater.hostmem), to measure the difference")


def tune_malloc_unless_disabled(args: argparse.Namespace) -> bool:
    """``tune_malloc()`` unless the benchmark was given ``--no-malloc-tuning``; True when applied."""
    return not args.no_malloc_tuning and tune_malloc()
