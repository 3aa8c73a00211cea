"""Keep the process's resident memory from creeping up under a varied load, without paying for it per request (glibc).

glibc serves allocations of at least ``M_MMAP_THRESHOLD`` bytes with ``mmap`` and gives them
back to the system on ``free``. By default that threshold moves: whenever such a block is
freed, it is raised to the block's size (up to 32 MiB on 64-bit), so from then on tensors of
that size come from the heap, and a heap keeps what it once held. A server whose batches
change size with the load (every text length, every batch size) then grows by tens of MiB per
few thousand requests (measured in tests/reliability/test_load.py: +7 to +15% after the
warm-up). A fixed threshold stops that: large tensors are mapped and unmapped, small ones stay
in the heap.

A low threshold has a price, though: every tensor above it is mapped afresh, and the kernel
faults in and zeroes each of its pages on first touch, in every forward pass. At 4 MiB the
mid-size text classifier of issue 12 took 1,200 to 2,400 page faults and 3 to 5 ms of system
CPU per request (batches of 8), and its forward passes ran about a third slower in the server
than alone. Hence the threshold sits at glibc's own ceiling (32 MiB: only the rare huge tensor
is mapped), the heap keeps up to twice that free at its top for the next batch
(``M_TRIM_THRESHOLD``, as glibc's moving default does), and what the heap holds free goes back
to the system when a model falls idle, and every few seconds under steady load
(:func:`trim_heap`, called by the batcher): a forward pass faults its activations in at most
once every few seconds rather than every time, and memory still does not creep.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("perceiver_serve")

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>
#: The threshold :func:`fix_mmap_threshold` last set in this process (0: none): model worker
#: processes (``worker = "process"``) set the same in theirs.
fixed_mmap_threshold = 0


def fix_mmap_threshold(threshold_bytes: int) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes``, and its trim threshold at twice that
    (0: leave the allocator as it is).

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
    done = mallopt(_M_MMAP_THRESHOLD, threshold_bytes) == 1 and mallopt(_M_TRIM_THRESHOLD, 2 * threshold_bytes) == 1
    if done:
        global fixed_mmap_threshold
        fixed_mmap_threshold = threshold_bytes
    else:
        log.warning("could not fix the malloc mmap threshold at %d bytes", threshold_bytes)
    return done


def trim_heap() -> bool:
    """Hand the heap's free pages back to the system (glibc ``malloc_trim``): after a model is
    freed, and when a model's worker falls idle.

    Weights and activations below the mmap threshold live in the heap; once freed their pages
    are still resident until trimmed. False where the C library has no ``malloc_trim``.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        malloc_trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes, malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    malloc_trim(0)
    return True
