"""One process-wide budget on the bytes of decoded media held at once.

Limits on each input (pixels, seconds) bound one decode, but not how many run together: a
small PNG can inflate to a few hundred megabytes, and a burst of them, or many in one gRPC
message, would add up to more memory than the machine has. So every decode first takes the
bytes it will hold (computed from headers, before a pixel or sample is decoded) from this
budget, and gives them back as soon as its output is reduced to what the model needs.

Work that does not fit yet waits, first come first served, until its deadline; work larger
than the whole budget could never run and is refused at once. The budget lives on the event
loop: decoding runs in threads, but taking and returning bytes happens around those calls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

from ..errors import DeadlineExceeded, DecodeBudgetExceeded

MiB = 1024 * 1024
#: Holds of at least this many bytes hand freed memory back when they end (see :class:`DecodeBudget`):
#: glibc's mmap threshold as the server fixes it, above which blocks are mapped and unmapped anyway.
HAND_BACK_FROM_BYTES = 32 * MiB


@dataclasses.dataclass(eq=False)
class _Waiter:
    nbytes: int
    granted: asyncio.Future


def _ignore_bytes(inflight: int) -> None:
    pass


def _ignore_rejection(model: str, reason: str) -> None:
    pass


class DecodeBudget:
    """A byte semaphore: ``async with budget.hold(n, model=...)`` around each decode.

    ``on_change`` hears the bytes held after every change (a gauge), ``on_reject`` each
    refusal as ``(model, reason)`` with reason ``decode_budget`` (could never fit) or
    ``deadline`` (waited past its deadline).
    """

    def __init__(self, limit_bytes: int, *, on_change: Callable[[int], None] = _ignore_bytes,
                 on_reject: Callable[[str, str], None] = _ignore_rejection,
                 hand_back: Callable[[], object] | None = None, hand_back_from_bytes: int = HAND_BACK_FROM_BYTES) -> None:
        """``hand_back`` runs when a hold of at least ``hand_back_from_bytes`` ends, before its bytes
        go back to the budget: the server returns the decode's freed memory to the system there,
        which the allocator would otherwise keep for the thread that decoded (one arena per
        thread), so that decodes taking turns on several threads add up in resident memory."""
        if limit_bytes <= 0:
            raise ValueError(f"the decode budget must be positive, got {limit_bytes} bytes")
        self.limit = limit_bytes
        self.inflight = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._on_change = on_change
        self._on_reject = on_reject
        self._hand_back, self._hand_back_from = hand_back, hand_back_from_bytes

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def hold(self, nbytes: int, *, model: str, deadline: float | None = None,
                   subject: str = "this input") -> AsyncIterator[None]:
        """Hold ``nbytes`` of the budget for the block (``deadline`` on the ``time.monotonic`` clock).

        Raises :class:`DecodeBudgetExceeded` at once when ``nbytes`` exceeds the whole budget,
        and :class:`DeadlineExceeded` when the bytes did not free up in time. Whatever ends the
        block (result, error, cancellation), the bytes go back.
        """
        await self._acquire(nbytes, model, deadline, subject)
        try:
            yield
        finally:
            if self._hand_back is not None and nbytes >= self._hand_back_from:
                self._hand_back()
            self._release(nbytes)

    async def _acquire(self, nbytes: int, model: str, deadline: float | None, subject: str) -> None:
        if nbytes > self.limit:
            self._on_reject(model, "decode_budget")
            raise DecodeBudgetExceeded(
                f"{subject} needs {nbytes / MiB:.0f} MiB of memory to decode, more than this server's whole decode "
                f"budget of {self.limit / MiB:.0f} MiB (--max-decode-mb); send a smaller input")
        if not self._waiters and self.inflight + nbytes <= self.limit:
            self._take(nbytes)
            return
        waiter = _Waiter(nbytes, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.granted), timeout)
        except BaseException as exc:
            if waiter.granted.done() and not waiter.granted.cancelled():
                self._release(nbytes)  # granted in the same instant it gave up: hand the bytes on
            else:
                waiter.granted.cancel()
                self._waiters.remove(waiter)
                self._grant_waiters()  # a big waiter leaving may let smaller ones behind it run
            if isinstance(exc, asyncio.TimeoutError):
                self._on_reject(model, "deadline")
                raise DeadlineExceeded(
                    f"{subject} waited for decode memory past its deadline ({self.inflight / MiB:.0f} of "
                    f"{self.limit / MiB:.0f} MiB in use); retry later") from None
            raise

    def _take(self, nbytes: int) -> None:
        self.inflight += nbytes
        self._on_change(self.inflight)

    def _release(self, nbytes: int) -> None:
        self.inflight -= nbytes
        self._on_change(self.inflight)
        self._grant_waiters()

    def _grant_waiters(self) -> None:
        """Hand bytes to waiters in arrival order, stopping at the first that does not fit."""
        while self._waiters and self.inflight + self._waiters[0].nbytes <= self.limit:
            waiter = self._waiters.popleft()
            self._take(waiter.nbytes)
            waiter.granted.set_result(None)
