"""The gateway's ASGI application with its hot routes sent through Django's ASGI handler
(`ApiHandler`: a thread-sensitive context and the request signals per call) instead of
`HotApiHandler`, for the benchmark's ablation: what the lean handler saves. Never used by the app."""

from __future__ import annotations

from typing import Any

from infrai import asgi


async def django_handler_application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] in asgi.HOT_API_PATHS:
        await asgi.api_asgi_app(scope, receive, send)
    else:
        await asgi.application(scope, receive, send)
