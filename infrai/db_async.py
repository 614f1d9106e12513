"""PostgreSQL from the event loop: an async psycopg pool for Django's "default" database.

Django's ORM is synchronous, so async code reaches it through a thread (`sync_to_async`). The
few hot statements that async code runs itself (the credit ledger's holds) go through this pool
instead, with no thread hand-off. It connects with the parameters of Django's own connection
(under pytest: the test database), in autocommit. Unlike Django's default cursor it binds
parameters on the server, so psycopg prepares a statement it has run a few times
(`prepare_threshold`, 5): PostgreSQL then parses and plans the ledger's long statements once per
connection instead of once per call. The same SQL (`%s` placeholders) works on both.

One pool per event loop: asyncio connections and the pool's locks belong to the loop that made
them. A server keeps one loop for its life; tests and Django's test client start a new loop per
call. When a loop closes its pool cannot be awaited closed any more: the next pool creation (or
a DATABASES change) closes that pool's connections synchronously, and the rest is left to the
garbage collector. Each pool holds up to the "pool" max_size of DATABASES OPTIONS, in addition
to Django's own pool.

Errors leave as Django's exceptions (`django.db.OperationalError`, `IntegrityError`, ...), so
callers handle one family whichever path ran.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from django.core.signals import setting_changed
from django.db import connections, utils
from psycopg import pq
from psycopg_pool import AsyncConnectionPool

DEFAULT_MAX_SIZE = 10
DEFAULT_TIMEOUT = 30.0
APPLICATION_NAME = "infrai-async"

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConnectionPool] = weakref.WeakKeyDictionary()
# The connections each pool opened, so they can be closed without the pool's (closed) loop.
_opened: weakref.WeakKeyDictionary[AsyncConnectionPool, weakref.WeakSet[psycopg.AsyncConnection]] = (
    weakref.WeakKeyDictionary()
)
_closing: set[asyncio.Future[None]] = set()


def available() -> bool:
    """Whether async callers use this module's pool: on PostgreSQL, from a loop of the main thread
    (a server's, a test's). Otherwise they use the ORM in a thread. A loop in another thread is
    asgiref's async_to_sync loop for one call (Django's test client, a sync caller): it is closed
    when the call returns, and cancelling a pool's background tasks then can hang the close
    (seen in CI: the test client's thread stuck in asyncio.run's task cancellation)."""
    return connections["default"].vendor == "postgresql" and threading.current_thread() is threading.main_thread()


async def pool() -> AsyncConnectionPool:
    """The running loop's pool, made and opened (without waiting for connections) on first use."""
    loop = asyncio.get_running_loop()
    current = _pools.get(loop)
    if current is None:
        _discard_pools(closed_loops_only=True)
        current = _pools[loop] = _new_pool()
    await current.open(wait=False)
    return current


def _new_pool() -> AsyncConnectionPool:
    database = connections["default"]
    params = database.get_connection_params()
    params.update(autocommit=True, cursor_factory=psycopg.AsyncCursor)
    # Tells these sessions apart from Django's in pg_stat_activity, unless OPTIONS name them.
    params.setdefault("application_name", APPLICATION_NAME)
    options = database.settings_dict.get("OPTIONS", {}).get("pool")
    options = options if isinstance(options, dict) else {}
    opened: weakref.WeakSet[psycopg.AsyncConnection] = weakref.WeakSet()

    async def remember(conn: psycopg.AsyncConnection) -> None:
        opened.add(conn)

    created = AsyncConnectionPool(
        kwargs=params,
        min_size=1,
        max_size=max(1, int(options.get("max_size", DEFAULT_MAX_SIZE))),
        timeout=float(options.get("timeout", DEFAULT_TIMEOUT)),
        configure=remember,
        name="django-default-async",
        open=False,
    )
    _opened[created] = opened
    return created


@asynccontextmanager
async def connection() -> AsyncIterator[psycopg.AsyncConnection]:
    """A live connection from the running loop's pool, in autocommit."""
    with django_errors():
        current = await pool()
        conn = await _live_connection(current)
        try:
            yield conn
        finally:
            # A connection that errored beyond use (BAD) is dropped here and replaced.
            await current.putconn(conn)


async def _live_connection(current: AsyncConnectionPool) -> psycopg.AsyncConnection:
    while True:
        conn = await current.getconn()
        if not _closed_by_server(conn):
            return conn
        await current.putconn(conn)


def _closed_by_server(conn: psycopg.AsyncConnection) -> bool:
    """Whether the server ended this idle connection (a restart, pg_terminate_backend), found by
    reading its socket without a round trip. The first read takes the server's farewell message,
    the second finds the end of the stream and marks the connection BAD, which the pool discards.
    """
    try:
        conn.pgconn.consume_input()
        conn.pgconn.consume_input()
    except psycopg.OperationalError:
        return True
    return conn.pgconn.status != pq.ConnStatus.OK


async def fetchone(conn: psycopg.AsyncConnection, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    with django_errors():
        cursor = await conn.execute(sql, params)
        return await cursor.fetchone()


# Most specific first, as Django's own DatabaseErrorWrapper maps them.
_DJANGO_ERRORS = (
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "DatabaseError",
    "InterfaceError",
    "Error",
)


@contextmanager
def django_errors() -> Iterator[None]:
    """Re-raise psycopg's exceptions (pool timeouts included) as Django's."""
    try:
        yield
    except psycopg.Error as exc:
        for name in _DJANGO_ERRORS:
            if isinstance(exc, getattr(psycopg, name)):
                raise getattr(utils, name)(str(exc)) from exc
        raise


async def close_pools() -> None:
    """Close the running loop's pool (awaiting it) and the connections of closed loops' pools."""
    current = _pools.pop(asyncio.get_running_loop(), None)
    _discard_pools(closed_loops_only=True)
    if current is not None:
        await current.close()


def _discard_pools(*, closed_loops_only: bool) -> None:
    for loop, stale in list(_pools.items()):
        if closed_loops_only and not loop.is_closed():
            continue
        del _pools[loop]
        if loop.is_closed():
            _close_connections(stale)
        else:
            loop.call_soon_threadsafe(_close_in_loop, stale)


def _close_connections(stale: AsyncConnectionPool) -> None:
    # Closing the libpq connection is synchronous; nothing else can run on a closed loop.
    for conn in list(_opened.pop(stale, ())):
        if not conn.closed:
            conn.pgconn.finish()


def _close_in_loop(stale: AsyncConnectionPool) -> None:
    task = asyncio.ensure_future(stale.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def _databases_changed(setting: str, **_: Any) -> None:
    if setting == "DATABASES":
        _discard_pools(closed_loops_only=False)


setting_changed.connect(_databases_changed, dispatch_uid="infrai-db-async-pools")
