"""Validating `/v1` inputs shared by capabilities: strings, integers, images and audio."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import httpx

from gateway.api import field_error
from gateway.http import UnsafeUrl, check_public_url, client_for, user_urls_public_only

MAX_MEDIA_BYTES = 20 * 1024 * 1024
_DATA_URL = re.compile(r"^data:([\w/+.-]+)?(;base64)?,(.*)$", re.DOTALL)


def required_str(body: dict[str, Any], name: str, max_length: int = 100_000) -> str:
    value = body.get(name)
    if value is None:
        raise field_error(name, f"{name} is required.", code="MISSING_FIELD")
    if not isinstance(value, str) or not value.strip():
        raise field_error(name, f"{name} must be a non-empty string.")
    if len(value) > max_length:
        raise field_error(name, f"{name} may be at most {max_length} characters.")
    return value


def optional_str(body: dict[str, Any], name: str, choices: tuple[str, ...] | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise field_error(name, f"{name} must be a non-empty string.")
    if choices is not None and value not in choices:
        raise field_error(name, f"{name} must be one of {', '.join(choices)}.")
    return value


def whole_number(value: Any) -> int | None:
    """An int from JSON: 200 or 200.0 (JSON Schema counts both as integers); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def integer(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    """An integer field within bounds; absent or null gives `default`."""
    value = body.get(name)
    if value is None:
        return default
    number = whole_number(value)
    if number is None or not low <= number <= high:
        raise field_error(name, f"{name} must be an integer from {low} to {high}.")
    return number


def _decode_base64(data: str, field: str) -> bytes:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise field_error(field, f"{field} is not valid base64.") from exc
    if not raw:
        raise field_error(field, f"{field} is empty.")
    if len(raw) > MAX_MEDIA_BYTES:
        raise field_error(field, f"{field} is larger than {MAX_MEDIA_BYTES // (1024 * 1024)} MB.")
    return raw


async def _fetch(url: str, field: str) -> tuple[bytes, str | None]:
    try:
        check_public_url(url)
    except UnsafeUrl as exc:
        raise field_error(field, f"{field}: {exc}") from exc
    try:
        response = await client_for("media-fetch", public_only=user_urls_public_only()).get(url)
    except httpx.HTTPError as exc:
        raise field_error(field, f"{field} could not be fetched: {exc}") from exc
    if response.status_code != 200:
        raise field_error(field, f"{field} could not be fetched: HTTP {response.status_code}.")
    if len(response.content) > MAX_MEDIA_BYTES:
        raise field_error(field, f"{field} is larger than {MAX_MEDIA_BYTES // (1024 * 1024)} MB.")
    return response.content, response.headers.get("content-type")


async def media(value: Any, field: str) -> tuple[bytes, str | None]:
    """Bytes and MIME type from `{url}`, `{base64, mime?}`, a data: URL or a bare base64 string."""
    if isinstance(value, str):
        match = _DATA_URL.match(value)
        if match:
            if not match.group(2):
                raise field_error(field, f"{field}: only base64 data: URLs are accepted.")
            return _decode_base64(match.group(3), field), match.group(1)
        if value.startswith(("http://", "https://")):
            return await _fetch(value, field)
        return _decode_base64(value, field), None
    if isinstance(value, dict):
        if isinstance(value.get("base64"), str):
            mime = value.get("mime")
            return _decode_base64(value["base64"], f"{field}.base64"), mime if isinstance(mime, str) else None
        if isinstance(value.get("url"), str):
            url = value["url"]
            if url.startswith("data:"):
                return await media(url, f"{field}.url")
            return await _fetch(url, f"{field}.url")
    raise field_error(field, f"{field} must be {{url}} or {{base64, mime?}}.")
