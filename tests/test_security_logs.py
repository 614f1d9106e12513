"""Issue #7: secrets never reach the logs, the answers or the pages.

Every log record (root logger at DEBUG, every named logger let through, SQL statements with their
parameters) is captured while secrets are handled: project keys created, used, mistyped and
revoked; BYOK credentials registered, tested and used against a SIMULATED upstream that fails and
echoes the key back; a Stripe webhook with a bad signature; a magic-link sign-in. Then the text
is searched for each secret and for every 12-character piece of its random part.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import stripe
from django.core import mail
from django.db import connection
from django.test import Client

from console import keys
from gateway.models_byok import BYOKCredential
from tests.factories import bearer, make_account, make_key, signed_in_client
from tests.fakes.loopback import JsonHandler, serving
from tests.test_security_sweep import PLAIN_ROUTES, _loopback_only  # noqa: F401 (a fixture: no call leaves loopback)
from videos import video
from videos.models import VideoJob

pytestmark = pytest.mark.django_db
USD = 10**9
PIECE = 12  # no run of this many characters of a secret's random part may appear


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        # The formatted line with any traceback, and every attribute a structured handler could ship.
        return "\n".join(f"{self.format(r)} {r.__dict__!r}" for r in self.records)


@pytest.fixture
def captured_logs() -> Iterator[_Capture]:
    capture = _Capture()
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    for name in ("daphne", "daphne.server", "daphne.http_protocol", "django.request", "django.server"):
        loggers.append(logging.getLogger(name))
    saved = [(lg, lg.level, lg.disabled) for lg in loggers] + [(root, root.level, root.disabled)]
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.disabled = False
        if not lg.propagate:
            lg.addHandler(capture)
    connection.force_debug_cursor = True  # SQL statements and their parameters are logged too
    try:
        yield capture
    finally:
        connection.force_debug_cursor = False
        root.removeHandler(capture)
        for lg, level, disabled in saved:
            lg.setLevel(level)
            lg.disabled = disabled
            if capture in lg.handlers:
                lg.removeHandler(capture)


@dataclass
class Responses:
    """Every answer the test client gave, with its headers."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    def text(self, *, but: tuple[str, ...] = ()) -> str:
        return "\n".join(body for path, body in self.seen if path not in but)


@pytest.fixture
def responses(monkeypatch) -> Responses:
    recorded = Responses()
    original = Client.request

    def recording(self: Client, **request: Any) -> Any:
        response = original(self, **request)
        content = b"".join(response.streaming_content) if response.streaming else response.content
        if response.streaming:
            response.streaming_content = [content]
        recorded.seen.append((request.get("PATH_INFO", ""), content.decode(errors="replace") + str(response.headers)))
        return response

    monkeypatch.setattr(Client, "request", recording)
    return recorded


def assert_absent(secret: str, public_length: int, **texts: str) -> None:
    """Neither `secret` nor any PIECE characters of its part after `public_length` are in any text."""
    hidden = secret[public_length:]
    assert len(hidden) >= PIECE
    pieces = {hidden[i : i + PIECE] for i in range(len(hidden) - PIECE + 1)}
    for where, text in texts.items():
        assert secret not in text, f"the whole secret is in the {where}"
        found = [piece for piece in pieces if piece in text]
        assert not found, f"part of the secret ({found[0]!r}) is in the {where}"


# A project key's first 20 characters are its public lookup prefix, shown in the console on purpose.
KEY_PUBLIC = len(keys.KEY_PREFIX) + keys.LOOKUP_LENGTH


def _body(response: Any) -> str:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return content.decode(errors="replace")


def _api(client: Client, method: str, path: str, secret: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body) if body is not None else ""
    return client.generic(method, path, data, content_type="application/json", **bearer(secret))


# --- Project keys -------------------------------------------------------------------------------


def test_project_keys_created_used_mistyped_and_revoked_never_reach_the_logs(captured_logs, responses):
    account = make_account(credit_nano=USD)
    console = signed_in_client(account)
    shown = console.post("/keys/", {"label": "console"}, follow=True)
    console_secret = re.search(r'data-testid="new-key">(ifr_pk_proj_\w+)<', shown.content.decode()).group(1)
    api = Client()
    made = _api(api, "POST", "/v1/account/keys", console_secret, {"label": "api", "idempotency_key": "k-1"})
    assert made.status_code == 201
    api_secret = made.json()["key"]
    assert (
        _api(api, "POST", "/v1/account/keys", console_secret, {"label": "api", "idempotency_key": "k-1"}).json()["key"]
        is None
    )

    for secret in (console_secret, api_secret):
        assert _api(api, "GET", "/v1/account/balance", secret).status_code == 200
    unknown = keys.KEY_PREFIX + secrets.token_hex(20)[:40]
    assert _api(api, "GET", "/v1/account/balance", unknown).json()["error"]["code"] == "INVALID_API_KEY"
    assert _api(api, "GET", "/v1/account/balance", api_secret + "x").json()["error"]["code"] == "MALFORMED_API_KEY"
    basic = api.get("/v1/account/balance", HTTP_AUTHORIZATION=f"Basic {api_secret}")
    assert basic.json()["error"]["code"] == "MALFORMED_AUTHORIZATION"
    revoked = keys.keys_for_account(account.pk).get(label="console")
    assert console.post(f"/keys/{revoked.public_id}/revoke/").status_code == 302
    assert _api(api, "GET", "/v1/account/balance", console_secret).json()["error"]["code"] == "INVALID_API_KEY"
    # Every console page without parameters (the resolver's list), after the key was created.
    paths = [r.url({}) for r in PLAIN_ROUTES if not r.is_api and not r.route.startswith(("auth/", "logout"))]
    assert "/keys/" in paths and "/playground/" in paths
    pages = "".join(_body(console.get(path)) for path in paths)

    logs = captured_logs.text()
    assert "/v1/account/balance" in logs, "the capture saw the 401s that django.request logs"
    for secret in (console_secret, api_secret, unknown):
        assert_absent(secret, KEY_PUBLIC, logs=logs, pages=pages)
    # Each secret was shown exactly once: the console page after creating it, the API's 201.
    assert responses.text().count(console_secret) == 1
    assert responses.text().count(api_secret) == 1
    assert_absent(unknown, KEY_PUBLIC, answers=responses.text())


# --- BYOK credentials ---------------------------------------------------------------------------


def _echoing_upstream(echo: str) -> type[JsonHandler]:
    """A SIMULATED OpenAI-compatible vendor that refuses every call and quotes the key back."""

    class Handler(JsonHandler):
        def _refuse(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            quoted = {"full": key, "truncated": key[:-3] + "...", "suffix": "..." + key[5:]}[echo]
            self._json(401, {"error": {"message": f"Incorrect API key provided: {quoted}", "type": "auth_error"}})

        do_GET = _refuse  # noqa: N815
        do_POST = _refuse  # noqa: N815

    return Handler


@pytest.mark.parametrize("echo", ["full", "truncated", "suffix"])
def test_byok_keys_that_a_failing_upstream_echoes_never_reach_the_logs_answers_or_pages(
    echo, settings, captured_logs, responses
):
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    account = make_account(credit_nano=USD)
    project_secret = make_key(account)
    console = signed_in_client(account)
    api = Client()
    api_key, console_key = (f"sk-test-{secrets.token_urlsafe(30)}" for _ in range(2))
    with serving(_echoing_upstream(echo), "/v1") as url:
        registered = _api(
            api,
            "POST",
            "/v1/account/byok",
            project_secret,
            {
                "provider": "openai",
                "alias": "api",
                "credentials": {"api_key": api_key, "base_url": url},
                "idempotency_key": "byok-1",
            },
        )
        assert registered.status_code == 201, registered.content
        api_id = registered.json()["id"]
        tested = _api(api, "POST", f"/v1/account/byok/{api_id}/test", project_secret).json()
        assert tested["ok"] is False and "Incorrect API key provided" in tested["error"]
        assert _api(api, "POST", f"/v1/account/byok/{api_id}/revoke", project_secret).status_code == 200

        form = {"provider": "openai", "alias": "console", "api_key": console_key, "base_url": url}
        assert console.post("/byok/", form).status_code == 302
        console_id = BYOKCredential.objects.get(alias="console").public_id
        console_tested = console.post(f"/byok/{console_id}/test/", follow=True).content.decode()
        assert "failed its test" in console_tested
        page_after_test = console.get("/byok/").content.decode()
        assert console.post(f"/byok/{console_id}/revoke/").status_code == 302

    stored = " ".join(BYOKCredential.objects.values_list("last_test_error", flat=True))
    logs = captured_logs.text()
    for key in (api_key, console_key):
        assert_absent(
            key, len("sk-test-"), logs=logs, answers=responses.text(), stored_errors=stored, byok_page=page_after_test
        )


CHAT_ECHOES = ["full", "truncated", "suffix"]


@pytest.mark.parametrize("echo", CHAT_ECHOES)
def test_a_chat_call_through_byok_never_answers_or_logs_the_key_its_upstream_echoes(
    echo, settings, captured_logs, responses
):
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    account = make_account(credit_nano=USD)
    project_secret = make_key(account)
    api = Client()
    api_key = f"sk-test-{secrets.token_urlsafe(30)}"
    with serving(_echoing_upstream(echo), "/v1") as url:
        credentials = {"api_key": api_key, "base_url": url}
        body = {"provider": "openai", "alias": "mine", "credentials": credentials, "idempotency_key": "byok-1"}
        assert _api(api, "POST", "/v1/account/byok", project_secret, body).status_code == 201
        chat = _api(api, "POST", "/v1/ai/chat", project_secret, {"model": "gpt-4o-mini", "messages": "hi"})
    assert chat.status_code == 502 and "Incorrect API key provided" in chat.json()["error"]["message"]
    assert_absent(api_key, len("sk-test-"), logs=captured_logs.text(), answers=responses.text())


@pytest.mark.parametrize("echo", ["full", "truncated"])
def test_a_video_job_never_stores_or_answers_the_platform_key_its_upstream_echoes(
    echo, settings, tmp_path, captured_logs, responses
):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VIDEO_POLL_SECONDS = 0.01
    settings.VIDEO_RETRY_BASE_SECONDS = 0
    settings.OPENAI_API_KEY = f"sk-platform-{secrets.token_urlsafe(30)}"
    account = make_account(credit_nano=USD)
    project_secret = make_key(account)
    api = Client()
    with serving(_echoing_upstream(echo), "/v1") as url:
        settings.OPENAI_BASE_URL = url
        created = _api(api, "POST", "/v1/video/generate", project_secret, {"prompt": "a kite", "model": "sora-2"})
        assert created.status_code == 202, created.content
        job_id = created.json()["job_id"]
        assert video.run_job(job_id) == "failed"
    shown = _api(api, "GET", f"/v1/video/get/{job_id}", project_secret).json()
    assert shown["state"] == "failed" and "Incorrect API key provided" in json.dumps(shown)
    stored = " ".join(VideoJob.objects.values_list("error", flat=True))
    assert_absent(
        settings.OPENAI_API_KEY,
        len("sk-platform-"),
        logs=captured_logs.text(),
        answers=responses.text(),
        stored_errors=stored,
    )


# --- Stripe webhook -----------------------------------------------------------------------------


def test_a_stripe_webhook_with_a_bad_signature_logs_no_secret(settings, captured_logs, responses):
    settings.STRIPE_WEBHOOK_SECRET = f"whsec_{secrets.token_hex(24)}"
    settings.STRIPE_SECRET_KEY = f"sk_test_{secrets.token_hex(24)}"
    payload = json.dumps({"id": "evt_forged", "type": "checkout.session.completed", "data": {"object": {}}})
    forged = stripe.WebhookSignature.generate_signature_header(payload, "whsec_" + "0" * 48)
    client = Client()
    for header in (forged, "t=1,v1=deadbeef", settings.STRIPE_WEBHOOK_SECRET):
        response = client.post(
            "/billing/stripe/webhook/", payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
        )
        assert response.status_code == 400
    logs = captured_logs.text()
    assert "Stripe webhook refused" in logs
    for secret, public in ((settings.STRIPE_WEBHOOK_SECRET, len("whsec_")), (settings.STRIPE_SECRET_KEY, 8)):
        assert_absent(secret, public, logs=logs)
    assert_absent(settings.STRIPE_SECRET_KEY, 8, answers=responses.text())


# --- Magic link ---------------------------------------------------------------------------------


def test_a_magic_link_sign_in_under_production_settings_logs_no_token(settings, captured_logs, responses):
    settings.DEBUG = False
    settings.MAGIC_LINK_LOG_LINKS = False  # what production.py sets
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    client = Client()
    assert client.post("/login/", {"email": "dana@example.com"}).status_code == 302
    token = re.search(r"/login/magic/([^/\s]+)/", mail.outbox[-1].body).group(1)
    assert client.get(f"/login/magic/{token}/").status_code == 200
    signed_in = client.post(f"/login/magic/{token}/")
    assert signed_in.status_code == 302 and signed_in["Location"] == "/"
    assert client.get("/").status_code == 200
    assert_absent(token, 0, logs=captured_logs.text())
    # Only the confirmation page, whose form posts back to its own URL, carries it.
    assert_absent(token, 0, answers=responses.text(but=(f"/login/magic/{token}/",)))
