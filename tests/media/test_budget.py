"""The decode budget on its own: refusal, waiting, deadlines, cancellation, and no leaks."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from perceiver_serve.errors import DeadlineExceeded, DecodeBudgetExceeded, InvalidInput
from perceiver_serve.media.budget import DecodeBudget

LIMIT = 1000


class Recorder:
    """What the budget reports: the gauge's values and the rejections."""

    def __init__(self) -> None:
        self.gauge: list[int] = []
        self.rejected: list[tuple[str, str]] = []

    def budget(self, limit: int = LIMIT) -> DecodeBudget:
        return DecodeBudget(limit, on_change=self.gauge.append,
                            on_reject=lambda model, reason: self.rejected.append((model, reason)))


async def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def test_work_that_could_never_fit_is_refused_at_once():
    seen = Recorder()
    budget = seen.budget()

    async def main():
        started = time.monotonic()
        with pytest.raises(DecodeBudgetExceeded) as info:
            async with budget.hold(LIMIT + 1, model="m", subject="frame 3"):
                pytest.fail("the block ran")
        assert time.monotonic() - started < 1.0
        return info.value

    error = asyncio.run(main())
    assert (error.http_status, error.grpc_status, error.code) == (413, "RESOURCE_EXHAUSTED", "decode_budget")
    assert "frame 3" in error.message and "--max-decode-mb" in error.message
    assert seen.rejected == [("m", "decode_budget")]
    assert budget.inflight == 0 and seen.gauge == []


def test_a_waiter_is_served_once_the_bytes_free_up():
    seen = Recorder()
    budget = seen.budget()
    order: list[str] = []

    async def main():
        release_first = asyncio.Event()

        async def first():
            async with budget.hold(700, model="m"):
                order.append("first")
                await release_first.wait()

        async def second():
            async with budget.hold(700, model="m"):
                order.append("second")
                assert budget.inflight == 700

        one = asyncio.create_task(first())
        await wait_until(lambda: order == ["first"])
        two = asyncio.create_task(second())
        await wait_until(lambda: budget.waiting == 1)
        assert order == ["first"] and budget.inflight == 700
        release_first.set()
        await asyncio.gather(one, two)

    asyncio.run(main())
    assert order == ["first", "second"]
    assert seen.gauge == [700, 0, 700, 0] and seen.rejected == []


def test_a_waiter_past_its_deadline_is_refused_and_takes_nothing():
    seen = Recorder()
    budget = seen.budget()

    async def main():
        async with budget.hold(LIMIT, model="m"):
            with pytest.raises(DeadlineExceeded):
                async with budget.hold(1, model="m", deadline=time.monotonic() + 0.05):
                    pytest.fail("the block ran")
            assert budget.inflight == LIMIT and budget.waiting == 0

    asyncio.run(main())
    assert budget.inflight == 0 and seen.rejected == [("m", "deadline")]


def test_a_cancelled_waiter_releases_nothing_it_did_not_take():
    seen = Recorder()
    budget = seen.budget()

    async def main():
        async with budget.hold(600, model="m"):
            waiter = asyncio.create_task(budget.hold(600, model="m").__aenter__())
            await wait_until(lambda: budget.waiting == 1)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert budget.inflight == 600 and budget.waiting == 0
        assert budget.inflight == 0
        async with budget.hold(LIMIT, model="m"):  # all of it is there again
            assert budget.inflight == LIMIT

    asyncio.run(main())
    assert seen.gauge == [600, 0, LIMIT, 0]


def test_waiters_are_served_in_order_and_a_big_one_leaving_lets_smaller_ones_in():
    budget = Recorder().budget()
    served: list[str] = []

    async def main():
        async def take(name: str, nbytes: int):
            async with budget.hold(nbytes, model="m"):
                served.append(name)

        async with budget.hold(500, model="m"):
            big = asyncio.create_task(take("big", 900))
            await wait_until(lambda: budget.waiting == 1)
            small = asyncio.create_task(take("small", 100))  # would fit now, but waits its turn
            await wait_until(lambda: budget.waiting == 2)
            assert served == []
            big.cancel()
            await small
        await asyncio.gather(big, return_exceptions=True)

    asyncio.run(main())
    assert served == ["small"] and budget.inflight == 0


def test_no_bytes_leak_after_a_thousand_mixed_requests():
    """Successes, errors inside the block, cancellations while holding or waiting, deadlines, refusals."""
    seen = Recorder()
    budget = seen.budget()
    rng = random.Random(18)
    outcomes: dict[str, int] = {}

    async def request(kind: str, nbytes: int):
        deadline = time.monotonic() + (0.002 if kind == "deadline" else 30)
        async with budget.hold(nbytes, model="m", deadline=deadline):
            await asyncio.sleep(rng.random() * 0.002)
            if kind == "error":
                raise InvalidInput("corrupt")

    async def main():
        tasks = []
        kinds = []
        for _ in range(1000):
            kind = rng.choice(["ok", "ok", "error", "cancel", "deadline", "too_big"])
            nbytes = LIMIT + 1 if kind == "too_big" else rng.randint(1, LIMIT)
            tasks.append(asyncio.create_task(request(kind, nbytes)))
            kinds.append(kind)
            if rng.random() < 0.3:
                await asyncio.sleep(0)
        for task, kind in zip(tasks, kinds):
            if kind == "cancel":
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            name = type(result).__name__ if isinstance(result, BaseException) else "ok"
            outcomes[name] = outcomes.get(name, 0) + 1

    asyncio.run(main())
    assert budget.inflight == 0 and budget.waiting == 0 and seen.gauge[-1] == 0
    assert max(seen.gauge) <= LIMIT
    assert {"ok", "InvalidInput", "CancelledError", "DecodeBudgetExceeded"} <= set(outcomes), outcomes
    assert sum(outcomes.values()) == 1000


def test_a_budget_must_be_positive():
    with pytest.raises(ValueError):
        DecodeBudget(0)


def test_a_big_hold_hands_memory_back_before_its_bytes_return_and_a_small_one_does_not():
    held_then: list[int] = []
    budget = DecodeBudget(LIMIT, hand_back=lambda: held_then.append(budget.inflight), hand_back_from_bytes=500)

    async def main():
        async with budget.hold(499, model="m"):
            pass
        assert held_then == []
        with pytest.raises(RuntimeError):
            async with budget.hold(500, model="m"):
                raise RuntimeError("the decode failed")  # its memory goes back all the same

    asyncio.run(main())
    assert held_then == [500] and budget.inflight == 0
