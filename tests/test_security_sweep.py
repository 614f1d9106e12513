"""Issue #7's sweep: tenant isolation on every route of the URL resolver, CSRF on every console
form and POST route, signed file URLs. Websockets and logs are in tests/test_security_channels_logs.py.

Routes are enumerated from `infrai/urls.py`, so a route added later is swept without editing
this file; a URL parameter nobody has classified fails `test_every_url_parameter_is_classified`.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import pytest
import time_machine
from django.apps import apps
from django.contrib.sessions.models import Session
from django.core import mail, signing
from django.db.models import Model
from django.http import HttpResponseBase
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern
from social_django.models import UserSocialAuth

from batches.models import Batch
from batches.tasks import run_batch
from billing.models import TopUp, UsageRecord
from console import accounts, keys
from console.models import Account
from gateway import byok, files
from tests.factories import bearer, make_account, make_key, signed_in_client
from videos import video
from videos.models import VideoJob

pytestmark = pytest.mark.django_db
USD = 10**9


# --- The routes, as the resolver sees them ------------------------------------------------------


@dataclass(frozen=True)
class Route:
    route: str  # "v1/account/keys/<str:key_id>"
    params: tuple[str, ...]
    callback: Callable[..., Any]

    @property
    def is_api(self) -> bool:
        return self.route.startswith("v1/")

    def url(self, values: dict[str, str]) -> str:
        def fill(match: re.Match[str]) -> str:
            return values[match.group(1)]

        return "/" + re.sub(r"<(?:\w+:)?(\w+)>", fill, self.route)

    def __str__(self) -> str:
        return self.route


def _pattern_params(pattern: Any) -> tuple[str, ...]:
    if isinstance(pattern, RoutePattern):
        return tuple(pattern.converters)
    return tuple(pattern.regex.groupindex)


def _walk(patterns: list[Any], prefix: str = "", params: tuple[str, ...] = ()) -> Iterator[Route]:
    for entry in patterns:
        own = params + _pattern_params(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), own)
        elif isinstance(entry, URLPattern):
            yield Route(prefix + str(entry.pattern), own, entry.callback)


# The Django admin is staff-only and has its own regex routes: test_the_admin_refuses_an_outsider.
ADMIN_PREFIX = "admin/"
ROUTES = [r for r in _walk(get_resolver().url_patterns) if not r.route.startswith(ADMIN_PREFIX)]

# URL parameters that name an object of an account: every route with one is swept below.
OBJECT_PARAMS = {"key_id", "byok_id", "project_id", "batch_id", "job_id", "topup_id", "association_id"}
# URL parameters that name no account's object, and where each is covered instead.
NOT_OBJECT_PARAMS = {
    "token": "a single-use or signed token (magic links, signed files): test_signed_files_* and the magic-link tests",
    "path": "the /v1 catch-all that answers 404 NOT_FOUND for unknown routes",
    "backend": "the name of a social sign-in backend (google-oauth2, github)",
}
OBJECT_ROUTES = [r for r in ROUTES if OBJECT_PARAMS & set(r.params)]
PLAIN_ROUTES = [r for r in ROUTES if not r.params]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# Library routes that answer an outsider with a redirect, not a 404: still changing nothing.
REDIRECT_NOT_404 = {
    "auth/disconnect/<str:backend>/<int:association_id>/": "social_django looks the association up among the "
    "signed-in user's only, and sends an outsider back to sign-in",
}
# What a POST sends: enough fields that no view stops at a missing one before its lookup.
API_BODY = {"retention_days": 1, "days": 1, "label": "mallory", "idempotency_key": "mallory-1", "format": "jsonl"}
FORM_BODY = {"name": "Mallory was here", "label": "mallory", "next": "/", "alias": "mallory", "api_key": "x"}


def test_every_url_parameter_is_classified():
    unknown = {
        f"{param} (in {route})"
        for route in ROUTES
        for param in route.params
        if param not in OBJECT_PARAMS and param not in NOT_OBJECT_PARAMS
    }
    assert not unknown, (
        "New URL parameters: add each to OBJECT_PARAMS in tests/test_security_sweep.py (and a factory in "
        "make_world) if it names an account's object, or to NOT_OBJECT_PARAMS with where it is tested: "
        + ", ".join(sorted(unknown))
    )


def test_the_sweep_sees_every_family_of_routes():
    """Guards the enumeration itself: if it broke, every sweep below would pass on nothing."""
    swept = {str(r) for r in OBJECT_ROUTES}
    for expected in [
        "keys/<str:key_id>/revoke/",
        "projects/<str:project_id>/rename/",
        "byok/<str:byok_id>/test/",
        "billing/topup/<str:topup_id>/success/",
        "v1/account/keys/<str:key_id>",
        "v1/account/byok/<str:byok_id>/revoke",
        "v1/ai/batch/cancel/<str:batch_id>",
        "v1/video/delete/<str:job_id>",
    ]:
        assert expected in swept
    assert {"v1/ai/batch/list", "v1/video/list", "keys/", "billing/history.csv"} <= {str(r) for r in PLAIN_ROUTES}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The sweep calls routes that reach vendors: fail if any call looks up a host off this machine."""
    looked_up: list[str] = []
    original = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "localhost", "testserver") and not str(host).startswith(("127.", "::1")):
            looked_up.append(str(host))
            raise socket.gaierror(f"{host}: the security sweep stays on loopback")
        return original(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    yield
    assert not looked_up, f"the sweep tried to reach {looked_up}"


# --- Two accounts, and everything account A owns ------------------------------------------------


@dataclass
class World:
    alice: Account
    bob: Account
    alice_secret: str
    bob_secret: str
    ids: dict[str, str] = field(default_factory=dict)  # URL parameter -> one of Alice's objects
    names: list[str] = field(default_factory=list)  # names and labels that only Alice's objects carry
    markers: list[str] = field(default_factory=list)  # those and the public ids of her objects


def _api(client: Client, method: str, url: str, secret: str, body: dict[str, Any] | None = None) -> HttpResponseBase:
    data = json.dumps(body) if body is not None else ""
    return client.generic(method, url, data, content_type="application/json", **bearer(secret))


def _form(client: Client, method: str, url: str, body: dict[str, Any] | None = None) -> HttpResponseBase:
    if method == "GET":
        return client.get(url)
    data = urlencode(body or {})
    return client.generic(method, url, data, content_type="application/x-www-form-urlencoded")


def _content(response: HttpResponseBase) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)  # type: ignore[attr-defined]
    return response.content  # type: ignore[attr-defined]


@pytest.fixture
def world(settings, tmp_path) -> World:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    alice = make_account("alice@example.com", credit_nano=USD)
    bob = make_account("bob@example.com", credit_nano=USD)
    found = World(alice, bob, make_key(alice), make_key(bob))
    client = Client()

    project = accounts.create_project(alice, "Zeta alice project")
    key = keys.create_key(project, label="zeta-alice-key").record
    # A closed loopback port: the owner's control call to the test route must never reach a real vendor.
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    credentials = {"api_key": "sk-alice-" + "q" * 30, "base_url": "http://127.0.0.1:9/v1"}
    credential = byok.register(alice, byok.clean_registration("openai", "zeta-alice-byok", credentials))
    submitted = _api(
        client,
        "POST",
        "/v1/ai/batch/submit",
        found.alice_secret,
        {"requests": [{"capability": "embed", "body": {"input": ["zeta"], "model": "sandbox-embed"}}]},
    )
    assert submitted.status_code == 200, submitted.content
    generated = _api(
        client,
        "POST",
        "/v1/video/generate",
        found.alice_secret,
        {"prompt": "a zeta kite over hills", "model": "sandbox-video"},
    )
    assert generated.status_code == 202, generated.content
    topup = TopUp.objects.create(account=alice, amount_nano=10 * USD)
    association = UserSocialAuth.objects.create(user=alice.owner, provider="github", uid="zeta-alice-github")

    found.ids = {
        "project_id": project.public_id,
        "key_id": key.public_id,
        "byok_id": credential.public_id,
        "batch_id": submitted.json()["batch_id"],
        "job_id": generated.json()["job_id"],
        "topup_id": topup.public_id,
        "association_id": str(association.pk),
    }
    assert set(found.ids) == OBJECT_PARAMS, "every object parameter needs one of Alice's objects here"
    run_batch.call(found.ids["batch_id"])  # so Alice has usage, ledger entries and results to leak
    usage = list(UsageRecord.objects.filter(account=alice).values_list("request_id", flat=True))
    assert usage
    public_ids = [v for k, v in found.ids.items() if k != "association_id"] + usage
    found.names = ["Zeta alice project", "zeta-alice-key", "zeta-alice-byok", "zeta-alice-github", "alice@"]
    found.markers = [*public_ids, *found.names]
    found.ids["backend"] = "github"
    return found


def owned_rows(account: Account) -> dict[str, list[dict[str, Any]]]:
    """Every row of every model that belongs to `account`, directly or through a project or batch."""
    owners = {
        "account": {"account": account},
        "project": {"project__account": account},
        "batch": {"batch__account": account},
        "user": {"user": account.owner},
    }
    rows: dict[str, list[dict[str, Any]]] = {}
    for model in apps.get_models():
        names = {f.name for f in model._meta.get_fields()}
        for field_name, lookup in owners.items():
            if field_name in names and model._meta.get_field(field_name).is_relation:
                rows[model._meta.label] = list(model.objects.filter(**lookup).order_by("pk").values())
                break
    rows["console.Account"] = list(Account.objects.filter(pk=account.pk).values())
    return rows


def all_rows() -> dict[str, list[dict[str, Any]]]:
    """The whole database but sessions (a request may touch its own session)."""
    models: list[type[Model]] = [m for m in apps.get_models() if m is not Session]
    return {m._meta.label: list(m.objects.order_by("pk").values()) for m in models}


# --- Tenant isolation: every route with an object id -------------------------------------------


def _call_as(route: Route, method: str, url: str, *, secret: str, session: Client) -> HttpResponseBase:
    if route.is_api:
        return _api(Client(), method, url, secret, API_BODY if method != "GET" else None)
    return _form(session, method, url, FORM_BODY)


@pytest.mark.parametrize("route", OBJECT_ROUTES, ids=str)
def test_an_outsider_gets_404_on_every_method_of_every_object_route(world, route):
    url = route.url(world.ids)
    bob_session = signed_in_client(world.bob)
    before = owned_rows(world.alice)
    accepted = []
    for method in METHODS:
        response = _call_as(route, method, url, secret=world.bob_secret, session=bob_session)
        if response.status_code == 405:
            continue
        accepted.append(method)
        body = _content(response).decode(errors="replace")
        expected = 302 if route.route in REDIRECT_NOT_404 else 404
        assert response.status_code == expected, f"{method} {url} as another account answered {response.status_code}"
        if expected == 302:
            pass
        elif route.is_api or response["Content-Type"].startswith("application/json"):
            assert response.json()["error"]["code"] == "NOT_FOUND"  # type: ignore[attr-defined]
        else:
            assert response["Content-Type"].startswith("text/html")
        for marker in world.names:
            assert marker not in body, f"{method} {url} showed {marker!r} to another account"
    assert accepted, f"{url} answered 405 to every method"
    assert owned_rows(world.alice) == before, f"another account's calls changed Alice's objects through {route}"

    # The same call as Alice finds her object: the 404s above were about ownership, not the id.
    method = "GET" if "GET" in accepted else accepted[0]
    own = _call_as(route, method, url, secret=world.alice_secret, session=signed_in_client(world.alice))
    assert own.status_code != 404, f"{method} {url} as its owner answered 404: the sweep used a wrong id"


@pytest.mark.parametrize("route", PLAIN_ROUTES, ids=str)
def test_no_page_or_list_shows_another_accounts_objects(world, route):
    url = route.url({})
    if route.is_api:
        response = _api(Client(), "GET", url, world.bob_secret)
    else:
        response = signed_in_client(world.bob).get(url)
    assert response.status_code < 500
    body = _content(response).decode(errors="replace")
    for marker in world.markers:
        assert marker not in body, f"GET {url} showed another account's {marker!r}"


def test_the_lists_do_show_their_owner_what_the_outsider_does_not_see(world):
    """The control for the sweep above: these lists show Alice's objects to Alice."""
    alice = signed_in_client(world.alice)
    a_usage = UsageRecord.objects.filter(account=world.alice).values_list("request_id", flat=True)[0]
    assert a_usage in alice.get("/usage/").content.decode()
    alice.post(f"/projects/{world.ids['project_id']}/select/")
    for url, marker in [
        ("/projects/", "Zeta alice project"),
        ("/keys/", "zeta-alice-key"),
        ("/byok/", "zeta-alice-byok"),
        ("/billing/", "$10.00"),
    ]:
        assert marker in alice.get(url).content.decode(), url
    for url, marker in [
        ("/v1/account/byok", world.ids["byok_id"]),
        ("/v1/ai/batch/list", world.ids["batch_id"]),
        ("/v1/video/list", world.ids["job_id"]),
    ]:
        assert marker in _api(Client(), "GET", url, world.alice_secret).content.decode(), url


def test_the_admin_refuses_a_signed_in_outsider(world):
    bob = signed_in_client(world.bob)
    for url in ["/admin/", "/admin/console/projectkey/", f"/admin/console/projectkey/{world.alice.pk}/change/"]:
        response = bob.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url


# --- Signed file URLs -------------------------------------------------------------------------


def _stored_file(account: Account) -> tuple[str, str]:
    name = files.save(account.public_id, "images", b"alice's private picture", "png")
    url, _ = files.signed_url("http://testserver", name, ttl_seconds=60)
    return name, url.removeprefix("http://testserver")


def _fetch(path: str) -> HttpResponseBase:
    return Client().get(path)


def test_signed_files_serve_the_signed_name_only_until_they_expire(world):
    _, path = _stored_file(world.alice)
    served = _fetch(path)
    assert served.status_code == 200 and _content(served) == b"alice's private picture"
    with time_machine.travel(time.time() + 61, tick=False):
        expired = _fetch(path)
    assert expired.status_code == 404 and expired.json()["error"]["code"] == "LINK_EXPIRED"  # type: ignore[attr-defined]


def test_signed_files_refuse_tampered_forged_and_guessed_tokens(world, settings):
    name, path = _stored_file(world.alice)
    token = path.removeprefix("/files/")
    payload = {"p": name, "e": int(time.time()) + 60}
    attempts = {
        "one character changed": token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:],
        "the signature cut off": token.rsplit(":", 1)[0],
        "the right name under another salt": signing.dumps(payload, compress=True),
        "the right name under another key": signing.dumps(payload, key="not-the-secret-key", salt=files.SALT),
        "the stored name itself": name,
        "a path outside the store": signing.dumps({"p": "../../etc/passwd", "e": payload["e"]}, salt=files.SALT),
    }
    for what, forged in attempts.items():
        response = _fetch(f"/files/{forged}")
        assert response.status_code in (400, 404), what
        assert _content(response) != b"alice's private picture", what
        if "/" not in forged and what != "a path outside the store":  # that one Django refuses as suspicious
            assert response.json()["error"]["code"] == "LINK_EXPIRED", what  # type: ignore[attr-defined]


def test_another_accounts_export_and_video_cannot_be_reached_through_the_api(world):
    """Alice's batch export and video links come only from routes that answer Bob 404."""
    bob = world.bob_secret
    batch_id, job_id = world.ids["batch_id"], world.ids["job_id"]
    assert _api(Client(), "POST", f"/v1/ai/batch/export/{batch_id}", bob, {"format": "jsonl"}).status_code == 404
    assert _api(Client(), "GET", f"/v1/video/download_url/{job_id}", bob).status_code == 404
    assert not Batch.objects.get(public_id=batch_id).exports.exists()
    assert VideoJob.objects.get(public_id=job_id).deleted_at is None


# --- CSRF ---------------------------------------------------------------------------------------


class _Forms(HTMLParser):
    """Each <form method="post"> of a page with whether it carries the CSRF token, and hx-post elements."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self.hx_posts = 0
        self.body_hx_headers: str | None = None  # None: a fragment, swapped into a page that has the header

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body_hx_headers = attr.get("hx-headers", "")
        if "hx-post" in attr:
            self.hx_posts += 1
        if tag == "form" and attr.get("method", "get").lower() == "post":
            self._open = {"action": attr.get("action", ""), "csrf": False}
            self.forms.append(self._open)
        if tag == "input" and self._open is not None and attr.get("name") == "csrfmiddlewaretoken":
            self._open["csrf"] = bool(attr.get("value"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


CONSOLE_ROUTES = [r for r in ROUTES if not r.is_api and not r.route.startswith("auth/")]


def _magic_token() -> str:
    Client().post("/login/", {"email": "carol@example.com"})
    return re.search(r"/login/magic/([^/\s]+)/", mail.outbox[-1].body).group(1)  # type: ignore[union-attr]


def _console_values(world: World) -> dict[str, str]:
    _, file_path = _stored_file(world.alice)
    return {**world.ids, "token": _magic_token(), "backend": "github", "file": file_path}


def _console_url(route: Route, values: dict[str, str]) -> str:
    if route.route.startswith("files/"):
        return values["file"]
    return route.url(values)


def test_every_post_form_on_every_console_page_carries_the_csrf_token(world):
    values = _console_values(world)
    alice = signed_in_client(world.alice)
    pages_with_forms = set()
    for route in CONSOLE_ROUTES:
        url = _console_url(route, values)
        for client in (alice, Client()):
            response = client.get(url)
            if response.status_code != 200 or not response.get("Content-Type", "").startswith("text/html"):
                continue
            parser = _Forms()
            parser.feed(_content(response).decode())
            missing = [f["action"] or url for f in parser.forms if not f["csrf"]]
            assert not missing, f"{url} has POST forms without csrfmiddlewaretoken: {missing}"
            if parser.hx_posts and parser.body_hx_headers is not None:
                assert "X-CSRFToken" in parser.body_hx_headers, f"{url} has hx-post without the CSRF header"
            if parser.forms:
                pages_with_forms.add(route.route)
    assert {"login/", "keys/", "byok/", "projects/", "billing/", "login/magic/<str:token>/"} <= pages_with_forms


# Routes that take POSTs from elsewhere and authenticate them their own way.
CSRF_EXEMPT = {
    "billing/stripe/webhook/": "Stripe signs its webhooks",
    "auth/complete/<str:backend>/": "the identity provider posts back; social_django checks its state parameter",
}


def test_the_csrf_exemptions_are_exactly_the_webhook_the_sign_in_callback_and_the_api():
    exempt = {r.route for r in ROUTES if getattr(r.callback, "csrf_exempt", False)}
    api_routes = {r.route for r in ROUTES if r.is_api}
    assert exempt == set(CSRF_EXEMPT) | api_routes


@pytest.mark.parametrize("route", [r for r in CONSOLE_ROUTES if r.route not in CSRF_EXEMPT], ids=str)
def test_a_console_post_without_the_csrf_token_is_a_403_that_changes_nothing(world, route):
    values = _console_values(world)
    url = _console_url(route, values)
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.alice.owner)
    client.get("/keys/")  # a CSRF cookie, as a browser would hold; the forged POST lacks the form field
    before = all_rows()
    body = {**FORM_BODY, "email": "carol@example.com", "amount_usd": "10", "provider": "openai"}
    response = client.post(url, body)
    assert response.status_code == 403, f"POST {url} without a CSRF token answered {response.status_code}"
    assert all_rows() == before


# --- Redirects ----------------------------------------------------------------------------------

OFF_SITE = ["https://evil.example/phish", "//evil.example/phish", "/\\evil.example/phish"]


@pytest.mark.parametrize("route", CONSOLE_ROUTES, ids=str)
def test_no_console_route_redirects_off_site_where_a_parameter_says(world, route):
    url = _console_url(route, _console_values(world))
    alice = signed_in_client(world.alice)
    for target in OFF_SITE:
        params = {"next": target, "return_to": target, "return_path": target}
        for response in (alice.get(url, params), alice.post(url, {**FORM_BODY, **params})):
            location = response.get("Location", "")
            assert "evil.example" not in location, f"{url} redirected to {location}"


# --- Idempotency keys ---------------------------------------------------------------------------

CREATES = [
    ("/v1/account/keys", {"label": "same"}, "id", 201),
    (
        "/v1/account/byok",
        {"provider": "cohere", "alias": "same", "credentials": {"api_key": "co-" + "k" * 30}},
        "id",
        201,
    ),
    (
        "/v1/ai/batch/submit",
        {"requests": [{"capability": "embed", "body": {"input": ["a"], "model": "sandbox-embed"}}]},
        "batch_id",
        200,
    ),
    ("/v1/video/generate", {"prompt": "a kite"}, "job_id", 202),
]


@pytest.mark.parametrize(("path", "body", "id_field", "created"), CREATES, ids=[c[0] for c in CREATES])
def test_an_idempotency_key_another_account_used_replays_nothing_of_theirs(world, path, body, id_field, created):
    """Bob sending the idempotency key Alice used gets his own new object, never her stored answer."""
    sent = {**body, "idempotency_key": "shared-key-1"}
    alices = _api(Client(), "POST", path, world.alice_secret, sent)
    assert alices.status_code == created, alices.content
    before = owned_rows(world.alice)
    bobs = _api(Client(), "POST", path, world.bob_secret, sent)
    assert bobs.status_code == created, bobs.content
    assert bobs.json()[id_field] != alices.json()[id_field]  # type: ignore[attr-defined]
    assert bobs.json().get("replayed") in (None, False)  # type: ignore[attr-defined]
    assert owned_rows(world.alice) == before
    again = _api(Client(), "POST", path, world.alice_secret, sent)
    assert again.json()[id_field] == alices.json()[id_field]  # type: ignore[attr-defined]


def _tampered(path: str) -> str:
    return path[:-3] + ("A" if path[-3] != "A" else "B") + path[-2:]


def test_real_export_and_video_links_refuse_tampering_and_expire(world, settings):
    settings.VIDEO_SANDBOX_RENDER_FPS = 0
    alice = world.alice_secret
    exported = _api(Client(), "POST", f"/v1/ai/batch/export/{world.ids['batch_id']}", alice, {"format": "jsonl"})
    assert exported.status_code == 200, exported.content
    assert video.run_job(world.ids["job_id"]) == "succeeded"
    link = _api(Client(), "GET", f"/v1/video/download_url/{world.ids['job_id']}", alice)
    assert link.status_code == 200, link.content
    for url in (exported.json()["download_url"], link.json()["url"]):  # type: ignore[attr-defined]
        path = url.removeprefix("http://testserver")
        assert _fetch(path).status_code == 200
        assert _fetch(_tampered(path)).status_code == 404
        with time_machine.travel(time.time() + settings.DOWNLOAD_URL_TTL_SECONDS + 1, tick=False):
            assert _fetch(path).status_code == 404
