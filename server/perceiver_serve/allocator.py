"""Keep the process's resident memory from creeping up under a varied load (glibc).

glibc serves allocations of at least ``M_MMAP_THRESHOLD`` bytes with ``mmap`` and gives them
back to the system on ``free``. By default that threshold moves: whenever such a block is
freed, it is raised to the block's size (up to 32 MiB on 64-bit), so from then on tensors of
that size come from the heap, and a heap keeps what it once held. A server whose batches
change size with the load (every text length, every batch size) then grows by tens of MiB per
few thousand requests (measured in tests/reliability/test_load.py: +7 to +15% after the
warm-up). A fixed threshold stops that: large tensors are mapped and unmapped, small ones stay
in the heap (measured: +0.7% with 4 MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("perceiver_serve")

_M_MMAP_THRESHOLD = -3  # from glibc's <malloc.h>


def fix_mmap_threshold(threshold_bytes: int) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes`` (0: leave the allocator as it is).

    Returns whether it was set: False where the C library is not glibc (musl, macOS), which
    manage memory differently and need nothing here.
    """
    if threshold_bytes <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = mallopt(_M_MMAP_THRESHOLD, threshold_bytes) == 1
    if not done:
        log.warning("could not fix the malloc mmap threshold at %d bytes", threshold_bytes)
    return done


def trim_heap() -> bool:
    """Hand the heap's free pages back to the system (glibc ``malloc_trim``), after a model is freed.

    Weights below the mmap threshold (norms, biases, small layers) live in the heap; once a
    model is dropped their pages are free but still resident until trimmed. False where the
    C library has no ``malloc_trim``.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        malloc_trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes, malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    malloc_trim(0)
    return True
