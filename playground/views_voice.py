"""The playground's Voice tab (being built: see issue #6)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse

from playground.views import _page


@login_required
def voice_page(request: HttpRequest) -> HttpResponse:
    return _page(request, "voice", "playground/voice.html")
