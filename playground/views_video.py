"""The playground's Video tab (being built: see issue #6)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse

from playground.views import _page


@login_required
def video_page(request: HttpRequest) -> HttpResponse:
    return _page(request, "video", "playground/video.html")
