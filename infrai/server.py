"""What the HTTP server (daphne, on Twisted) must do differently for this app."""

from __future__ import annotations

from typing import Any


def leave_request_bodies_to_django() -> None:
    """Twisted parses every multipart/form-data POST body into `request.args`, which daphne never
    reads, and answers a body it cannot parse with an empty 400 before the app sees it. Django
    parses bodies itself, and the API answers a bad one with its JSON error naming the problem,
    so Twisted's parsing is turned off (its own `parsePOSTFormSubmission` switch). That also
    saves parsing every upload twice."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # not served by daphne
        return
    if getattr(WebRequest, "leaves_bodies_to_the_app", False):
        return
    daphne_init = WebRequest.__init__

    def __init__(self: WebRequest, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        daphne_init(self, *args, **kwargs)

    WebRequest.__init__ = __init__
    WebRequest.leaves_bodies_to_the_app = True
