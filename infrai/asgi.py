"""ASGI entry point: Django for HTTP, Channels for websockets.

`/v1` (the API, called with project keys) is served by a second Django handler whose middleware
is only what the API's answers need (security headers, Content-Length, X-Frame-Options): no
sessions, auth, CSRF, messages, htmx, social auth or WhiteNoise. Those are for the console, and
WhiteNoise being sync-only would move every API call into a thread and back. `/v1/docs` is an
HTML page rendered with the console's templates, so it stays on the console's handler.
"""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infrai.settings.base")
# Django must be set up before any consumer (and so any model) is imported.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.middleware.clickjacking import XFrameOptionsMiddleware  # noqa: E402
from django.middleware.common import CommonMiddleware  # noqa: E402
from django.middleware.security import SecurityMiddleware  # noqa: E402

from playground.routing import websocket_urlpatterns  # noqa: E402

# Outermost first, in the order they have in settings.MIDDLEWARE. Each is async-capable and has
# only process_request/process_response hooks, which is what `ApiHandler.load_middleware` handles.
API_MIDDLEWARE = (SecurityMiddleware, CommonMiddleware, XFrameOptionsMiddleware)
API_PREFIX = "/v1/"
CONSOLE_PAGES_UNDER_API = ("/v1/docs",)


class ApiHandler(ASGIHandler):
    """Django's ASGI handler with API_MIDDLEWARE instead of settings.MIDDLEWARE."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response_async)
        for middleware in reversed(API_MIDDLEWARE):
            if any(hasattr(middleware, hook) for hook in ("process_view", "process_exception")):
                raise TypeError(f"{middleware.__name__} needs the full middleware loader")
            handler = convert_exception_to_response(middleware(handler))
        self._middleware_chain = handler


api_asgi_app = ApiHandler()


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIX) and not path.startswith(CONSOLE_PAGES_UNDER_API)


async def http_application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    app = api_asgi_app if is_api_path(scope["path"]) else django_asgi_app
    await app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
