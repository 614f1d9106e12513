"""The `/v1` conventions in one place: errors, key authentication, JSON bodies, metadata.

Every `/v1` view is wrapped by `api_view`, which authenticates the bearer key, gives the call a
UUID v7 request id (also in `X-Request-Id`), turns `ApiError` into
`{"error": {"code", "message", ...}}` and adds `_metadata` to JSON answers.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.http.multipartparser import MultiPartParserError

from console import keys
from console.models import Account, Project, ProjectKey
from infrai import cache, ratelimit
from infrai.lib.ids import uuid7
from infrai.lib.sync import in_thread

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def response(self, request_id: str | None = None, meta: dict[str, Any] | None = None) -> JsonResponse:
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message, **self.extra}}
        if request_id:
            body["error"]["request_id"] = request_id
        if meta is not None:
            body["_metadata"] = meta
        resp = JsonResponse(body, status=self.status)
        if request_id:
            resp["X-Request-Id"] = request_id
        if "retry_after_seconds" in self.extra:
            resp["Retry-After"] = str(self.extra["retry_after_seconds"])
        if self.status == 401:
            resp["WWW-Authenticate"] = 'Bearer realm="infrai"'
        return resp


def field_error(field_name: str, message: str, status: int = 400, code: str = "INVALID_FIELD") -> ApiError:
    return ApiError(status, code, message, field=field_name)


@dataclass
class Caller:
    """Who a call is for: a project key's owner, or a signed-in user in the console (key None)."""

    key: ProjectKey | None
    project: Project
    account: Account


@dataclass
class ApiRequestState:
    request_id: str
    started: float
    caller: Caller | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    routing_version: str | None = None  # the shared routing-data version read while authenticating


def bearer_secret(request: HttpRequest) -> str:
    """The project key from the Authorization header, or the 401 that says what is wrong with it."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise ApiError(401, "MISSING_API_KEY", "Send your project key as 'Authorization: Bearer ifr_pk_proj_...'.")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise ApiError(401, "MALFORMED_AUTHORIZATION", "The Authorization header must be 'Bearer <project key>'.")
    if not keys.is_well_formed(secret):
        raise ApiError(
            401,
            "MALFORMED_API_KEY",
            "That is not a project key; they look like ifr_pk_proj_ followed by 40 letters and digits.",
        )
    return secret


def _unknown_key() -> ApiError:
    return ApiError(401, "INVALID_API_KEY", "This project key is unknown or has been revoked.")


def _rate_limited(limit: int) -> ApiError:
    return ApiError(
        429,
        "RATE_LIMITED",
        f"This key made more than {limit} calls this minute; slow down and retry.",
        retry_after_seconds=ratelimit.seconds_left_in_window(60),
    )


def authenticate(request: HttpRequest) -> Caller:
    secret = bearer_secret(request)
    key = keys.find_active_key(secret)
    if key is None:
        raise _unknown_key()
    limit = settings.API_RATE_LIMIT_PER_KEY_PER_MINUTE
    if limit and not ratelimit.hit("api-key", key.key_hash, limit, 60):
        raise _rate_limited(limit)
    keys.touch_last_used(key)
    return Caller(key=key, project=key.project, account=key.project.account)


async def authenticate_async(request: HttpRequest, state: ApiRequestState) -> Caller:
    """`authenticate` on the event loop: with Redis, one pipelined round trip reads the cached
    key and the routing-data version (kept in `state` for routing) and counts the call; the
    database (in a thread) only when the key is not cached or its last_used_at is due. Without
    Redis it is `authenticate` in a thread."""
    from gateway.catalog import RoutingData

    secret = bearer_secret(request)
    limit = settings.API_RATE_LIMIT_PER_KEY_PER_MINUTE
    digest = keys.hash_key(secret)
    bucket = ratelimit.Bucket("api-key", digest, 60) if limit else None
    shared = await cache.read_and_count(keys.shared_cache(), [keys.entry_name(digest), RoutingData.VERSION_KEY], bucket)
    if shared is None:
        return await in_thread(authenticate, request)
    (cached_key, routing_version), count = shared
    state.routing_version = routing_version if isinstance(routing_version, str) else None
    key = keys.from_cache(cached_key)
    if key is keys.NOT_CACHED:
        key = await in_thread(keys.find_active_key, secret)
    if key is None:
        raise _unknown_key()
    if bucket is not None and count is not None and count > limit:
        raise _rate_limited(limit)
    if keys.touch_due(key):
        await in_thread(keys.touch_last_used, key)
    return Caller(key=key, project=key.project, account=key.project.account)


MAX_JSON_DEPTH = 64


def parse_json_body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except RecursionError as exc:
        raise ApiError(400, "INVALID_JSON", f"The request body nests deeper than {MAX_JSON_DEPTH} levels.") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "INVALID_JSON", f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_JSON", "The request body must be a JSON object.")
    _check_json(body, "", 0)
    return body


def _check_json(value: Any, path: str, depth: int) -> None:
    """Refuse what no field can hold: deep nesting, NUL characters, unpaired UTF-16 surrogates."""
    if depth > MAX_JSON_DEPTH:
        raise ApiError(400, "INVALID_JSON", f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
    if isinstance(value, str):
        if "\x00" in value:
            raise field_error(path or "body", f"{path or 'The body'} contains a NUL character.", code="INVALID_TEXT")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise field_error(
                path or "body", f"{path or 'The body'} is not valid Unicode text.", code="INVALID_TEXT"
            ) from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, path or "body", depth + 1)
            _check_json(item, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", depth + 1)


def metadata(state: ApiRequestState, **overrides: Any) -> dict[str, Any]:
    return {
        "cost_usd": "0.00",
        "latency_ms": int((time.perf_counter() - state.started) * 1000),
        "vendor": "infrai",
        "cache_hit": False,
        "request_id": state.request_id,
        **state.metadata,
        **overrides,
    }


def _check_method(request: HttpRequest, methods: list[str], path_params: dict[str, Any]) -> None:
    if request.method not in methods:
        raise ApiError(405, "METHOD_NOT_ALLOWED", f"Use {' or '.join(methods)} on this route.", allowed=methods)
    for name, value in path_params.items():
        _check_json(value, name, 0)
    for name, value in request.GET.items():
        _check_json(value, name, 0)


def _database_unavailable(state: ApiRequestState) -> HttpResponseBase:
    """A database error on the way (PostgreSQL restarting, the pool out of connections) is a
    retryable 503 with the API's error body, not Django's HTML 500 page."""
    log.warning("database unavailable for request %s", state.request_id, exc_info=True)
    error = ApiError(503, "SERVICE_UNAVAILABLE", "The database is unavailable; retry shortly.", retry_after_seconds=2)
    response = _error_response(state, error)
    response["Retry-After"] = "2"
    return response


def _unreadable_form(exc: MultiPartParserError) -> ApiError:
    return field_error("body", f"The multipart/form-data body could not be read: {exc}", code="INVALID_MULTIPART")


def _error_response(state: ApiRequestState, exc: ApiError) -> HttpResponseBase:
    vendor = exc.extra.get("vendor")
    return exc.response(state.request_id, metadata(state, **({"vendor": vendor} if vendor else {})))


def _response(state: ApiRequestState, result: Any) -> HttpResponseBase:
    """A view's dict as JSON with `_metadata` (and an optional `_status`), or its own response."""
    if isinstance(result, HttpResponseBase):
        response = result
    else:
        status = result.pop("_status", 200) if isinstance(result, dict) else 200
        if isinstance(result, dict) and "_metadata" not in result:
            result["_metadata"] = metadata(state)
        response = JsonResponse(result, status=status)
    response["X-Request-Id"] = state.request_id
    return response


def api_view(methods: list[str], *, auth: bool = True) -> Callable[[Callable[..., Any]], Callable[..., HttpResponse]]:
    """Wrap a sync `/v1` view: the view gets (request, state, **kwargs) and returns a dict or response."""

    def decorate(view: Callable[..., Any]) -> Callable[..., HttpResponseBase]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            state = ApiRequestState(request_id=str(uuid7()), started=time.perf_counter())
            request.api = state  # type: ignore[attr-defined]
            try:
                if auth:
                    state.caller = authenticate(request)
                _check_method(request, methods, kwargs)
                result = view(request, state, *args, **kwargs)
            except ApiError as exc:
                return _error_response(state, exc)
            except MultiPartParserError as exc:
                return _error_response(state, _unreadable_form(exc))
            except (OperationalError, InterfaceError):
                return _database_unavailable(state)
            return _response(state, result)

        wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        return wrapper

    return decorate


def api_view_async(methods: list[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`api_view` for async views: authentication and the view on the event loop."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            state = ApiRequestState(request_id=str(uuid7()), started=time.perf_counter())
            request.api = state  # type: ignore[attr-defined]
            try:
                state.caller = await authenticate_async(request, state)
                _check_method(request, methods, kwargs)
                result = await view(request, state, *args, **kwargs)
            except ApiError as exc:
                return _error_response(state, exc)
            except MultiPartParserError as exc:
                return _error_response(state, _unreadable_form(exc))
            except (OperationalError, InterfaceError):
                return _database_unavailable(state)
            return _response(state, result)

        wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        return wrapper

    return decorate
