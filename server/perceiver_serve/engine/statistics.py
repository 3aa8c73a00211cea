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
    """Counters of one model version's forward passes (thread-safe: every worker of its batcher adds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_inference_ms = 0  # wall clock, milliseconds since the epoch, of the last pass's end
        self.inference_count = 0  # items computed
        self.execution_count = 0  # forward passes
        self.success, self.fail, self.queue, self.compute = Duration(), Duration(), Duration(), Duration()
        self.batches: dict[int, Duration] = defaultdict(Duration)

    def passed(self, enqueued: Sequence[float], started: float, ended: float) -> None:
        """A pass over items that entered the queue at ``enqueued`` (``time.monotonic()``) ran from
        ``started`` to ``ended`` and answered them all."""
        size, compute = len(enqueued), ended - started
        with self._lock:
            self._pass(size, compute)
            self.success.add(size, sum(ended - t for t in enqueued))
            self.queue.add(size, sum(started - t for t in enqueued))
            self.compute.add(size, compute * size)

    def failed(self, enqueued: Sequence[float], ended: float) -> None:
        """Items that entered the queue at ``enqueued`` got an error from their pass, which ended at ``ended``."""
        with self._lock:
            self.fail.add(len(enqueued), sum(ended - t for t in enqueued))

    def _pass(self, size: int, compute: float) -> None:
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.inference_count += size
        self.execution_count += 1
        self.batches[size].add(1, compute)

    def as_dict(self) -> dict[str, Any]:
        """Triton's ``ModelStatistics`` fields after ``name`` and ``version``, in their JSON form."""
        zero = Duration().as_dict()
        with self._lock:
            return {
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {"success": self.success.as_dict(), "fail": self.fail.as_dict(),
                                    "queue": self.queue.as_dict(), "compute_input": zero,
                                    "compute_infer": self.compute.as_dict(), "compute_output": zero,
                                    "cache_hit": zero, "cache_miss": zero},
                "batch_stats": [{"batch_size": size, "compute_input": zero, "compute_infer": d.as_dict(),
                                 "compute_output": zero} for size, d in sorted(self.batches.items())],
            }
