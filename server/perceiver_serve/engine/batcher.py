"""Dynamic batching on a dedicated device worker thread.

Callers on the event loop ``await batcher.submit(payload)``; the payload joins a bounded
queue and the call returns when its result exists. One worker thread per model takes the
oldest waiting item, gathers up to ``max_batch_size`` items that share its batch key (only
shape-compatible work shares a forward pass), waiting at most ``max_delay_ms`` counted from
when that oldest item arrived, and runs the batch. The event loop never runs model code. A worker
that has just answered a batch also waits, briefly, for the clients it answered to come back
(see :data:`RETURN_WAIT_SHARE`), so closed-loop clients share one batch instead of taking turns.

A CPU worker of several torch threads hands its work to a new thread after RENEW_AFTER_S without
work: its OpenMP team ends with the old thread, so an idle model does not slow the ones that
compute (see :mod:`..modeling.threads`).

Items are dropped before they are computed when their caller went away (the awaiting task
was cancelled) or their deadline passed. An exception fails only the batch it happened in;
an out-of-memory error splits the batch in halves and retries each, after the failed attempt's
tensors are gone (see :meth:`DynamicBatcher._run`).

The worker thread owns its model's device work: it selects the device, runs every batch on a
stream of its own (:class:`~.devices.WorkerStream`) and runs the warm-up batches itself, so the
per-thread cuBLAS/cuDNN handles exist before the first request.

A model may have several *instances* (``instances`` in ``model.toml``, Triton's instance group):
as many worker threads, each with its own stream and its own number of torch threads, sharing
the model's weights and one queue. On a CPU, two instances of one thread each keep both cores
computing where one instance of two threads waits at every operation's barrier for its slower
thread (measured on a 2-core Zen 4: +15% items/s in fp32, +24% in bf16, +28% in int8 for the
mid-size text classifier). A worker takes only its share of the work: the compatible items waiting
and the items the other workers are running, split evenly among the instances. So a burst is split
between idle workers instead of queuing behind one, and under steady load a worker that comes free
while another one is busy leaves part of what waits for it, instead of taking it all and leaving
the other idle once it is done.

Each worker thread runs its batches through an *executor*: the task's runner itself, or, for a
model served with ``worker = "process"``, a :class:`~.worker_process.ProcessRunner` that computes
them in a process of its own (everything above stays here, in the server process).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

import torch

from ..errors import DeadlineExceeded, InferenceFailed, PayloadTooLarge, QueueFull, ServeError, ShuttingDown
from ..modeling.threads import threads_per_instance, use_torch_threads
from .devices import WorkerStream
from .repository import BatchingConfig
from .statistics import InferenceStatistics
from .tasks import BatchRunner

log = logging.getLogger(__name__)

# Why queued work was dropped before it ran (the ``reason`` of rejected-work metrics): its
# caller went away, or its request failed elsewhere (another item of it failed, or a stream
# was refused for a later bad piece). A task that ends its own request cancels the awaiting
# task with ``REQUEST_FAILED`` as the message.
CANCELLED = "cancelled"
REQUEST_FAILED = "request_failed"


class BatchObserver(Protocol):
    def observe_queue_depth(self, model: str, depth: int) -> None: ...

    def observe_batch(self, model: str, size: int, queue_seconds: list[float], compute_seconds: float) -> None: ...

    def observe_rejected(self, model: str, reason: str, items: int = 1) -> None: ...


class _NullObserver:
    def observe_queue_depth(self, model: str, depth: int) -> None:
        pass

    def observe_batch(self, model: str, size: int, queue_seconds: list[float], compute_seconds: float) -> None:
        pass

    def observe_rejected(self, model: str, reason: str, items: int = 1) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class _Returning:
    """What a worker that just answered a batch expects to come back (see RETURN_WAIT_SHARE)."""

    key: Hashable
    expected: int  # the items that waited when the batch ended, and the batch's own
    until: float  # how long it waits for them at most (time.monotonic)


@dataclasses.dataclass(eq=False)
class _Item:
    payload: Any
    key: Hashable
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float
    deadline: float
    dropped_because: str = CANCELLED
    #: How many items its request has (a flow's tiles; 1 for most).
    group: int = 1
    #: Set by the worker, under the lock, once the item's batch is over: its result may not have
    #: reached the caller's event loop yet (``future.done()`` lags behind).
    finished: bool = False
    #: Left by a worker that took its share of a batch ready to run, for the other idle workers:
    #: it has waited for company already.
    ready: bool = False


def settle_all(items: Sequence[_Item], outcomes: Sequence[Any]) -> None:
    """Deliver each item's outcome to its caller, from any thread: one wake-up per event loop.

    A wake-up per item would write to the loop's wake-up pipe once each, and the loop, woken by the
    first, would contend for the GIL with this thread for the rest (measured: 2% of the device
    thread's time under 16 closed-loop clients, bf16 mid-size classifier).
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
    for item, outcome in zip(items, outcomes):
        by_loop.setdefault(item.loop, []).append((item.future, outcome))
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_each, settled)
        except RuntimeError:  # the callers' event loop is closed: nobody is waiting any more
            pass


def _settle_each(settled: list[tuple[asyncio.Future, Any]]) -> None:
    for future, outcome in settled:
        _settle(future, outcome)


def _settle(future: asyncio.Future, outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


#: A worker calls its ``hand_back`` once it has had no work for IDLE_AFTER_S (once per idle
#: spell), and under steady work after a batch once HAND_BACK_EVERY_S have passed since the last call.
IDLE_AFTER_S = 1.0
#: A worker that renews its thread when idle (see ``_renew_when_idle``) does it, and calls ``hand_back``,
#: after this long without work: another model's batches may be waiting for its OpenMP team to go.
RENEW_AFTER_S = 0.25
HAND_BACK_EVERY_S = 2.0
#: A worker of one instance, once it has answered a batch, waits for the clients it answered to send
#: their next requests (closed-loop clients, the usual case under load) before it takes a smaller
#: batch: at most this share of the batch's compute time, and RETURN_WAIT_MAX_S. Without it, 16
#: clients settle into two groups of 8 that take turns, each batch taken at once as the other
#: finishes (measured on a 2-core Xeon, int8 mid-size classifier: 107 req/s in batches of 8, 152 in
#: batches of 16; the model alone does 146-157 items/s in batches of 16).
RETURN_WAIT_SHARE = 0.25
RETURN_WAIT_MAX_S = 0.05
_IDLE = object()  # _take_batch's answer when the worker has been idle long enough


def join_until(threads: Sequence[threading.Thread], ends: float | None) -> list[str]:
    """Wait for ``threads`` to end until ``ends`` (a ``time.monotonic()``; None: for good); the names of those
    still running then."""
    for thread in threads:
        if thread.is_alive():  # one never started (a warm-up failed before its turn) cannot be joined
            thread.join(None if ends is None else max(0.0, ends - time.monotonic()))
    return [thread.name for thread in threads if thread.is_alive()]


class DynamicBatcher:
    def __init__(self, name: str, runner: BatchRunner, limits: BatchingConfig,
                 observer: BatchObserver | None = None, device: str | torch.device = "cpu",
                 hand_back: Callable[[], object] | None = None, *, instances: int = 1,
                 threads: int | None = None, executors: Sequence[BatchRunner] | None = None) -> None:
        """``hand_back`` runs on a worker thread when it falls idle and now and then under steady
        work (see :data:`HAND_BACK_EVERY_S`): the server hands free memory back to the system there.

        ``instances`` worker threads share ``runner`` (its model is read, never changed, by a
        forward pass); each runs its torch operations on ``threads`` threads, by default the
        process's torch threads divided among the instances (at least one). ``executors``, one per
        instance, run the batches instead (``runner`` then only says which payloads share a batch);
        a worker thread calls its executor's ``close()``, if it has one, when it ends.
        """
        if instances < 1:
            raise ValueError(f"instances must be at least 1, not {instances}")
        if executors is not None and len(executors) != instances:
            raise ValueError(f"{len(executors)} executors for {instances} instances")
        self.name = name
        self._hand_back = hand_back
        self._worked = False  # work ran since hand_back was last called
        self._handed_back_at = time.monotonic()
        self.runner = runner
        self.limits = limits
        self.observer = observer or _NullObserver()
        #: What Triton's statistics extension reports for this model version (see .statistics).
        self.statistics = InferenceStatistics()
        self.instances = instances
        self.threads = threads_per_instance(instances, threads)
        self.executors: list[BatchRunner] = list(executors) if executors is not None else [runner] * instances
        self._queue: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._waiting = 0  # workers inside _take_batch: the ones a burst of work is shared among
        self._running = 0  # items of the batches the workers have taken and not finished
        #: ``_admit`` wakes a worker only once the queue holds this many items (0: at every admission):
        #: the one worker of a single instance, gathering a batch, needs waking only once the batch
        #: can be full (its wait ends by itself when the delay is up). Otherwise it would wake for
        #: every request, take the GIL from the event loop and sleep again (see _take_batch).
        self._wake_at_depth = 0
        self._threads = [threading.Thread(target=self._work, args=(WorkerStream(device), executor), daemon=True,
                                          name=f"device-worker:{name}" + (f"#{i}" if instances > 1 else ""))
                         for i, executor in enumerate(self.executors)]
        #: A worker that computes on the CPU with several torch threads hands its work to a new thread
        #: of its own after RENEW_AFTER_S without work, and ends: its OpenMP team ends with it, so an idle
        #: model's team does not slow the models that compute (see :mod:`..modeling.threads`).
        self._renew_when_idle = torch.device(device).type == "cpu" and self.threads > 1 and executors is None
        self._warm_up: Callable[[BatchRunner], None] | None = None
        self._warmed = threading.Event()
        self._warm_up_error: BaseException | None = None
        self._room_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []  # see _admit_gradually
        self.forward_passes = 0  # batches actually run; tests and benchmarks read it
        self._answered_at = 0.0  # when a worker last sent results out (read with instances = 1 only)

    # -- event-loop side ----------------------------------------------------------------------
    def start(self, warm_up: Callable[[BatchRunner], None] | None = None) -> None:
        """Start the worker threads one after another, each waited for until it has run ``warm_up``
        with its executor (on its device and stream, with its torch threads); a warm-up failure stops
        the workers and is raised here."""
        for thread in self._threads:
            self._warm_up, self._warm_up_error = warm_up, None
            self._warmed.clear()
            thread.start()
            self._warmed.wait()
            if self._warm_up_error is not None:
                error, self._warm_up_error = self._warm_up_error, None
                self.stop()
                raise error

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    async def submit(self, payload: Any, *, deadline: float | None = None) -> Any:
        """Queue one payload and wait for its result (``deadline`` on the ``time.monotonic`` clock)."""
        (result,) = await self.submit_all([payload], deadline=deadline)
        return result

    async def submit_all(self, payloads: Sequence[Any], *, deadline: float | None = None,
                         gradual: bool = False) -> list[Any]:
        """Queue payloads of one request and wait for all their results.

        Normally all-or-nothing: a request that does not fit the queue's free room now is
        refused (429), and one of more items than the queue ever holds is refused as too large
        (413). With ``gradual`` (flow tiles of a large frame pair), a request larger than the
        whole queue is admitted in parts as the worker frees room, each part at most half the
        queue so other requests still get in, until its deadline passes (504).

        If the caller goes away, or one item fails, the request's other items are dropped
        (those not yet computed are never computed, those not yet queued never queued).
        """
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if deadline is None:
            deadline = now + self.limits.timeout_ms / 1000
        if not gradual:
            self.check_fits(len(payloads))
        items = [_Item(p, self.runner.batch_key(p), loop.create_future(), loop, now, deadline, group=len(payloads))
                 for p in payloads]
        reason = CANCELLED
        try:
            if len(items) <= self.limits.max_queue:
                self._admit(items)
            else:
                await self._admit_gradually(items, deadline)
            return list(await asyncio.gather(*(item.future for item in items)))
        except asyncio.CancelledError as exc:
            if exc.args == (REQUEST_FAILED,):
                reason = REQUEST_FAILED
            raise
        except Exception:
            reason = REQUEST_FAILED  # one item failed: the others are dropped for it, not by the caller
            raise
        finally:
            for item in items:
                item.dropped_because = reason  # read by the worker only for the cancelled ones
                item.future.cancel()  # no-op for settled ones; drops the rest before they run

    def _admit(self, items: list[_Item]) -> None:
        """Queue all of ``items`` now, or refuse them all (429)."""
        with self._cond:
            if self._stopping:
                raise ShuttingDown(f"model {self.name!r} is shutting down")
            if len(self._queue) + len(items) > self.limits.max_queue:
                self.observer.observe_rejected(self.name, "queue_full", len(items))
                raise QueueFull(
                    f"model {self.name!r} has {len(self._queue)} items queued (limit {self.limits.max_queue}); "
                    "retry later"
                )
            self._queue.extend(items)
            depth = len(self._queue)
            if depth >= self._wake_at_depth:
                self._cond.notify()
        self.observer.observe_queue_depth(self.name, depth)

    async def _admit_gradually(self, items: list[_Item], deadline: float) -> None:
        """Queue ``items`` part by part as room frees up, never holding more than half the queue."""
        loop = asyncio.get_running_loop()
        share = max(1, self.limits.max_queue // 2)
        pending = collections.deque(items)
        while True:
            with self._cond:
                if self._stopping:
                    raise ShuttingDown(f"model {self.name!r} is shutting down")
                # Queued or running. Not from the futures: a batch's results reach this loop after the
                # worker's wake-up, and counting its items as running would wait for a wake-up already gone.
                mine = sum(1 for item in items if not item.finished) - len(pending)
                room = min(self.limits.max_queue - len(self._queue), share - mine, len(pending))
                if room > 0:
                    self._queue.extend(pending.popleft() for _ in range(room))
                    self._cond.notify()
                depth = len(self._queue)
                if pending:
                    woken = loop.create_future()
                    self._room_waiters.append((loop, woken))
            self.observer.observe_queue_depth(self.name, depth)
            if not pending:
                return
            try:
                await asyncio.wait_for(woken, deadline - time.monotonic())
            except TimeoutError:
                self.observer.observe_rejected(self.name, "deadline", len(pending))
                raise DeadlineExceeded(
                    f"request to model {self.name!r} passed its deadline with {len(pending)} of its {len(items)} "
                    "work items not yet admitted to the queue") from None

    def _wake_room_waiters(self) -> None:
        """Called with the lock held, whenever items leave the queue or finish."""
        waiters, self._room_waiters = self._room_waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_settle, future, None)
            except RuntimeError:  # that event loop is closed: nobody waits there any more
                pass

    def check_fits(self, count: int) -> None:
        """Refuse a request of ``count`` items that the queue could never hold, however empty.

        Such a request is too large (413), not a reason to retry later (429). Tasks that build
        many items for one request call this before building them, to spare the work.
        """
        if count > self.limits.max_queue:
            self.observer.observe_rejected(self.name, "too_large", count)
            raise PayloadTooLarge(
                f"this request needs {count} work items on model {self.name!r}, more than its queue ever "
                f"holds ({self.limits.max_queue}); send a smaller input"
            )

    def stop(self, ends: float | None = None) -> list[str]:
        """Refuse new work, finish what is queued, and end the worker threads, waiting for them until ``ends``
        (a ``time.monotonic()``; None: as long as they take). The names of the workers still computing then."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            threads = list(self._threads)  # no worker is renewed once stopping
        return join_until(threads, ends)

    # -- worker side --------------------------------------------------------------------------
    def _work(self, stream: WorkerStream, executor: BatchRunner, first: bool = True) -> None:
        renewed = False
        try:
            renewed = self._serve(stream, executor, first)
        finally:
            close = getattr(executor, "close", None)
            if close is not None and not renewed:
                close()

    def _serve(self, stream: WorkerStream, executor: BatchRunner, first: bool) -> bool:
        """Answer batches until stopping (False), or until renewed after an idle spell (True)."""
        torch.set_grad_enabled(False)
        use_torch_threads(self.threads)  # this thread's own (see ..modeling.threads)
        try:
            stream.bind()
            if first:
                self._run_warm_up(stream, executor)
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it
            self._warm_up_error = exc
            return False
        finally:
            if first:
                self._warmed.set()
        computed = first  # this thread ran torch work (the warm-up, a batch): its OpenMP team exists
        returning: _Returning | None = None
        while True:
            renews = computed and self._renew_when_idle
            batch = self._take_batch(may_idle=(self._worked and self._hand_back is not None) or renews,
                                     returning=returning, idle_after=RENEW_AFTER_S if renews else IDLE_AFTER_S)
            if batch is _IDLE:
                if self._worked and self._hand_back is not None:
                    self._call_hand_back()  # outside the lock: callers keep submitting meanwhile
                if renews and self._renew(stream, executor):
                    return True
                computed = False
                continue
            if batch is None:
                return False
            computed = True
            live = self._drop_dead(batch)
            started = time.monotonic()
            if live:
                self._run(live, stream, executor)
            ended = time.monotonic()
            with self._cond:  # results are settled: requests admitted in parts may send more
                returning = self._expect_returns(live, started, ended)
                self._running -= len(batch)
                for item in batch:
                    item.finished = True
                self._wake_room_waiters()
            if self._hand_back is not None and time.monotonic() - self._handed_back_at >= HAND_BACK_EVERY_S:
                self._call_hand_back()

    def _expect_returns(self, answered: list[_Item], started: float, ended: float) -> _Returning | None:
        """What to wait for before the next batch (see RETURN_WAIT_SHARE): the items that waited when the
        results went out, and as many again as were answered. Called with the lock held."""
        if not answered or self.instances > 1:
            return None
        key = answered[0].key
        waited = sum(1 for item in self._queue if item.key == key and item.enqueued < self._answered_at)
        return _Returning(key, waited + len(answered),
                          ended + min(RETURN_WAIT_SHARE * (ended - started), RETURN_WAIT_MAX_S))

    def _renew(self, stream: WorkerStream, executor: BatchRunner) -> bool:
        """Start this worker's successor on a new thread (unless stopping), in this thread's place."""
        current = threading.current_thread()
        with self._cond:
            if self._stopping:
                return False
            successor = threading.Thread(target=self._work, args=(stream, executor, False), daemon=True,
                                         name=current.name)
            self._threads[self._threads.index(current)] = successor
            successor.start()
        return True

    def _call_hand_back(self) -> None:
        assert self._hand_back is not None
        self._hand_back()
        self._worked, self._handed_back_at = False, time.monotonic()

    def _take_batch(self, may_idle: bool, returning: _Returning | None = None,
                    idle_after: float = IDLE_AFTER_S) -> Any:
        """The next batch to run; None when stopping with nothing queued; with ``may_idle``, :data:`_IDLE`
        after ``idle_after`` seconds without work."""
        limits = self.limits
        with self._cond:
            self._waiting += 1
            try:
                while True:
                    while not self._queue:
                        if self._stopping:
                            return None
                        if not may_idle:
                            self._cond.wait()
                        elif not self._cond.wait(idle_after) and not self._queue and not self._stopping:
                            return _IDLE
                    head = self._queue[0]
                    fill_until = head.enqueued + limits.max_delay_ms / 1000
                    target = limits.max_batch_size
                    if returning is not None and returning.key == head.key:
                        target = min(target, returning.expected)
                        fill_until = max(fill_until, returning.until)
                    returning = None
                    while self._queue and self._queue[0] is head:  # another worker may take it meanwhile
                        compatible = [item for item in self._queue if item.key == head.key]
                        remaining = fill_until - time.monotonic()
                        if (len(compatible) >= target or remaining <= 0 or head.ready
                                or self._stopping):
                            break
                        if self.instances == 1:
                            self._wake_at_depth = len(self._queue) + target - len(compatible)
                        try:
                            self._cond.wait(remaining)
                        finally:
                            self._wake_at_depth = 0
                    else:
                        continue
                    break
                # This worker's share: the work waiting and running split evenly among the instances. Taking
                # all that waits while another instance is busy would leave that one nothing when it is done,
                # idle until new work arrives (measured: 2 instances, 16 clients, int8: 78 -> 93 req/s).
                share = math.ceil((len(compatible) + self._running) / self.instances)
                batch = compatible[: max(1, min(share, limits.max_batch_size))]
                self._running += len(batch)
                chosen = set(map(id, batch))
                self._queue = collections.deque(item for item in self._queue if id(item) not in chosen)
                if self._waiting > 1 and len(compatible) > len(batch):
                    for item in compatible[len(batch):]:
                        item.ready = True
                    self._cond.notify()  # the rest is another idle worker's, at once
                self._wake_room_waiters()
                depth = len(self._queue)
            finally:
                self._waiting -= 1
        self.observer.observe_queue_depth(self.name, depth)
        return batch

    def _drop_dead(self, batch: list[_Item]) -> list[_Item]:
        now, live, expired = time.monotonic(), [], []
        for item in batch:
            if item.future.cancelled():
                self.observer.observe_rejected(self.name, item.dropped_because)
            elif now > item.deadline:
                self.observer.observe_rejected(self.name, "deadline")
                expired.append(item)
            else:
                live.append(item)
        # Worded for requests of many items too (a flow's tiles): their parts computed before the deadline
        # were not waiting, only this part was not reached in time.
        settle_all(expired, [DeadlineExceeded(f"request to model {self.name!r} passed its deadline "
                                              f"{now - item.enqueued:.3f} s after it arrived, before "
                                              f"{'this part of it' if item.group > 1 else 'it'} was computed")
                             for item in expired])
        return live

    def _run_warm_up(self, stream: WorkerStream, executor: BatchRunner) -> None:
        if self._warm_up is None:
            return
        with stream.running(), torch.inference_mode():
            self._warm_up(executor)
            stream.synchronize()
        self._warm_up = None
        self._worked = True

    def _run(self, batch: list[_Item], stream: WorkerStream, executor: BatchRunner) -> None:
        """Run a batch; on running out of memory, its halves, depth first.

        The retry happens here, outside the ``except`` that caught the failure: there, the
        exception's traceback still holds the failed forward pass's frames and with them its
        tensors, which the allocator then cannot free for the retry.
        """
        pending = [batch]
        while pending:
            part = pending.pop()
            if self._attempt(part, stream, executor):
                log.warning("model %s: out of memory on a batch of %d; retrying in halves", self.name, len(part))
                stream.release_cached_memory()
                half = len(part) // 2
                pending += [part[half:], part[:half]]

    def _attempt(self, batch: list[_Item], stream: WorkerStream, executor: BatchRunner) -> bool:
        """Run ``batch`` and settle its items; True (items unsettled) if it ran out of memory and can be split."""
        started = time.monotonic()
        try:
            with stream.running(), torch.inference_mode():
                results = list(executor.run([item.payload for item in batch]))
                stream.synchronize()
            if len(results) != len(batch):
                raise RuntimeError(f"runner returned {len(results)} results for {len(batch)} items")
        except Exception as exc:  # noqa: BLE001 - any failure fails this batch, never the worker
            traceback.clear_frames(exc.__traceback__)  # the failed pass's locals: its tensors
            if is_out_of_memory(exc) and len(batch) > 1:
                return True
            self._fail(batch, exc)
            return False
        finally:
            with self._cond:
                self.forward_passes += 1
            self._worked = True
        compute, waits = time.monotonic() - started, [started - i.enqueued for i in batch]
        self.statistics.passed(waits, compute)
        self.observer.observe_batch(self.name, len(batch), waits, compute)
        self._answered_at = time.monotonic()
        settle_all(batch, results)
        return False

    def _fail(self, batch: list[_Item], exc: Exception) -> None:
        if isinstance(exc, ServeError):
            error: ServeError = exc
        else:
            log.exception("model %s: forward pass failed on a batch of %d", self.name, len(batch), exc_info=exc)
            kind = "out of memory" if is_out_of_memory(exc) else f"{type(exc).__name__}: {exc}"
            error = InferenceFailed(f"model {self.name!r} failed on this request's batch ({kind})")
        self.observer.observe_rejected(self.name, "error", len(batch))
        self.statistics.failed([i.enqueued for i in batch], time.monotonic())
        settle_all(batch, [error] * len(batch))
