"""How long libgomp's idle threads spin before they sleep: set before torch loads libgomp.

torch's CPU build computes on GNU OpenMP. A helper thread of a team that has finished a parallel
region spins, waiting for the next, ``GOMP_SPINCOUNT`` times (libgomp's default: 300,000 when the
teams' threads do not outnumber the cores) before it sleeps. Inside a forward pass the next region
comes within microseconds, and spinning saves waking the thread. Between two batches it does not:
the gap is the server's own work (answers out, the clients' next requests in, 6-8 ms for 16 texts),
and the helper spun through all of it on a core that the event loop and the clients needed. With
30,000 spins it sleeps instead, part way into the gap (2-core Xeon with AMX, bf16 mid-size
classifier, 16 closed-loop clients, two runs each way: the gap between batches 6.5 ms against
8.1-8.4, the forward pass as fast, 70-71 ms against 69-75; the model alone, one text or 16 at a
time, as fast as with libgomp's default within the runs' noise). 1,000 spins was too few: a
helper then slept between the operations of one text's forward pass, which ran at half speed.

libgomp reads the variable once, when it is loaded, so :func:`limit_spinning` runs before torch is
imported (``cli.main``); worker processes (``worker = "process"``) inherit it.
"""

from __future__ import annotations

import os

#: The server's spin count unless ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` says otherwise.
DEFAULT_SPIN_COUNT = 30_000


def default_spin_count() -> int:
    """:data:`DEFAULT_SPIN_COUNT`, or 0 (libgomp's own) where the environment already tells libgomp how to wait."""
    return 0 if ("GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ) else DEFAULT_SPIN_COUNT


def limit_spinning(count: int | None) -> int:
    """Have libgomp's idle threads spin ``count`` times before sleeping (None: :func:`default_spin_count`;
    0: leave libgomp as it is), for this process and the processes it starts. The count set, or 0."""
    count = default_spin_count() if count is None else count
    if count > 0:
        os.environ["GOMP_SPINCOUNT"] = str(count)
    return count
