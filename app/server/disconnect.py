"""Stop working for a client that has gone away.

A route reads the request body first, then runs its work through :func:`unless_disconnected`: if
the client disconnects first, the work is cancelled (a core withdraws its images from the queue)
and the route answers :data:`~app.errors.CLIENT_CLOSED`, which nobody reads but the access log
and the metrics record.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Awaitable, TypeVar

from starlette.requests import Request

T = TypeVar("T")


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """``await work``; ``None`` (and ``work`` cancelled) when the client disconnects first.

    Call it only once the body has been read: it listens for the client's next message.
    """
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return None
    return task.result()


async def _disconnected(request: Request) -> None:
    """Completes when the client disconnects."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # noqa: BLE001 - a broken connection is a gone client
        return
