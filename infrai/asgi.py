"""ASGI entry point: Django for HTTP, Channels for websockets.

`/v1` (the API, called with project keys) is served by a second Django handler whose middleware
is only what the API's answers need (security headers, Content-Length, X-Frame-Options): no
sessions, auth, CSRF, messages, htmx, social auth or WhiteNoise. Those are for the console, and
WhiteNoise being sync-only would move every API call into a thread and back. `/v1/docs` is an
HTML page rendered with the console's templates, so it stays on the console's handler.
"""

import asyncio
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infrai.settings.base")
# Django must be set up before any consumer (and so any model) is imported.
django_asgi_app = get_asgi_application()

from asgiref.sync import ThreadSensitiveContext  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.middleware.clickjacking import XFrameOptionsMiddleware  # noqa: E402
from django.middleware.common import CommonMiddleware  # noqa: E402
from django.middleware.security import SecurityMiddleware  # noqa: E402
from django.urls import resolve, set_script_prefix  # noqa: E402

from infrai.server import leave_request_bodies_to_django  # noqa: E402
from playground.routing import websocket_urlpatterns  # noqa: E402

leave_request_bodies_to_django()

# Outermost first, in the order they have in settings.MIDDLEWARE. Each has only
# process_request/process_response hooks that compute headers (no I/O), so `ApiHandler` calls
# them on the event loop: Django's own chain would run every hook through sync_to_async, six
# thread hand-offs per call.
API_MIDDLEWARE = (SecurityMiddleware, CommonMiddleware, XFrameOptionsMiddleware)
API_PREFIX = "/v1/"
CONSOLE_PAGES_UNDER_API = ("/v1/docs",)


def _not_called(request: Any) -> Any:
    raise AssertionError("ApiHandler calls the middleware's hooks itself")


class ApiHandler(ASGIHandler):
    """Django's ASGI handler with API_MIDDLEWARE, run on the event loop, instead of settings.MIDDLEWARE."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._api_middleware = []
        for middleware_class in API_MIDDLEWARE:
            if any(hasattr(middleware_class, hook) for hook in ("process_view", "process_exception")):
                raise TypeError(f"{middleware_class.__name__} needs the full middleware loader")
            self._api_middleware.append(middleware_class(_not_called))
        self._view_chain = convert_exception_to_response(self._get_response_async)
        self._middleware_chain = convert_exception_to_response(self._run_middleware)

    async def _run_middleware(self, request: Any) -> Any:
        """What Django's chain does for request/response-hook middleware, without the threads:
        request hooks outermost first (one may answer), response hooks back out from there."""
        response = None
        entered = []
        for middleware in self._api_middleware:
            entered.append(middleware)
            if hasattr(middleware, "process_request"):
                response = middleware.process_request(request)
                if response is not None:
                    break
        if response is None:
            response = await self._view_chain(request)
        for middleware in reversed(entered):
            if hasattr(middleware, "process_response"):
                response = middleware.process_response(request, response)
        return response


HOT_API_PATHS = frozenset({"/v1/chat/completions", "/v1/ai/chat"})


class HotApiHandler(ApiHandler):
    """`ApiHandler` for the routes every API call goes through (HOT_API_PATHS), without the work
    Django's handler does in a thread for every request: the request_started signal's receivers
    (request_finished is sent from the loop as the response closes, where it has no connection
    to close) and the view lookup (done once). Their views do the rare ORM step through
    `infrai.lib.sync.in_thread`, which hands the connection back itself, and the rest (key,
    routing data, hold, settlement) on the event loop."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Costs nothing unless the call does ORM work in a thread (`in_thread`); then that work
        # gets a thread of its own for this request, as under Django's handler.
        async with ThreadSensitiveContext():
            await self._handle(scope, receive, send)

    async def _handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            return
        # As in ASGIHandler.handle: a client that hangs up cancels the view (a stream settles
        # what it delivered in its `finally`).
        respond = asyncio.create_task(self._respond(request, send))
        disconnect = asyncio.create_task(self.listen_for_disconnect(receive))
        await asyncio.wait([disconnect, respond], return_when=asyncio.FIRST_COMPLETED)
        if not disconnect.done():
            disconnect.cancel()
        if not respond.done():
            respond.cancel()
        for task in (disconnect, respond):
            try:
                await task
            except (asyncio.CancelledError, RequestAborted):
                pass
        if not respond.cancelled() and respond.exception() is None:
            respond.result().close()
        body_file.close()

    async def _get_response_async(self, request: Any) -> Any:
        """The view the URLconf maps the path to, looked up once at start-up instead of per call."""
        match = self._hot_routes.get(request.path_info)
        if match is None:  # served under a script prefix: resolve as usual
            return await super()._get_response_async(request)
        request.resolver_match = match
        response = await match.func(request)
        self.check_response(response, match.func)
        return response

    def load_middleware(self, is_async: bool = False) -> None:
        self._hot_routes = {path: resolve(path) for path in HOT_API_PATHS}
        super().load_middleware(is_async)

    async def _respond(self, request: Any, send: Any) -> Any:
        response = await self.run_get_response(request)
        try:
            await self.send_response(response, send)
        except asyncio.CancelledError:
            pass  # the client disconnected while the response was being sent
        return response


api_asgi_app = ApiHandler()
hot_api_app = HotApiHandler()


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIX) and not path.startswith(CONSOLE_PAGES_UNDER_API)


async def http_application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope["path"]
    if path in HOT_API_PATHS:
        app: Any = hot_api_app
    elif is_api_path(path):
        app = api_asgi_app
    else:
        app = django_asgi_app
    await app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
