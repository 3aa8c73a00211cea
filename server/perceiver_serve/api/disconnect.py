"""Work for an HTTP request that stops when its client goes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from ..errors import ClientDisconnected

T = TypeVar("T")


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, abandoning it (and dropping its queued items) if the client disconnects.

    The abandoned request ends as :class:`ClientDisconnected` (499, never sent), so logs and
    metrics count a client's choice, not a 500.
    """
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            raise ClientDisconnected("the client disconnected before its answer was ready")
        return task.result()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
