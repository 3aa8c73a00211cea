"""Which threads compute with several torch threads: the device workers, and nothing else that stays.

torch's CPU build runs its parallel operations on GNU OpenMP (libgomp). Every thread that runs a
parallel region gets a team of OpenMP threads of its own, which lives as long as that thread. When
the threads of all live teams outnumber the CPUs, libgomp stops letting a team's idle threads spin
between regions (100 spins instead of 300,000; see ``GOMP_SPINCOUNT`` in its manual): they sleep,
and each of the few hundred operations of a forward pass then waits for them to be woken. A model
computing on a thread of its own, while another live thread has ever run a parallel operation (the
event loop or the pool thread that loaded the model, a preprocessing thread that resized an
image), ran at 60% of its speed on a 2-core Xeon (int8 mid-size classifier, batches of 16: 101
against 166 items/s, using 1.2 of its 2 cores) and 78% in float32. A server whose models compute on
worker threads pays this on every batch unless its other threads never form a team.

So in a server process (:func:`serve_single_threaded`) every thread runs torch single-threaded
except the device workers, which set their own count with :func:`use_torch_threads`, and model
loading (quantizing, converting, checking the precision), which runs with the process's threads in
a thread of its own that ends with it (:func:`in_fresh_thread`): a finished thread's team is freed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")

#: torch's threads at start-up (``OMP_NUM_THREADS``, else the cores), read at import, before
#: :func:`serve_single_threaded` lowers the count new threads start with.
PROCESS_THREADS = torch.get_num_threads()


def threads_per_instance(instances: int, threads: int | None = None) -> int:
    """Each instance's torch threads: ``threads``, by default the process's divided among the instances."""
    return threads or max(1, PROCESS_THREADS // instances)


def default_torch_threads() -> int:
    """The torch threads a thread started now would compute with."""
    return on_own_thread(torch.get_num_threads)


def _set_default(threads: int) -> None:
    """Make ``threads`` the count later new threads start with, leaving every live thread's own as it is.

    torch keeps one count per thread and a process-wide one that a thread adopts on its first torch
    call; ``torch.set_num_threads`` sets both, so it is called from a thread that exists only for it.
    """
    on_own_thread(torch.set_num_threads, threads)


def use_torch_threads(threads: int) -> None:
    """This thread's torch operations run on ``threads`` threads; threads started later keep their default."""
    default = default_torch_threads()
    torch.get_num_threads()  # adopt the process-wide count first, so that it can't replace ours later
    torch.set_num_threads(threads)
    if default != threads:
        _set_default(default)


def serve_single_threaded() -> None:
    """For a server process: this thread and every thread started from now on compute single-threaded
    (the device workers set their own count)."""
    torch.get_num_threads()
    torch.set_num_threads(1)  # this thread's, and the default of later ones


def in_fresh_thread(fn: Callable[..., T], *args: Any, threads: int = PROCESS_THREADS, name: str = "load") -> T:
    """``fn(*args)`` on a new thread with ``threads`` torch threads, which ends when ``fn`` returns;
    its result, or its exception, is this call's."""
    def run() -> T:
        use_torch_threads(threads)
        return fn(*args)

    return on_own_thread(run, name=name)


def on_own_thread(fn: Callable[..., T], *args: Any, name: str = "torch-threads") -> T:
    """``fn(*args)`` on a new thread that ends when it returns (with any OpenMP team it formed);
    its result, or its exception, is this call's."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value
