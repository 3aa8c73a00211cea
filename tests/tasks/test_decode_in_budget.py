"""decode_in_budget: big decodes take turns on one thread of their own, small ones share the pool.

The memory this bounds is measured through a real server in
``tests/reliability/test_decode_memory.py``; whether the allocator's heaps show it there depends
on how the pool's threads happen to pick up work. This checks the mechanism itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from types import SimpleNamespace

from perceiver_serve.media.budget import HAND_BACK_FROM_BYTES, DecodeBudget
from perceiver_serve.tasks.common import configure_preprocess_pool, decode_in_budget


@dataclasses.dataclass(frozen=True)
class Sized:
    decoded_bytes: int


class Recorder:
    """A decode that notes its thread and how many decodes ran at once."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.running = self.most = 0
        self._lock = threading.Lock()

    def __call__(self, opened: Sized) -> int:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.append(threading.current_thread().name)
        time.sleep(0.02)
        with self._lock:
            self.running -= 1
        return opened.decoded_bytes


SERVED = SimpleNamespace(name="image-classifier", batcher=SimpleNamespace(limits=SimpleNamespace(timeout_ms=60_000)))


async def decode_all(sizes: list[int], budget_bytes: int) -> Recorder:
    configure_preprocess_pool(8)
    budget, recorder = DecodeBudget(budget_bytes), Recorder()
    answers = await asyncio.gather(*(decode_in_budget(SERVED, budget, lambda n=n: Sized(n), recorder, subject="this image")
                                     for n in sizes))
    assert answers == sizes and budget.inflight == 0
    return recorder


async def test_big_decodes_take_turns_on_one_thread_even_where_the_budget_admits_several():
    recorder = await decode_all([HAND_BACK_FROM_BYTES] * 12, budget_bytes=8 * HAND_BACK_FROM_BYTES)
    assert recorder.most == 1
    assert len(set(recorder.threads)) == 1 and recorder.threads[0].startswith("big-decode"), recorder.threads


async def test_small_decodes_run_side_by_side_on_the_preprocessing_pool():
    recorder = await decode_all([HAND_BACK_FROM_BYTES - 1] * 12, budget_bytes=8 * HAND_BACK_FROM_BYTES)
    assert recorder.most > 1
    assert all(name.startswith("preprocess") for name in recorder.threads), recorder.threads
