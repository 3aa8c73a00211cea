"""DynamicBatcher: batching, isolation of results, bounds, deadlines, cancellation, failures."""

import asyncio
import contextlib
import threading
import time
import weakref

import numpy as np
import pytest
import torch

from perceiver_serve.engine import BatchingConfig, DynamicBatcher
from perceiver_serve.errors import DeadlineExceeded, InferenceFailed, PayloadTooLarge, QueueFull
from perceiver_serve.modeling import ByteTokenizer, load_model
from perceiver_serve.tasks.text import TextClassificationRunner, TextOptions


class Recorder:
    """A runner around a callable; records every batch it is asked to run."""

    def __init__(self, fn=lambda payloads: [p * 2 for p in payloads], delay: float = 0.0) -> None:
        self.fn, self.delay, self.batches = fn, delay, []
        self.started = threading.Event()

    def batch_key(self, payload):
        return "k" if not isinstance(payload, tuple) else payload[0]

    def run(self, payloads):
        self.batches.append(list(payloads))
        self.started.set()
        time.sleep(self.delay)
        return self.fn(payloads)


def limits(**kw):
    return BatchingConfig(**{"max_batch_size": 8, "max_delay_ms": 20, "max_queue": 64, "timeout_ms": 10_000, **kw})


def started(runner, **kw):
    batcher = DynamicBatcher("m", runner, limits(**kw))
    batcher.start()
    return batcher


async def test_concurrent_texts_are_batched_and_each_caller_gets_its_own_answer(text_checkpoint):
    model = load_model(text_checkpoint)
    runner = TextClassificationRunner(model, TextOptions())
    batcher = started(runner, max_batch_size=16, max_delay_ms=50)
    tok = ByteTokenizer(model.config.max_position_embeddings)
    texts = [("x" * (i % 7 + 1)) + str(i) for i in range(24)]
    try:
        results = await asyncio.gather(*(batcher.submit(tok.encode(t)) for t in texts))
    finally:
        batcher.stop()
    assert batcher.forward_passes < len(texts)
    for text, got in zip(texts, results):
        with torch.no_grad():
            alone = model(torch.tensor([tok.encode(text)])).numpy()[0]
        assert np.abs(got - alone).max() <= 1e-5


async def test_only_items_with_the_same_key_share_a_batch():
    runner = Recorder(fn=lambda ps: [p[1] for p in ps])
    batcher = started(runner, max_delay_ms=30)
    try:
        out = await asyncio.gather(*(batcher.submit((k, i)) for i, k in enumerate("ababab")))
    finally:
        batcher.stop()
    assert out == list(range(6))
    assert all(len({p[0] for p in batch}) == 1 for batch in runner.batches)
    assert len(runner.batches) == 2


async def test_batch_size_is_bounded():
    runner = Recorder()
    batcher = started(runner, max_batch_size=3, max_delay_ms=50)
    try:
        assert await asyncio.gather(*(batcher.submit(i) for i in range(7))) == [i * 2 for i in range(7)]
    finally:
        batcher.stop()
    assert max(len(b) for b in runner.batches) == 3


async def test_full_queue_rejects_at_once():
    runner = Recorder(delay=0.3)
    batcher = started(runner, max_batch_size=1, max_queue=2, max_delay_ms=0)
    try:
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.to_thread(runner.started.wait, 5)  # the worker is busy with item 1
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        t0 = time.monotonic()
        with pytest.raises(QueueFull) as info:
            await batcher.submit(4)
        assert time.monotonic() - t0 < 0.1
        assert info.value.headers["Retry-After"]
        assert await first == 2 and [await q for q in queued] == [4, 6]
    finally:
        batcher.stop()


class Refusals:
    """An observer that keeps the rejected-items count by reason (as perceiver_rejected_requests_total)."""

    def __init__(self) -> None:
        self.items: dict[str, int] = {}

    def observe_queue_depth(self, model, depth):
        pass

    def observe_batch(self, *args):
        pass

    def observe_rejected(self, model, reason, items=1):
        self.items[reason] = self.items.get(reason, 0) + items


async def test_refusals_count_work_items_not_requests():
    """A refused request of five items counts five, whether the queue is full, it can never fit, or its
    batch failed: the counter's unit is the work item, as its help text says."""
    refusals = Refusals()

    def fn(payloads):
        if 13 in payloads:
            raise ValueError("unlucky")
        time.sleep(0.3)
        return [p * 2 for p in payloads]

    runner = Recorder(fn=fn)
    batcher = DynamicBatcher("m", runner, limits(max_batch_size=8, max_queue=6, max_delay_ms=0), refusals)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.to_thread(runner.started.wait, 5)
        queued = asyncio.ensure_future(batcher.submit_all([2, 3, 4]))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit_all([5, 6, 7, 8, 9])
        with pytest.raises(PayloadTooLarge):
            batcher.check_fits(7)
        assert await first == 2 and await queued == [4, 6, 8]
        with pytest.raises(InferenceFailed):
            await batcher.submit_all([13, 14, 15, 16, 17])
    finally:
        batcher.stop()
    assert refusals.items == {"queue_full": 5, "too_large": 7, "error": 5}


@contextlib.asynccontextmanager
async def busy_worker():
    """A one-at-a-time batcher whose worker is busy with a slow first item."""
    runner = Recorder(delay=0.3)
    batcher = started(runner, max_batch_size=1, max_delay_ms=0)
    try:
        blocker = asyncio.ensure_future(batcher.submit(1))
        await asyncio.to_thread(runner.started.wait, 5)
        yield batcher, runner
        assert await blocker == 2
    finally:
        batcher.stop()


async def test_expired_items_are_never_computed():
    async with busy_worker() as (batcher, runner):
        with pytest.raises(DeadlineExceeded, match=r"s after it arrived, before it was computed"):
            await batcher.submit(99, deadline=time.monotonic() + 0.05)
        # The worker is free again: 97 is computed (0.3 s), and 98 waits past the deadline behind it.
        with pytest.raises(DeadlineExceeded, match="before this part of it was computed"):
            await batcher.submit_all([97, 98], deadline=time.monotonic() + 0.05)
    assert [99] not in runner.batches and [98] not in runner.batches


async def test_cancelled_items_are_never_computed():
    async with busy_worker() as (batcher, runner):
        gone = asyncio.ensure_future(batcher.submit(77))
        await asyncio.sleep(0.01)
        gone.cancel()
        assert await batcher.submit(5) == 10
    assert [77] not in runner.batches


async def test_a_failing_batch_fails_only_its_requests():
    def fn(payloads):
        if 13 in payloads:
            raise ValueError("unlucky")
        return [p * 2 for p in payloads]

    runner = Recorder(fn=fn)
    batcher = started(runner, max_batch_size=4, max_delay_ms=0)
    try:
        with pytest.raises(InferenceFailed, match="unlucky"):
            await batcher.submit(13)
        assert await batcher.submit(4) == 8
    finally:
        batcher.stop()


async def test_out_of_memory_splits_the_batch_and_retries():
    def fn(payloads):
        if len(payloads) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated for batches over 2)")
        return [p * 2 for p in payloads]

    runner = Recorder(fn=fn)
    batcher = started(runner, max_batch_size=8, max_delay_ms=50)
    try:
        out = await asyncio.gather(*(batcher.submit(i) for i in range(7)))
    finally:
        batcher.stop()
    assert out == [i * 2 for i in range(7)]
    # 7 fails → halves 3 and 4 fail → 1+2 and 2+2 succeed
    assert [len(b) for b in runner.batches] == [7, 3, 1, 2, 4, 2, 2]


async def test_a_single_item_out_of_memory_fails_cleanly():
    def fn(payloads):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    batcher = started(Recorder(fn=fn), max_delay_ms=0)
    try:
        with pytest.raises(InferenceFailed, match="out of memory"):
            await batcher.submit(1)
    finally:
        batcher.stop()


async def test_event_loop_keeps_ticking_during_a_slow_forward_pass():
    def slow_forward(payloads):  # torch work, which (like a real forward pass) releases the GIL
        x = torch.randn(800, 800)
        for _ in range(40):
            x = torch.tanh(x @ x / 800)
        return [float(x.sum()) for _ in payloads]

    runner = Recorder(fn=slow_forward)
    batcher = started(runner, max_delay_ms=0)
    ticks = 0

    async def timer():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(timer())
    try:
        t0 = time.monotonic()
        await batcher.submit(1)
        elapsed = time.monotonic() - t0
    finally:
        ticker.cancel()
        batcher.stop()
    assert elapsed > 0.1
    assert ticks >= 0.3 * elapsed / 0.01


async def test_stop_finishes_queued_work_and_refuses_new():
    runner = Recorder(delay=0.05)
    batcher = started(runner, max_batch_size=1, max_delay_ms=0)
    pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(4)]
    await asyncio.sleep(0.01)
    await asyncio.to_thread(batcher.stop)
    assert [await p for p in pending] == [0, 2, 4, 6]
    from perceiver_serve.errors import ShuttingDown
    with pytest.raises(ShuttingDown):
        await batcher.submit(1)


async def test_the_failed_batch_is_freed_before_the_retry():
    """The out-of-memory retry must not run while the failed pass's tensors are still referenced
    (by the traceback's frames), or the device memory they hold is not there for the halves."""
    allocated, alive_at_retry = [], []

    def fn(payloads):
        alive_at_retry.append([ref() is not None for ref in allocated])
        activations = torch.empty(1 << 20)  # what a forward pass holds when it runs out of memory
        allocated.append(weakref.ref(activations))
        if len(payloads) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return [p * 2 for p in payloads]

    batcher = started(Recorder(fn=fn), max_batch_size=4, max_delay_ms=50)
    try:
        out = await asyncio.gather(*(batcher.submit(i) for i in range(4)))
    finally:
        batcher.stop()
    assert out == [0, 2, 4, 6]
    assert len(alive_at_retry) == 7  # 4 → 2 → 1, 1 → 2 → 1, 1
    assert not any(any(alive) for alive in alive_at_retry), alive_at_retry


def test_warm_up_runs_on_the_worker_thread_one_batch_per_key():
    from perceiver_serve.engine.warmup import warm_up

    threads = []
    runner = Recorder(fn=lambda payloads: threads.append(threading.current_thread().name) or list(payloads))
    runner.warmup_payloads = lambda: [1, 2, ("x", 3), 4]
    batcher = DynamicBatcher("m", runner, limits())
    batcher.start(warm_up=lambda executor: warm_up(executor, 8, False, print))
    batcher.stop()
    assert runner.batches == [[1, 2], [("x", 3)], [4]]
    assert threads == ["device-worker:m"] * 3


# -- several instances of one model ------------------------------------------------------------------

def test_two_instances_run_two_batches_side_by_side():
    """Two items, two idle instances: each takes one, and both run at once (the barrier passes only
    if the second batch starts while the first is still running)."""
    barrier = threading.Barrier(2, timeout=10)
    runner = Recorder(fn=lambda payloads: barrier.wait() is None or list(payloads))
    batcher = DynamicBatcher("m", runner, limits(max_delay_ms=50), instances=2)
    batcher.start()

    async def both():
        return await asyncio.gather(batcher.submit(1), batcher.submit(2))
    try:
        assert asyncio.run(both()) == [1, 2]
    finally:
        batcher.stop()
    assert sorted(map(len, runner.batches)) == [1, 1]


async def test_a_burst_is_split_evenly_between_idle_instances():
    runner = Recorder(delay=0.3)
    batcher = DynamicBatcher("m", runner, limits(max_batch_size=16, max_delay_ms=5000), instances=2)
    batcher.start()
    began = time.monotonic()
    try:
        assert await asyncio.gather(*(batcher.submit(i) for i in range(16))) == [i * 2 for i in range(16)]
    finally:
        batcher.stop()
    assert sorted(map(len, runner.batches)) == [8, 8]
    assert sorted(p for batch in runner.batches for p in batch) == list(range(16))
    assert time.monotonic() - began < 3  # the second half did not wait out max_delay_ms again


async def test_a_free_instance_leaves_its_busy_peer_a_share_of_what_waits():
    """One instance busy with one item, six more waiting: the free one takes its share of the seven,
    four, and leaves two for its peer, which takes them when it is done. Taking all six would leave
    the peer idle once it is done, while six items run one after another on the other instance."""
    release = threading.Event()

    def double(payloads):
        if payloads == [-1]:
            release.wait(10)
        return [p * 2 for p in payloads]

    runner = Recorder(fn=double)
    batcher = DynamicBatcher("m", runner, limits(max_batch_size=8, max_delay_ms=100), instances=2)
    batcher.start()
    try:
        busy = asyncio.ensure_future(batcher.submit(-1))
        while not runner.batches:
            await asyncio.sleep(0.01)
        rest = asyncio.gather(*(batcher.submit(i) for i in range(6)))
        while len(runner.batches) < 2:
            await asyncio.sleep(0.01)
        release.set()
        assert await rest == [i * 2 for i in range(6)] and await busy == -2
    finally:
        release.set()
        batcher.stop()
    assert [len(batch) for batch in runner.batches] == [1, 4, 2]


@pytest.mark.parametrize("instances, threads, expected", [(2, 1, 1), (2, None, None), (1, None, None), (1, 3, 3)])
async def test_each_instance_runs_its_batches_on_its_own_torch_threads(instances, threads, expected):
    from perceiver_serve.modeling.threads import PROCESS_THREADS

    seen = set()
    runner = Recorder(fn=lambda payloads: seen.add((threading.current_thread().name, torch.get_num_threads()))
                      or list(payloads), delay=0.05)
    batcher = DynamicBatcher("m", runner, limits(max_batch_size=1, max_delay_ms=0), instances=instances,
                             threads=threads)
    batcher.start(warm_up=lambda executor: executor.run([0]))
    try:
        await asyncio.gather(*(batcher.submit(i) for i in range(6)))
    finally:
        batcher.stop()
    per_instance = expected or max(1, PROCESS_THREADS // instances)
    names = {f"device-worker:m#{i}" for i in range(instances)} if instances > 1 else {"device-worker:m"}
    assert seen == {(name, per_instance) for name in names}
    assert torch.get_num_threads() == PROCESS_THREADS  # this thread's count is its own


def test_a_failing_warm_up_is_raised_by_start_and_ends_the_worker():
    def fn(payloads):
        raise RuntimeError("warm-up broke")

    batcher = DynamicBatcher("m", Recorder(fn=fn), limits())
    with pytest.raises(RuntimeError, match="warm-up broke"):
        batcher.start(warm_up=lambda executor: executor.run([1]))
    assert not any(thread.is_alive() for thread in batcher._threads)


# -- requests larger than the queue (flow tiles of big frames) ----------------------------------------

class QueueWatcher:
    """Observer recording each queue depth the batcher reports."""

    def __init__(self) -> None:
        self.depths: list[int] = []

    def observe_queue_depth(self, model, depth):
        self.depths.append(depth)

    def observe_batch(self, *args):
        pass

    def observe_rejected(self, *args):
        pass


async def test_a_request_larger_than_the_queue_is_admitted_in_parts():
    watcher = QueueWatcher()
    runner = Recorder()
    batcher = DynamicBatcher("m", runner, limits(max_batch_size=4, max_queue=8, max_delay_ms=0), watcher)
    batcher.start()
    try:
        with pytest.raises(PayloadTooLarge):  # all-or-nothing requests still cannot exceed the queue
            await batcher.submit_all(list(range(9)))
        results = await batcher.submit_all(list(range(50)), gradual=True)
        # Meanwhile another request still finds room: the big one holds at most half the queue.
        small = await batcher.submit_all([100, 101, 102, 103])
    finally:
        batcher.stop()
    assert results == [2 * i for i in range(50)]
    assert small == [200, 202, 204, 206]
    assert max(watcher.depths) <= 8 and all(len(b) <= 4 for b in runner.batches)


async def test_parts_follow_a_batch_that_ends_before_the_event_loop_sees_its_results():
    """A lost wake-up, seen once on a loaded machine: the request admitted in parts was woken when its
    first part was taken, but before it looked again the worker ran that part, woke the waiters (none
    yet) and sent the results, which the event loop had not applied when the request looked: it saw its
    part still running, found no room and waited for a wake-up that never came. Here the loop is held,
    right after the request's wake-up is scheduled, until the worker is done with the part."""
    holding = threading.Event()

    class WaitsForTheHold(Recorder):
        def run(self, payloads):
            if not self.batches:
                holding.wait(5)
            return super().run(payloads)

    def hold_the_loop(_future):
        holding.set()
        time.sleep(0.3)  # the worker returns the first part and wakes the waiters meanwhile

    runner = WaitsForTheHold()
    batcher = started(runner, max_batch_size=4, max_queue=8, max_delay_ms=0)
    try:
        request = asyncio.ensure_future(
            batcher.submit_all(list(range(12)), deadline=time.monotonic() + 3, gradual=True))
        await asyncio.sleep(0)  # the request queues its first part and waits for room
        ((_, first_wake_up),) = batcher._room_waiters
        first_wake_up.add_done_callback(hold_the_loop)
        results = await request
    finally:
        batcher.stop()
    assert results == [2 * i for i in range(12)]


async def test_a_big_request_leaves_room_for_others_while_it_waits():
    runner = Recorder(delay=0.05)
    batcher = started(runner, max_batch_size=2, max_queue=8, max_delay_ms=0)
    try:
        big = asyncio.ensure_future(batcher.submit_all(list(range(40)), gradual=True))
        await asyncio.to_thread(runner.started.wait, 5)
        assert await batcher.submit_all([1000, 1001, 1002, 1003]) == [2000, 2002, 2004, 2006]  # no 429
        assert await big == [2 * i for i in range(40)]
    finally:
        batcher.stop()


async def test_parts_not_admitted_before_the_deadline_fail_and_are_never_computed():
    runner = Recorder(delay=0.2)
    batcher = started(runner, max_batch_size=1, max_queue=4, max_delay_ms=0)
    try:
        with pytest.raises(DeadlineExceeded, match="not yet admitted"):
            await batcher.submit_all(list(range(30)), deadline=time.monotonic() + 0.5, gradual=True)
        await asyncio.sleep(0)
        assert await batcher.submit(7) == 14
    finally:
        batcher.stop()
    computed = [p for batch in runner.batches for p in batch]
    assert len(computed) < 30 and 29 not in computed


async def test_hand_back_runs_on_the_worker_once_per_idle_spell(monkeypatch):
    monkeypatch.setattr("perceiver_serve.engine.batcher.IDLE_AFTER_S", 0.2)
    calls, runner = [], Recorder(delay=0.05)
    batcher = DynamicBatcher("m", runner, limits(max_delay_ms=0),
                             hand_back=lambda: calls.append((threading.current_thread().name, len(runner.batches))))
    batcher.start()
    try:
        await asyncio.sleep(0.5)
        assert calls == []  # nothing ran yet: nothing to hand back
        for _ in range(4):  # back to back, each batch 50 ms: the worker is never idle 0.2 s in between
            assert await batcher.submit(1) == 2
        deadline = time.monotonic() + 30
        while not calls and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)  # idle still: no second call until work has run again
        assert calls == [("device-worker:m", 4)]
        assert await batcher.submit(2) == 4
        deadline = time.monotonic() + 30
        while len(calls) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert calls == [("device-worker:m", 4), ("device-worker:m", 5)]
    finally:
        batcher.stop()


async def test_hand_back_runs_now_and_then_under_steady_work_between_batches(monkeypatch):
    monkeypatch.setattr("perceiver_serve.engine.batcher.HAND_BACK_EVERY_S", 0.2)
    calls, runner = [], Recorder(delay=0.05)
    batcher = DynamicBatcher("m", runner, limits(max_delay_ms=0), hand_back=lambda: calls.append(len(runner.batches)))
    batcher.start()
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # never idle for IDLE_AFTER_S
            assert await batcher.submit(1) == 2
        assert 3 <= len(calls) <= 8, calls  # about every 0.2 s of the 1.5 s, never between two calls
        assert calls == sorted(set(calls)) and calls[0] >= 2
    finally:
        batcher.stop()


async def test_closed_loop_clients_come_together_in_one_batch():
    """Two groups of clients, each sending again as soon as it is answered, share one batch.

    The second group arrives while the first one's batch runs. Taking the waiting group at once when
    the first is answered (its head waited long enough) would make the groups take turns for good, in
    batches of half the size; the worker waits instead, briefly, for the clients it answered.
    """
    runner = Recorder(delay=0.2)  # RETURN_WAIT_SHARE of it is 50 ms, RETURN_WAIT_MAX_S
    batcher = started(runner, max_batch_size=8, max_delay_ms=5)

    async def client(first: int, delay: float) -> None:
        await asyncio.sleep(delay)
        for i in range(5):
            assert await batcher.submit(first + i) == 2 * (first + i)

    try:
        await asyncio.gather(*(client(10 * c, 0.0 if c < 4 else 0.05) for c in range(8)))
    finally:
        batcher.stop()
    sizes = [len(batch) for batch in runner.batches]
    # The first group alone, then everyone together, and the second group's last requests alone.
    assert sizes == [4, 8, 8, 8, 8, 4], sizes


async def test_a_client_that_does_not_come_back_delays_the_next_batch_briefly():
    runner = Recorder(delay=0.2)
    batcher = started(runner, max_batch_size=8, max_delay_ms=5)
    try:
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.to_thread(runner.started.wait)
        second = asyncio.ensure_future(batcher.submit(2))  # waits while the first batch runs
        assert await first == 2
        answered = time.monotonic()
        assert await second == 4
        # Its batch waited at most RETURN_WAIT_MAX_S for the first client, which never came back.
        assert time.monotonic() - answered < 0.2 + 0.05 + 0.15
    finally:
        batcher.stop()
    assert [len(batch) for batch in runner.batches] == [1, 1]


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the wake-ups other threads send it."""

    wakeups = 0

    def call_soon_threadsafe(self, callback, *args, context=None):
        type(self).wakeups += 1
        return super().call_soon_threadsafe(callback, *args, context=context)


def test_a_batch_reaches_its_event_loop_in_one_wake_up():
    """Every answer of a batch goes to the callers' event loop at once: one wake-up, not one per item."""
    runner = Recorder(delay=0.05)
    batcher = started(runner, max_batch_size=8, max_delay_ms=200)

    async def eight() -> list[int]:
        return await asyncio.gather(*(batcher.submit(i) for i in range(8)))

    try:
        with asyncio.Runner(loop_factory=CountingLoop) as run:
            CountingLoop.wakeups = 0
            assert run.run(eight()) == [2 * i for i in range(8)]
            assert CountingLoop.wakeups == 1, CountingLoop.wakeups
    finally:
        batcher.stop()
    assert [len(batch) for batch in runner.batches] == [8]


class CountingCondition(threading.Condition):
    """A condition that counts the waits that ended before their timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.woken = 0

    def wait(self, timeout=None):
        signalled = super().wait(timeout)
        self.woken += signalled
        return signalled


async def test_a_worker_gathering_a_batch_is_woken_once_it_can_be_full_not_per_request():
    """Requests arriving one by one wake the gathering worker once, when the batch is full; the full batch
    runs at once, long before its delay is up."""
    runner = Recorder()
    batcher = DynamicBatcher("m", runner, limits(max_batch_size=4, max_delay_ms=5_000))
    batcher._cond = condition = CountingCondition()
    batcher.start()
    try:
        pending = [asyncio.ensure_future(batcher.submit(0))]
        for i in range(1, 4):
            await asyncio.sleep(0.05)  # the worker is gathering, waiting for more
            pending.append(asyncio.ensure_future(batcher.submit(i)))
        began = time.monotonic()
        assert await asyncio.gather(*pending) == [0, 2, 4, 6]
        assert time.monotonic() - began < 2.0
        woken = condition.woken  # before stop() wakes everyone
    finally:
        batcher.stop()
    assert [len(batch) for batch in runner.batches] == [4]
    # Woken by the first request (the queue was empty), then by the fourth (the batch is full): not by
    # the second and third.
    assert woken == 2, woken


async def test_statistics_count_items_passes_and_failures_as_triton_reports_them():
    """The statistics extension's numbers: items and passes, each item's wait plus its pass's time making up
    its time to answer, passes by size, and failed items apart."""
    def fn(payloads):
        if 13 in payloads:
            raise ValueError("unlucky")
        return [p * 2 for p in payloads]

    runner = Recorder(fn=fn, delay=0.02)
    batcher = started(runner, max_batch_size=4, max_delay_ms=30)
    try:
        await asyncio.gather(*(batcher.submit(i) for i in range(6)))
        with pytest.raises(InferenceFailed):
            await batcher.submit(13)
    finally:
        batcher.stop()
    stats = batcher.statistics.as_dict()
    infer = stats["inference_stats"]
    sizes = [len(b) for b in runner.batches[:-1]]
    assert stats["inference_count"] == 6 and stats["execution_count"] == len(sizes)
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]} == {
        size: sizes.count(size) for size in sizes}
    assert all(b["compute_infer"]["ns"] >= 20e6 * b["compute_infer"]["count"] for b in stats["batch_stats"])
    assert infer["success"]["count"] == infer["queue"]["count"] == infer["compute_infer"]["count"] == 6
    assert abs(infer["success"]["ns"] - infer["queue"]["ns"] - infer["compute_infer"]["ns"]) <= 12
    assert infer["compute_infer"]["ns"] >= 6 * 20e6 and infer["queue"]["ns"] > 0
    assert infer["fail"]["count"] == 1 and infer["fail"]["ns"] >= 20e6
    assert stats["last_inference"] > (time.time() - 60) * 1000
