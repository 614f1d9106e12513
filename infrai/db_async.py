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
_sending: set[asyncio.Future[None]] = set()  # strong references to the running group senders


def available() -> bool:
    """Whether the default database is PostgreSQL (else async callers use the ORM in a thread)."""
    return connections["default"].vendor == "postgresql"


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


# --- Group commit -------------------------------------------------------------------------------

Row = tuple[Any, ...] | None


class _Waiting:
    __slots__ = ("sql", "params", "order", "answer")

    def __init__(self, sql: str, params: Sequence[Any], order: int, answer: asyncio.Future[Row]) -> None:
        self.sql, self.params, self.order, self.answer = sql, params, order, answer


class _StatementGroups:
    """The one-statement steps of one event loop's callers, committed together: while a group is
    in flight, the statements that arrive wait and then go as the next group, pipelined in one
    transaction (one round trip and one commit for all). A statement alone goes alone, in
    autocommit, as before, so a quiet server adds no wait; a busy one commits less often."""

    def __init__(self) -> None:
        self.waiting: list[_Waiting] = []
        self.sending = False
        self.groups = 0  # groups of two or more sent (read by tests)

    def add(self, sql: str, params: Sequence[Any], order: int) -> asyncio.Future[Row]:
        answer: asyncio.Future[Row] = asyncio.get_running_loop().create_future()
        self.waiting.append(_Waiting(sql, params, order, answer))
        if not self.sending:
            self.sending = True
            task = asyncio.ensure_future(self._send_all())
            _sending.add(task)
            task.add_done_callback(_sending.discard)
        return answer

    async def _send_all(self) -> None:
        try:
            await asyncio.sleep(0)  # let the callers of this turn of the loop join the first group
            while self.waiting:
                # A caller cancelled before its statement was sent is not sent at all.
                group = [w for w in self.waiting if not w.answer.done()]
                self.waiting = []
                if group:
                    await self._send(group)
        finally:
            self.sending = False

    async def _send(self, group: list[_Waiting]) -> None:
        # One lock order for every process (balance rows by account), so groups that touch the
        # same accounts do not deadlock. Two processes closing the same hold at once still can;
        # PostgreSQL then aborts one group, which `_together` sends again one step at a time.
        group.sort(key=lambda w: w.order)
        try:
            async with connection() as conn:
                answers = await (_one_by_one(conn, group) if len(group) == 1 else _together(conn, group))
        except Exception as exc:  # noqa: BLE001 (no connection: every statement gets the error)
            answers = [exc] * len(group)
        for waiting, answer in zip(group, answers, strict=True):
            if waiting.answer.done():
                continue
            if isinstance(answer, BaseException):
                waiting.answer.set_exception(answer)
            else:
                waiting.answer.set_result(answer)
        if len(group) > 1:
            self.groups += 1


async def _together(conn: psycopg.AsyncConnection, group: list[_Waiting]) -> list[Row | BaseException]:
    """The group in one pipelined transaction; if any statement fails, none of them took effect,
    and each is sent again alone for its own answer (a duplicate reference, a lost connection)."""
    try:
        async with conn.transaction():
            async with conn.pipeline():
                cursors = [await conn.execute(w.sql, w.params) for w in group]
            return [await cursor.fetchone() for cursor in cursors]
    except psycopg.Error:
        if conn.broken:
            raise
    return await _one_by_one(conn, group)


async def _one_by_one(conn: psycopg.AsyncConnection, group: list[_Waiting]) -> list[Row | BaseException]:
    answers: list[Row | BaseException] = []
    for waiting in group:
        try:
            answers.append(await fetchone(conn, waiting.sql, waiting.params))
        except Exception as exc:  # noqa: BLE001 (handed to that statement's caller)
            answers.append(exc)
    return answers


_groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _StatementGroups] = weakref.WeakKeyDictionary()


def statement_groups() -> _StatementGroups:
    loop = asyncio.get_running_loop()
    groups = _groups.get(loop)
    if groups is None:
        groups = _groups[loop] = _StatementGroups()
    return groups


async def fetchone_committed(sql: str, params: Sequence[Any], order: int) -> Row:
    """Run one single-statement step and return its row once it is committed, grouped with the
    steps of this loop's other callers (`_StatementGroups`). `order`: the account whose balance
    row the statement locks. Errors come as Django's, as from `fetchone`."""
    return await statement_groups().add(sql, params, order)


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
