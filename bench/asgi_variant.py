"""The gateway's ASGI application with one thing changed, for the benchmark's ablation (never used
by the app): its hot routes sent through Django's ASGI handler (`ApiHandler`: a thread-sensitive
context and the request signals per call) instead of `HotApiHandler`, what the lean handler
saves; or each ledger step committed alone, what group commit saves."""

from __future__ import annotations

from typing import Any

from infrai import asgi, db_async


async def django_handler_application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] in asgi.HOT_API_PATHS:
        await asgi.api_asgi_app(scope, receive, send)
    else:
        await asgi.application(scope, receive, send)


async def _one_commit_per_step(sql: str, params: Any, order: int) -> Any:
    async with db_async.connection() as conn:
        return await db_async.fetchone(conn, sql, params)


async def one_commit_per_step_application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The shipped gateway with every ledger step in its own commit, as before group commit
    (infrai/db_async.py `fetchone_committed`): what committing the steps in flight together saves."""
    db_async.fetchone_committed = _one_commit_per_step
    await asgi.application(scope, receive, send)
