"""An upload body that cannot be read gets the API's JSON error from the real server (daphne),
not the empty 400 that Twisted answered with before the app saw the request."""

from __future__ import annotations

import httpx
import pytest

from billing.models import UsageRecord
from gateway.openapi import build_document
from infrai.lib.money import NANO_PER_USD as USD
from tests.factories import make_account, make_key
from tests.live import live_servers

pytestmark = pytest.mark.django_db(transaction=True)


def post(url: str, key: str, content_type: str, body: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
    return httpx.post(f"{url}/v1/audio/transcriptions", headers=headers, content=body, timeout=30)


def test_a_multipart_body_without_a_boundary_is_a_json_400_naming_the_body():
    key = make_key(make_account(credit_nano=USD))
    with live_servers(1) as (url,):
        response = post(url, key, "multipart/form-data", b"--x\r\nnot a form\r\n--x--\r\n")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "INVALID_MULTIPART"
    assert error["field"] == "body"
    assert "boundary" in error["message"]
    documented = build_document("http://testserver")["paths"]["/audio/transcriptions"]["post"]["responses"]["400"][
        "x-error-codes"
    ]
    assert "INVALID_MULTIPART" in documented
    assert response.headers["X-Request-Id"]
    assert not UsageRecord.objects.exists()


def test_a_multipart_body_with_no_readable_part_asks_for_the_file():
    key = make_key(make_account(credit_nano=USD))
    with live_servers(1) as (url,):
        response = post(url, key, "multipart/form-data; boundary=x", b"garbage that is no part at all")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("MISSING_FIELD", "file")


def test_a_well_formed_upload_still_reaches_the_view():
    key = make_key(make_account(credit_nano=USD))
    body = (
        b"--x\r\n"
        b'Content-Disposition: form-data; name="response_format"\r\n\r\n'
        b"yaml\r\n"
        b"--x\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
        b"RIFF\r\n"
        b"--x--\r\n"
    )
    with live_servers(1) as (url,):
        response = post(url, key, "multipart/form-data; boundary=x", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_FIELD", "response_format")
