"""BYOK: register, list, test and revoke own vendor keys (API and console); encryption at rest and
key rotation; account isolation; chat calls dispatched through the caller's own key.

Every response of every test is checked for the keys the test registered (`leak_guard`), and so
is the log: the secret must never come back.
"""

from __future__ import annotations

import json
import logging
import secrets
from io import StringIO

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from billing import ledger
from billing.models import UsageRecord
from gateway import byok
from gateway.api import ApiError
from gateway.models import BYOKCredential, IdempotencyRecord
from tests.factories import bearer, make_account, make_key, signed_in_client
from tests.fakes.byok_upstream import ModelsScript, simulated_byok_upstream
from tests.fakes.openai_upstream import simulated_upstream

pytestmark = pytest.mark.django_db
USD = 1_000_000_000
MARKER = "ZZleakZZ"  # in the middle of every test key: never inside a fingerprint's first 3 / last 4
ISSUED: list[str] = []


def new_api_key() -> str:
    key = f"sk-proj-{MARKER}{secrets.token_urlsafe(24)}"
    ISSUED.append(key)
    return key


@pytest.fixture(autouse=True)
def leak_guard(monkeypatch, caplog):
    """Record every test-client response; afterwards none may contain a key this test issued."""
    caplog.set_level(logging.DEBUG)
    ISSUED.clear()
    bodies: list[tuple[str, bytes]] = []
    original = Client.request

    def recording(self, **request):
        response = original(self, **request)
        content = b"".join(response.streaming_content) if response.streaming else response.content
        if response.streaming:
            response.streaming_content = [content]
        bodies.append((request.get("PATH_INFO", ""), content + str(response.headers).encode()))
        return response

    monkeypatch.setattr(Client, "request", recording)
    yield bodies
    for key in ISSUED:
        for path, body in bodies:
            assert key.encode() not in body, f"the key leaked in the response to {path}"
        assert key not in caplog.text, "the key leaked into the log"
    for path, body in bodies:
        assert MARKER.encode() not in body, f"part of a key leaked in the response to {path}"
    assert MARKER not in caplog.text


def api(client, method, path, secret, body=None, **headers):
    kwargs = {"content_type": "application/json"} if body is not None else {}
    data = json.dumps(body) if body is not None else None
    call = getattr(client, method.lower())
    if data is None:
        return call(path, **bearer(secret), **headers)
    return call(path, data, **kwargs, **bearer(secret), **headers)


def register(client, secret, *, api_key=None, provider="openai", alias="mine", base_url=None, idem=None, **extra):
    credentials = {"api_key": api_key or new_api_key()}
    if base_url is not None:
        credentials["base_url"] = base_url
    body = {"provider": provider, "alias": alias, "credentials": credentials, **extra}
    if idem is not False:
        body["idempotency_key"] = idem or f"reg-{secrets.token_hex(6)}"
    return api(client, "POST", "/v1/account/byok", secret, body)


@pytest.fixture
def fernet_key(settings):
    key = Fernet.generate_key().decode()
    settings.BYOK_ENCRYPTION_KEYS = [key]
    return key


def raw_secret_column(public_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT secret_encrypted FROM {BYOKCredential._meta.db_table} WHERE public_id = %s",
            [public_id],
        )
        return cursor.fetchone()[0]


# --- Register and list --------------------------------------------------------------------------


def test_register_answers_201_with_the_record_and_never_the_secret(client, fernet_key):
    account = make_account()
    secret = make_key(account)
    api_key = new_api_key()
    response = register(client, secret, api_key=api_key, alias="team OpenAI")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"].startswith("byok_") and body["object"] == "byok_credential"
    assert (body["provider"], body["alias"], body["replayed"]) == ("openai", "team OpenAI", False)
    assert body["fingerprint"].startswith("sk-…" + api_key[-4:] + " #")
    assert body["created_at"] and body["revoked_at"] is None
    assert body["last_test_at"] is None and body["last_test_ok"] is None
    assert "credentials" not in body and "api_key" not in json.dumps(body)

    listing = api(client, "GET", "/v1/account/byok", secret).json()
    assert [c["id"] for c in listing["data"]] == [body["id"]]
    assert listing["data"][0]["fingerprint"] == body["fingerprint"]
    assert "openai" in listing["providers"] and "sandbox" not in listing["providers"]
    detail = api(client, "GET", f"/v1/account/byok/{body['id']}", secret).json()
    assert detail["alias"] == "team OpenAI"


def test_register_needs_an_idempotency_key_and_names_it(client):
    secret = make_key(make_account())
    response = register(client, secret, idem=False)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "IDEMPOTENCY_KEY_REQUIRED" and error["field"] == "idempotency_key"
    assert not BYOKCredential.objects.exists()


def test_a_replay_returns_the_same_record_without_the_secret(client):
    account = make_account()
    secret = make_key(account)
    api_key = new_api_key()
    first = register(client, secret, api_key=api_key, idem="byok-1").json()
    again = register(client, secret, api_key=api_key, idem="byok-1")
    assert again.status_code == 201
    replay = again.json()
    assert replay["id"] == first["id"] and replay["replayed"] is True
    assert replay["fingerprint"] == first["fingerprint"]
    header = api(
        client,
        "POST",
        "/v1/account/byok",
        secret,
        {"provider": "openai", "alias": "mine", "credentials": {"api_key": api_key}},
        HTTP_IDEMPOTENCY_KEY="byok-1",
    )
    assert header.json()["id"] == first["id"]
    assert BYOKCredential.objects.count() == 1
    # The stored idempotency record holds neither the key nor a plain hash of it.
    for record in IdempotencyRecord.objects.all():
        assert MARKER not in json.dumps(record.response) and api_key not in record.request_hash
    other_key = register(client, secret, api_key=new_api_key(), idem="byok-1")
    assert other_key.status_code == 422 and other_key.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_bad_registrations_name_the_field(client):
    secret = make_key(make_account())
    assert register(client, secret, alias="taken").status_code == 201
    api_key = new_api_key()
    cases = [
        ({"provider": "acme"}, "provider"),
        ({"provider": "sandbox"}, "provider"),
        ({"provider": None}, "provider"),
        ({"alias": ""}, "alias"),
        ({"alias": "   "}, "alias"),
        ({"alias": None}, "alias"),
        ({"alias": "x" * 81}, "alias"),
        ({"credentials": None}, "credentials"),
        ({"credentials": "sk-abc"}, "credentials"),
        ({"credentials": {}}, "credentials.api_key"),
        ({"credentials": {"api_key": ""}}, "credentials.api_key"),
        ({"credentials": {"api_key": 42}}, "credentials.api_key"),
        ({"credentials": {"api_key": api_key + " x"}}, "credentials.api_key"),
        ({"credentials": {"api_key": api_key, "org": "o"}}, "credentials.org"),
        ({"credentials": {"api_key": api_key, "base_url": "ftp://example.com/v1"}}, "credentials.base_url"),
        ({"credentials": {"api_key": api_key, "base_url": "example.com/v1"}}, "credentials.base_url"),
        ({"credentials": {"api_key": api_key, "base_url": "https://u:p@example.com/v1"}}, "credentials.base_url"),
        ({"credentials": {"api_key": api_key, "base_url": "http://127.0.0.1:9/v1"}}, "credentials.base_url"),
        ({"credentials": {"api_key": api_key, "base_url": "http://10.1.2.3/v1"}}, "credentials.base_url"),
        ({"credentials": {"api_key": api_key, "base_url": "http://[::1]:8000/v1"}}, "credentials.base_url"),
        ({"provider": "openai_compatible", "credentials": {"api_key": api_key}}, "credentials.base_url"),
    ]
    for overrides, field in cases:
        body = {"provider": "openai", "alias": "new", "credentials": {"api_key": api_key}, "idempotency_key": "k"}
        body.update(overrides)
        body["idempotency_key"] = f"bad-{secrets.token_hex(4)}"
        response = api(client, "POST", "/v1/account/byok", secret, body)
        assert response.status_code == 400, (overrides, response.content)
        assert response.json()["error"]["field"] == field, overrides
    unknown = api(
        client,
        "POST",
        "/v1/account/byok",
        secret,
        {"provider": "acme", "alias": "a", "credentials": {"api_key": api_key}, "idempotency_key": "u"},
    ).json()["error"]
    assert "openai" in unknown["message"] and "openai" in unknown["allowed"] and "sandbox" not in unknown["allowed"]

    taken = register(client, secret, alias="taken")
    assert taken.status_code == 409
    assert taken.json()["error"]["field"] == "alias" and taken.json()["error"]["code"] == "ALIAS_TAKEN"
    assert BYOKCredential.objects.count() == 1


def test_a_private_base_url_is_refused_by_default_and_allowed_by_the_setting(client, settings):
    secret = make_key(make_account())
    refused = register(client, secret, base_url="http://127.0.0.1:9/v1")
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["field"] == "credentials.base_url" and "private" in error["message"]
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    assert register(client, secret, base_url="http://127.0.0.1:9/v1").status_code == 201


# --- Encryption at rest and rotation ------------------------------------------------------------


def test_the_secret_is_encrypted_at_rest_with_the_configured_key(client, fernet_key, settings):
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    secret = make_key(make_account())
    api_key = new_api_key()
    created = register(client, secret, api_key=api_key, base_url="http://127.0.0.1:9/v1").json()
    stored = raw_secret_column(created["id"])
    assert api_key not in stored and MARKER not in stored
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {BYOKCredential._meta.db_table}")
        assert all(MARKER not in str(value) for row in cursor.fetchall() for value in row)
    plain = json.loads(Fernet(fernet_key.encode()).decrypt(stored.encode()))
    assert plain == {"api_key": api_key, "base_url": "http://127.0.0.1:9/v1"}
    with pytest.raises(InvalidToken):
        Fernet(Fernet.generate_key()).decrypt(stored.encode())


def test_without_configured_keys_a_stable_key_is_derived_from_secret_key(client, settings):
    settings.BYOK_ENCRYPTION_KEYS = []
    secret = make_key(make_account())
    api_key = new_api_key()
    created = register(client, secret, api_key=api_key).json()
    derived = byok.development_key()
    assert derived == byok.development_key()
    assert json.loads(Fernet(derived).decrypt(raw_secret_column(created["id"]).encode()))["api_key"] == api_key
    settings.SECRET_KEY = "another-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
    assert byok.development_key() != derived


def test_a_malformed_encryption_key_is_a_configuration_error_that_does_not_echo_it(settings):
    settings.BYOK_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), "not-a-fernet-key-" + MARKER]
    with pytest.raises(ImproperlyConfigured) as refused:
        byok.encryptor()
    assert "entry 2" in str(refused.value) and MARKER not in str(refused.value)


def test_rotate_byok_key_re_encrypts_with_the_newest_key_and_is_idempotent(client, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.BYOK_ENCRYPTION_KEYS = [old]
    account = make_account()
    secret = make_key(account)
    api_key = new_api_key()
    first = register(client, secret, api_key=api_key, alias="one").json()
    register(client, secret, alias="two")
    revoked = register(client, secret, alias="gone").json()
    api(client, "DELETE", f"/v1/account/byok/{revoked['id']}", secret)

    settings.BYOK_ENCRYPTION_KEYS = f"{new},{old}"  # as the environment gives it: newest first
    out = StringIO()
    call_command("rotate_byok_key", stdout=out)
    assert "Rotated 2 " in out.getvalue()
    out = StringIO()
    call_command("rotate_byok_key", stdout=out)
    assert "Rotated 0 " in out.getvalue() and "2 already" in out.getvalue()

    settings.BYOK_ENCRYPTION_KEYS = [new]
    stored = raw_secret_column(first["id"])
    assert json.loads(MultiFernet([Fernet(new)]).decrypt(stored.encode()))["api_key"] == api_key
    with pytest.raises(InvalidToken):
        Fernet(old).decrypt(stored.encode())
    assert byok.credential_for(account, "openai").api_key != api_key  # "two" is the newest
    assert byok.decrypt(stored).api_key == api_key


def test_a_credential_no_key_can_decrypt_is_reported_not_silently_replaced(client, settings):
    settings.BYOK_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    account = make_account()
    secret = make_key(account)
    created = register(client, secret).json()
    settings.BYOK_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError) as failed:
        call_command("rotate_byok_key", stdout=StringIO())
    assert created["id"] in str(failed.value)
    with pytest.raises(ApiError) as refused:
        byok.credential_for(account, "openai")
    assert refused.value.code == "BYOK_UNAVAILABLE" and refused.value.status == 503


# --- The router's lookup ------------------------------------------------------------------------


def test_credential_for_returns_the_newest_active_credential_of_the_provider(client, settings):
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    account = make_account()
    secret = make_key(account)
    assert byok.credential_for(account, "openai") is None
    older_key, newer_key = new_api_key(), new_api_key()
    register(client, secret, api_key=older_key, alias="older")
    newer = register(client, secret, api_key=newer_key, alias="newer", base_url="http://127.0.0.1:9/v1").json()
    credential = byok.credential_for(account, "openai")
    assert (credential.api_key, credential.base_url, credential.byok) == (newer_key, "http://127.0.0.1:9/v1", True)
    assert byok.credential_for(account, "openai_compatible") is None
    assert byok.credential_for(account, "sandbox") is None
    api(client, "POST", f"/v1/account/byok/{newer['id']}/revoke", secret)
    credential = byok.credential_for(account, "openai")
    assert credential.api_key == older_key and credential.base_url == settings.OPENAI_BASE_URL
    assert "api_key" not in repr(byok.Secret(api_key=older_key)) and older_key not in repr(byok.Secret(older_key))


def test_a_vendor_tests_credentials_through_its_verify_credential_hook_or_says_it_cannot(client, monkeypatch, settings):
    from gateway.vendors import VENDORS
    from gateway.vendors.base import VendorError

    secret = make_key(make_account())
    others = [name for name in byok.providers() if name not in ("openai", "openai_compatible")]
    if not others:
        pytest.skip("no non-OpenAI vendor registered")
    name = others[0]
    vendor = VENDORS[name]
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    created = register(client, secret, provider=name, base_url="http://127.0.0.1:9").json()
    monkeypatch.delattr(type(vendor), "verify_credential", raising=False)
    cannot = api(client, "POST", f"/v1/account/byok/{created['id']}/test", secret).json()
    assert cannot["ok"] is False and "not available" in cannot["error"]
    seen = []

    async def verify(credential):
        seen.append(credential)
        raise VendorError(f"{vendor.label} refused the credential {credential.api_key}")

    monkeypatch.setattr(vendor, "verify_credential", verify, raising=False)
    refused = api(client, "POST", f"/v1/account/byok/{created['id']}/test", secret).json()
    assert refused["ok"] is False and "refused the credential [redacted]" in refused["error"]
    assert seen[0].byok is True and seen[0].base_url == "http://127.0.0.1:9"


def test_fingerprints_are_short_and_never_enough_to_recover_the_key():
    key = "sk-proj-" + "A" * 30 + "wxyz"
    fp = byok.fingerprint(key)
    assert fp.startswith("sk-…wxyz #") and len(fp) <= 20 and "AAAA" not in fp
    assert byok.fingerprint(key) == fp and byok.fingerprint(key + "1") != fp
    short = byok.fingerprint("ollama")
    assert "oll" not in short and "lama" not in short and short.startswith("…#")


# --- Test call ----------------------------------------------------------------------------------


def test_the_test_call_reports_ok_with_latency_and_stores_it(client, settings):
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    secret = make_key(make_account())
    api_key = new_api_key()
    with simulated_byok_upstream() as (url, upstream):
        created = register(client, secret, api_key=api_key, base_url=url).json()
        response = api(client, "POST", f"/v1/account/byok/{created['id']}/test", secret)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ok"] is True and isinstance(body["latency_ms"], int) and body["latency_ms"] >= 0
    assert "error" not in body
    assert body["credential"]["last_test_ok"] is True and body["credential"]["last_test_at"]
    assert upstream.requests == [{"path": "/v1/models", "method": "GET"}]
    assert upstream.auth_headers == [f"Bearer {api_key}"]
    record = BYOKCredential.objects.get(public_id=created["id"])
    assert (record.last_test_ok, record.last_test_latency_ms, record.last_test_error) == (True, body["latency_ms"], "")
    listed = api(client, "GET", "/v1/account/byok", secret).json()["data"][0]
    assert listed["last_test_ok"] is True and listed["last_test_latency_ms"] == body["latency_ms"]


def test_the_test_call_reports_the_vendors_refusal_without_echoing_the_key(client, settings):
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    secret = make_key(make_account())
    with simulated_byok_upstream(ModelsScript(status=401, echo_key_in_errors=True)) as (url, upstream):
        created = register(client, secret, base_url=url).json()
        body = api(client, "POST", f"/v1/account/byok/{created['id']}/test", secret).json()
    assert body["ok"] is False and body["latency_ms"] >= 0
    assert "refused the credential" in body["error"] and "Incorrect API key provided" in body["error"]
    assert byok.REDACTED in body["error"]
    assert len(upstream.requests) == 1
    record = BYOKCredential.objects.get(public_id=created["id"])
    assert record.last_test_ok is False and "refused the credential" in record.last_test_error
    assert MARKER not in record.last_test_error


def test_the_test_call_explains_an_endpoint_that_is_not_openai_compatible_or_unreachable(client, settings):
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    secret = make_key(make_account())
    with simulated_byok_upstream(ModelsScript(models_body={"hello": "world"})) as (url, _):
        created = register(client, secret, alias="odd", base_url=url).json()
        odd = api(client, "POST", f"/v1/account/byok/{created['id']}/test", secret).json()
    assert odd["ok"] is False and "base_url" in odd["error"]
    gone = register(client, secret, alias="gone", base_url="http://127.0.0.1:9/v1").json()
    unreachable = api(client, "POST", f"/v1/account/byok/{gone['id']}/test", secret).json()
    assert unreachable["ok"] is False and "unreachable" in unreachable["error"]
    with simulated_byok_upstream(ModelsScript(models=["m" * 100] * 12_000)) as (url, _):
        endless = register(client, secret, alias="endless", base_url=url).json()
        too_big = api(client, "POST", f"/v1/account/byok/{endless['id']}/test", secret).json()
    assert too_big["ok"] is False and "more than" in too_big["error"]
    # The address is checked again at use: registered while allowed, refused once it is not.
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = False
    with simulated_byok_upstream() as (url, upstream):
        BYOKCredential.objects.filter(public_id=endless["id"]).update(
            secret_encrypted=byok.encrypt(byok.Secret(new_api_key(), url))
        )
        rechecked = api(client, "POST", f"/v1/account/byok/{endless['id']}/test", secret).json()
    assert rechecked["ok"] is False and "private address" in rechecked["error"] and upstream.requests == []


# --- Revoke -------------------------------------------------------------------------------------


def test_revoke_by_delete_or_post_erases_the_secret_and_frees_the_alias(client):
    account = make_account()
    secret = make_key(account)
    one = register(client, secret, alias="one").json()
    two = register(client, secret, alias="two").json()
    deleted = api(client, "DELETE", f"/v1/account/byok/{one['id']}", secret)
    assert deleted.status_code == 200 and deleted.json()["revoked_at"]
    posted = api(client, "POST", f"/v1/account/byok/{two['id']}/revoke", secret)
    assert posted.status_code == 200 and posted.json()["revoked_at"]
    again = api(client, "POST", f"/v1/account/byok/{two['id']}/revoke", secret)
    assert again.status_code == 200 and again.json()["revoked_at"] == posted.json()["revoked_at"]
    assert set(BYOKCredential.objects.values_list("secret_encrypted", flat=True)) == {""}
    assert byok.credential_for(account, "openai") is None
    assert api(client, "GET", "/v1/account/byok", secret).json()["data"] == []
    everything = api(client, "GET", "/v1/account/byok?include_revoked=true", secret).json()["data"]
    assert {c["id"] for c in everything} == {one["id"], two["id"]}
    tested = api(client, "POST", f"/v1/account/byok/{one['id']}/test", secret)
    assert tested.status_code == 409 and tested.json()["error"]["code"] == "BYOK_REVOKED"
    assert register(client, secret, alias="one").status_code == 201


# --- Isolation ----------------------------------------------------------------------------------


def test_another_account_can_neither_see_nor_use_nor_revoke_a_credential(client, settings):
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    alice, bob = make_account("alice@example.com", USD), make_account("bob@example.com", USD)
    alice_secret, bob_secret = make_key(alice), make_key(bob)
    alice_key = new_api_key()
    with simulated_byok_upstream() as (url, upstream):
        created = register(client, alice_secret, api_key=alice_key, base_url=url).json()
        assert api(client, "GET", "/v1/account/byok", bob_secret).json()["data"] == []
        for method, path in [
            ("GET", f"/v1/account/byok/{created['id']}"),
            ("POST", f"/v1/account/byok/{created['id']}/test"),
            ("POST", f"/v1/account/byok/{created['id']}/revoke"),
            ("DELETE", f"/v1/account/byok/{created['id']}"),
        ]:
            response = api(client, method, path, bob_secret)
            assert response.status_code == 404, (method, path)
            assert response.json()["error"]["code"] == "NOT_FOUND"
        assert upstream.requests == []

        # Bob's chat calls never use Alice's key: without his own or a platform key, none is used.
        refused = api(client, "POST", "/v1/ai/chat", bob_secret, {"model": "gpt-4o-mini", "messages": "hi"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "VENDOR_NOT_CONFIGURED"
        settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = "sk-platform-pool", url
        served = api(client, "POST", "/v1/ai/chat", bob_secret, {"model": "gpt-4o-mini", "messages": "hi"})
        assert served.status_code == 200, served.content
        assert "byok" not in served.json()["_metadata"]
        assert upstream.auth_headers == ["Bearer sk-platform-pool"]
        mine = api(client, "POST", "/v1/ai/chat", alice_secret, {"model": "gpt-4o-mini", "messages": "hi"})
        assert mine.json()["_metadata"]["byok"] is True
        assert upstream.auth_headers == ["Bearer sk-platform-pool", f"Bearer {alice_key}"]
    assert BYOKCredential.objects.get().revoked_at is None


# --- Chat through BYOK --------------------------------------------------------------------------


def test_a_chat_call_goes_through_the_callers_own_key(client, settings):
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    api_key = new_api_key()
    with simulated_upstream() as (url, upstream):
        assert register(client, secret, api_key=api_key, base_url=url).status_code == 201
        response = api(client, "POST", "/v1/ai/chat", secret, {"model": "gpt-4o-mini", "messages": "hi"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["content"] == "Hello from the simulated upstream."
    assert body["_metadata"]["byok"] is True and body["_metadata"]["vendor"] == "openai"
    assert upstream.auth_headers == [f"Bearer {api_key}"]
    assert upstream.requests[0]["path"] == "/v1/chat/completions"
    record = UsageRecord.objects.get(request_id=body["_metadata"]["request_id"])
    assert record.byok is True and record.vendor == "openai"


# --- Console ------------------------------------------------------------------------------------


def test_the_console_registers_lists_tests_and_revokes(settings):
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    account = make_account()
    browser = signed_in_client(account)
    page = browser.get("/byok/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Register a credential" in html and 'type="password"' in html and "Not built yet" not in html
    assert 'value="openai"' in html and 'value="sandbox"' not in html

    api_key = new_api_key()
    with simulated_byok_upstream() as (url, upstream):
        created = browser.post(
            "/byok/", {"provider": "openai", "alias": "console key", "api_key": api_key, "base_url": url}
        )
        assert created.status_code == 302 and created["Location"] == "/byok/"
        record = BYOKCredential.objects.get()
        listed = browser.get("/byok/").content.decode()
        assert "console key" in listed and record.fingerprint in listed and "Registered" in listed
        assert f'action="/byok/{record.public_id}/revoke/" data-confirm=' in listed

        tested = browser.post(f"/byok/{record.public_id}/test/", follow=True)
        assert "works" in tested.content.decode() and "pill-ok" in tested.content.decode()
        assert upstream.auth_headers == [f"Bearer {api_key}"]

    revoked = browser.post(f"/byok/{record.public_id}/revoke/", follow=True)
    assert "revoked" in revoked.content.decode() and record.fingerprint not in revoked.content.decode()
    record.refresh_from_db()
    assert record.revoked_at is not None and record.secret_encrypted == ""
    assert browser.get(f"/byok/{record.public_id}/revoke/").status_code == 405


def test_the_console_shows_field_errors_and_never_renders_the_key_back(client):
    account = make_account()
    browser = signed_in_client(account)
    api_key = new_api_key()
    refused = browser.post(
        "/byok/", {"provider": "openai", "alias": "x", "api_key": api_key, "base_url": "http://127.0.0.1:9/v1"}
    )
    assert refused.status_code == 400
    html = refused.content.decode()
    assert "field-error" in html and "private address" in html
    assert 'value="http://127.0.0.1:9/v1"' in html  # the base URL is kept, the key is not
    missing = browser.post("/byok/", {"provider": "acme", "alias": "", "api_key": "", "base_url": ""})
    assert missing.status_code == 400 and missing.content.decode().count("field-error") >= 3
    assert browser.post("/byok/", {"provider": "openai", "alias": "dup", "api_key": new_api_key()}).status_code == 302
    dup = browser.post("/byok/", {"provider": "openai", "alias": "dup", "api_key": new_api_key()})
    assert dup.status_code == 400 and "already have an active credential" in dup.content.decode()
    assert BYOKCredential.objects.count() == 1


def test_the_console_is_scoped_to_the_signed_in_account(client):
    alice, bob = make_account("alice@example.com"), make_account("bob@example.com")
    created = register(client, make_key(alice), alias="alice's").json()
    bob_browser = signed_in_client(bob)
    assert "alice&#x27;s" not in bob_browser.get("/byok/").content.decode()
    assert bob_browser.post(f"/byok/{created['id']}/test/").status_code == 404
    assert bob_browser.post(f"/byok/{created['id']}/revoke/").status_code == 404
    assert BYOKCredential.objects.get().revoked_at is None
    assert Client().get("/byok/").status_code == 302  # signed out: to the login page


# --- What a BYOK call costs ---------------------------------------------------------------------


def test_a_byok_call_costs_only_the_platform_fee(client, settings):
    from decimal import Decimal

    from gateway import catalog
    from gateway.models import CatalogModel

    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    settings.BYOK_PLATFORM_FEE_PERCENT = Decimal("10")
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    with simulated_upstream() as (url, _):
        assert register(client, secret, api_key=new_api_key(), base_url=url).status_code == 201
        body = api(client, "POST", "/v1/ai/chat", secret, {"model": "gpt-4o-mini", "messages": "hi"}).json()
    entry = CatalogModel.objects.get(vendor="openai", model_id="gpt-4o-mini", capability="chat")
    full = catalog.token_cost_nano(entry, body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"])
    record = UsageRecord.objects.get(request_id=body["_metadata"]["request_id"])
    assert record.cost_nano == -(-full // 10) > 0  # a tenth of the catalog price, rounded up
    assert ledger.get_balance(account).balance_nano == USD - record.cost_nano


def test_with_no_platform_fee_a_byok_call_needs_no_credit(client, settings):
    from decimal import Decimal

    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    settings.BYOK_PLATFORM_FEE_PERCENT = Decimal("0")
    account = make_account(credit_nano=0)
    secret = make_key(account)
    with simulated_upstream() as (url, _):
        assert register(client, secret, api_key=new_api_key(), base_url=url).status_code == 201
        response = api(client, "POST", "/v1/ai/chat", secret, {"model": "gpt-4o-mini", "messages": "hi"})
    assert response.status_code == 200 and response.json()["_metadata"]["cost_usd"] == "0.00"
