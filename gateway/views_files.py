from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse, HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from gateway import files


def signed_file(request: HttpRequest, token: str) -> HttpResponseBase:
    name = files.resolve(token)
    if name is None:
        return JsonResponse(
            {
                "error": {
                    "code": "LINK_EXPIRED",
                    "message": "This file link is invalid or has expired; ask the API for a new one.",
                }
            },
            status=404,
        )
    response = FileResponse(default_storage.open(name, "rb"), content_type=files.content_type(name))
    response["Cache-Control"] = "private, max-age=300"
    return response
