"""Per model version inference statistics, as Triton's statistics extension reports them.

Each batcher keeps one :class:`InferenceStatistics`, updated by its workers as every forward pass
ends. Its unit is the work item (a text, an image, a flow tile, a video window), the unit the
batcher schedules: ``success`` counts the items answered and their time from entering the queue
to their answer, ``fail`` the items whose pass failed, ``queue`` and ``compute_infer`` each
item's wait and its pass's duration, and ``batch_stats`` each pass by its size. Items refused
before computing (a full queue, a passed deadline, a client gone) are in
``perceiver_rejected_requests_total``, not here. Durations are nanoseconds of the monotonic clock.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, count: int, seconds: float) -> None:
        self.count += count
        self.ns += round(seconds * 1e9)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class InferenceStatistics:
    """Counters of one model version's forward passes (thread-safe: every worker of its batcher adds).

    An item answered spent its wait and then its pass, so ``success`` is derived: as many items as were
    computed, in the time of their waits and passes together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_inference_ms = 0  # wall clock, milliseconds since the epoch, of the last pass's end
        self.execution_count = 0  # forward passes
        self.queue, self.compute, self.fail = Duration(), Duration(), Duration()  # per item
        self.batches: dict[int, Duration] = defaultdict(Duration)  # passes, by size

    def passed(self, waits: Sequence[float], compute: float) -> None:
        """A pass of ``compute`` seconds answered items that had waited ``waits`` seconds each in the queue."""
        size = len(waits)
        with self._lock:
            self.last_inference_ms = time.time_ns() // 1_000_000
            self.execution_count += 1
            self.batches[size].add(1, compute)
            self.queue.add(size, sum(waits))
            self.compute.add(size, compute * size)

    def failed(self, enqueued: Sequence[float], ended: float) -> None:
        """Items that entered the queue at ``enqueued`` (``time.monotonic()``) got an error from their pass,
        which ended at ``ended``."""
        with self._lock:
            self.fail.add(len(enqueued), sum(ended - t for t in enqueued))

    def as_dict(self) -> dict[str, Any]:
        """Triton's ``ModelStatistics`` fields after ``name`` and ``version``, in their JSON form."""
        zero = Duration().as_dict()
        with self._lock:
            success = {"count": self.compute.count, "ns": self.queue.ns + self.compute.ns}
            return {
                "last_inference": self.last_inference_ms,
                "inference_count": self.compute.count,
                "execution_count": self.execution_count,
                "inference_stats": {"success": success, "fail": self.fail.as_dict(),
                                    "queue": self.queue.as_dict(), "compute_input": zero,
                                    "compute_infer": self.compute.as_dict(), "compute_output": zero,
                                    "cache_hit": zero, "cache_miss": zero},
                "batch_stats": [{"batch_size": size, "compute_input": zero, "compute_infer": d.as_dict(),
                                 "compute_output": zero} for size, d in sorted(self.batches.items())],
            }
