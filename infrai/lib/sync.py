"""Running sync (ORM) work from async code."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection

T = TypeVar("T")


def _closing_connections(function: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        finally:
            # Outside a transaction only: inside one (a test's) the connection is still in use.
            if not connection.in_atomic_block:
                close_old_connections()

    return run


async def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`sync_to_async` (thread-sensitive, like Django's own) that hands the thread's database
    connection back when done. The hot `/v1` routes are served without Django's request signals
    (infrai/asgi.py), which would otherwise do that at the end of the request."""
    return await sync_to_async(_closing_connections(function))(*args, **kwargs)


async def finish_even_if_cancelled(awaitable: Awaitable[T]) -> T:
    """Await `awaitable` to its end even when the caller is cancelled meanwhile, and only then
    let the cancellation through: what a stream's cleanup settles must be settled by the time
    the stream has ended, not some time later in the background."""
    return await finish_or_undo(awaitable, None)


async def finish_or_undo(awaitable: Awaitable[T], undo: Callable[[T], Awaitable[object]] | None) -> T:
    """`finish_even_if_cancelled`, and when the caller was cancelled and the awaitable succeeded,
    `undo(result)` before the cancellation goes through. For a step that takes effect on the
    server whether or not its answer is read (a hold): a caller that will never use it must not
    leave it behind."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if undo is not None and not task.cancelled() and task.exception() is None:
            await finish_even_if_cancelled(undo(task.result()))
        raise
