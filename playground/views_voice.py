"""The playground's Voice tab: the page, and the endpoint that mints its session token.

The token is the API's (`playground.voice.issue_token`), for the signed-in user's current
project; the page then talks to `/ws/voice/` like any API client would.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_POST

from gateway.api import ApiError
from playground import runs, voice
from playground.views import _caller, _error_status, _json_body, _page

CONSOLE_TTL_SECONDS = 600
TTL_CHOICES = ((120, "2 minutes"), (300, "5 minutes"), (600, "10 minutes"), (1800, "30 minutes"))
# OpenAI's voice names: every vendor we route to (the sandbox included) knows them.
VOICES = ("alloy", "coral", "echo", "fable", "nova", "onyx", "shimmer")


@login_required
def voice_page(request: HttpRequest) -> HttpResponse:
    base_url = runs.base_url_of(request)
    return _page(
        request,
        "voice",
        "playground/voice.html",
        code=voice.code_snippets(base_url),
        ttl_choices=TTL_CHOICES,
        voices=VOICES,
        default_ttl=CONSOLE_TTL_SECONDS,
    )


@require_POST
@login_required
async def voice_token(request: HttpRequest) -> HttpResponse:
    """`{session_id, token, expires_at, ws_url, ...}`, or `{error}` (a 402 with the top-up facts)."""
    caller = await sync_to_async(_caller)(request)
    state = runs.new_state(caller)
    base_url = runs.base_url_of(request)
    try:
        body = _json_body(request)
        issued = await voice.issue_token(base_url, caller, state.request_id, body, "voice", CONSOLE_TTL_SECONDS)
    except ApiError as exc:
        return JsonResponse({"error": runs.error_payload(exc, "voice")}, status=_error_status(exc))
    return JsonResponse(issued.answer(base_url))
