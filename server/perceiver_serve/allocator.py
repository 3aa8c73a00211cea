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

Threads add a second way to creep. glibc gives threads heaps of their own (arenas, up to eight per
core), and an arena other than the main one keeps its top free block resident: ``malloc_trim``
releases free blocks inside every arena but shrinks only the main heap's top, and a thread's heap
shrinks by itself only when its top exceeds the trim threshold (64 MiB here). Worker threads come
and go (a CPU worker hands its queue to a new thread when idle, see ``modeling.threads``), and a
thread that starts before the one it replaces has ended takes another arena, so one by one every
arena came to hold a batch's activations: the server under tests/reliability/test_load.py's mix
grew by about 25 MiB per 5,000 requests (2-core Xeon; its anonymous memory from 314 to 440 MiB over
28,000) and did not level off. :func:`limit_arenas` holds the count at the cores the process may
use (2 there), set before any thread starts: the same server's memory once idle then stayed at 469
to 473 MiB over 28,000 requests, at the same speed (175 to 193 req/s against 165 to 187).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Callable, Iterator

log = logging.getLogger("perceiver_serve")

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # from glibc's <malloc.h>
#: The threshold :func:`fix_mmap_threshold` last set in this process (0: none): model worker
#: processes (``worker = "process"``) set the same in theirs.
fixed_mmap_threshold = 0
#: The arena count :func:`limit_arenas` last set in this process (0: none); worker processes set the same.
limited_arenas = 0


@functools.cache
def _libc(name: str, *argtypes: type) -> Callable[..., int] | None:
    """The C library's function ``name`` returning an int, or None where it has none (musl, macOS).
    Looked up once: finding the library takes about a millisecond, and workers trim every few seconds."""
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = argtypes, ctypes.c_int
    return function


def fix_mmap_threshold(threshold_bytes: int) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes``, and its trim threshold at twice that
    (0: leave the allocator as it is).

    Returns whether it was set: False where the C library is not glibc (musl, macOS), which
    manage memory differently and need nothing here.
    """
    if threshold_bytes <= 0 or (mallopt := _libc("mallopt", ctypes.c_int, ctypes.c_int)) is None:
        return False
    done = mallopt(_M_MMAP_THRESHOLD, threshold_bytes) == 1 and mallopt(_M_TRIM_THRESHOLD, 2 * threshold_bytes) == 1
    if done:
        global fixed_mmap_threshold
        fixed_mmap_threshold = threshold_bytes
    else:
        log.warning("could not fix the malloc mmap threshold at %d bytes", threshold_bytes)
    return done


@contextlib.contextmanager
def own_mappings(threshold_bytes: int) -> Iterator[None]:
    """Within, allocations of at least ``threshold_bytes`` get a mapping of their own, where this process
    fixed a higher mmap threshold (:func:`fix_mmap_threshold`; elsewhere nothing changes). For buffers
    that reserve far more than they touch (MKL's packed weights reserve 8 MB or more each and touch
    about the weight's size): in a mapping of their own the untouched part never takes pages, where in
    a thread's heap it would fill the heap's 64 MiB reservations and make the process map more heaps."""
    previous = fixed_mmap_threshold
    mallopt = _libc("mallopt", ctypes.c_int, ctypes.c_int)
    if previous <= threshold_bytes or mallopt is None or mallopt(_M_MMAP_THRESHOLD, threshold_bytes) != 1:
        yield
        return
    try:
        yield
    finally:
        mallopt(_M_MMAP_THRESHOLD, previous)


def default_arenas() -> int:
    """The arenas a server process limits itself to unless told: one per core it may use, at least 2;
    0 (glibc's own choice) where ``MALLOC_ARENA_MAX`` is set, since glibc has followed it already."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return 0
    return max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def limit_arenas(arenas: int) -> bool:
    """Let this process's threads share at most ``arenas`` malloc heaps (0: leave glibc's limit).

    To hold, it must come before the process has had more than eight arenas (glibc then fixes its
    limit): at start-up. Returns whether it was set; False where the C library is not glibc.
    """
    if arenas <= 0 or (mallopt := _libc("mallopt", ctypes.c_int, ctypes.c_int)) is None:
        return False
    if mallopt(_M_ARENA_MAX, arenas) != 1:
        log.warning("could not limit malloc to %d arenas", arenas)
        return False
    global limited_arenas
    limited_arenas = arenas
    return True


def configure_allocator(arenas: int | None, mmap_threshold_mb: float) -> None:
    """The server's allocator settings: at most ``arenas`` heaps (None: :func:`default_arenas`) and
    the mmap threshold (:func:`fix_mmap_threshold`). Once, before threads start: the CLI calls it
    before it imports torch, whose kernel probes run on threads of their own."""
    limit_arenas(default_arenas() if arenas is None else arenas)
    fix_mmap_threshold(int(mmap_threshold_mb * 1024 * 1024))


def trim_heap() -> bool:
    """Hand the heap's free pages back to the system (glibc ``malloc_trim``): after a model is
    freed, and when a model's worker falls idle.

    Weights and activations below the mmap threshold live in the heap; once freed their pages
    are still resident until trimmed. False where the C library has no ``malloc_trim``.
    """
    if (malloc_trim := _libc("malloc_trim", ctypes.c_size_t)) is None:
        return False
    malloc_trim(0)
    return True
