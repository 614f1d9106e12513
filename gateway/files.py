"""Generated files (images, speech) stored through Django's storage API, served only by
signed, expiring URLs. Paths hold the owner's account id and a random name; nothing lists them."""

from __future__ import annotations

import mimetypes
import time
import uuid
from datetime import UTC, datetime

from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import HttpRequest

SALT = "infrai.files"
DEFAULT_TTL_SECONDS = 3600


def save(account_public_id: str, kind: str, data: bytes, extension: str) -> str:
    name = f"{kind}/{account_public_id}/{uuid.uuid4().hex}.{extension}"
    return default_storage.save(name, ContentFile(data))


def signed_url(base_url: str, name: str, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> tuple[str, str]:
    """(url, expires_at ISO) for a stored file."""
    expires = int(time.time()) + ttl_seconds
    token = signing.dumps({"p": name, "e": expires}, salt=SALT, compress=True)
    return f"{base_url}/files/{token}", datetime.fromtimestamp(expires, UTC).isoformat()


def resolve(token: str) -> str | None:
    """The stored name behind a signed token, or None when forged or expired."""
    try:
        payload = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        return None
    if not isinstance(payload, dict) or int(payload.get("e", 0)) < time.time():
        return None
    name = payload.get("p")
    return name if isinstance(name, str) and default_storage.exists(name) else None


def content_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def base_url_of(request: HttpRequest) -> str:
    from django.conf import settings

    return settings.SITE_URL or request.build_absolute_uri("/").rstrip("/")
