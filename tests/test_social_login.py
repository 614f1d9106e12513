"""Google and GitHub sign-in, driven through the real social-auth views with the providers mocked.

Each sign-in is what a browser does: POST /auth/login/<backend>/ (the login page's form), follow
the provider's redirect back to GET /auth/complete/<backend>/?code=...&state=<state it was given>,
then look at the page it lands on. `responses` stands in for the provider's token and user-info
endpoints, as in social-core's own backend tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from django.http import HttpResponse
from django.test import Client
from social_django.models import UserSocialAuth

from billing import ledger
from billing.models import EntryKind, LedgerEntry
from console.models import Account, User
from tests.factories import make_account

pytestmark = pytest.mark.django_db

GITHUB_AUTHORIZE_URL = "https://github.com/login/oauth/authorize"
GITHUB_TOKEN_URL = "https://github.com/login/oauth/access_token"
GITHUB_USER_URL = "https://api.github.com/user"
GITHUB_EMAILS_URL = "https://api.github.com/user/emails"
GOOGLE_AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/auth"
GOOGLE_TOKEN_URL = "https://accounts.google.com/o/oauth2/token"
GOOGLE_USERINFO_URL = "https://www.googleapis.com/oauth2/v3/userinfo"

TWO_DOLLARS_NANO = 2_000_000_000
NO_VERIFIED_GITHUB_EMAIL = "Your GitHub account has no verified e-mail address, so we cannot sign you in with it."
NO_VERIFIED_GOOGLE_EMAIL = "Your Google account has no verified e-mail address, so we cannot sign you in with it."
# An error message as base.html shows it (its classes hold the message's tags, "error" among them).
ERROR_FLASH = r'<div class="flash [^"]*\berror\b[^"]*" role="status">'


@pytest.fixture(autouse=True)
def _providers_configured(settings: Any) -> None:
    settings.SOCIAL_AUTH_GITHUB_KEY = "github-client-id"
    settings.SOCIAL_AUTH_GITHUB_SECRET = "github-client-secret"
    settings.SOCIAL_AUTH_GOOGLE_OAUTH2_KEY = "google-client-id"
    settings.SOCIAL_AUTH_GOOGLE_OAUTH2_SECRET = "google-client-secret"


@pytest.fixture
def provider() -> Iterator[responses.RequestsMock]:
    """Every outgoing HTTP call goes here; an unmocked URL fails the request."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


# --- Provider stand-ins -------------------------------------------------------------------------


def github_says(
    mock: responses.RequestsMock,
    *,
    uid: int = 1001,
    login: str = "octocat",
    profile_email: str | None = None,
    emails: list[dict[str, Any]] | None = None,
) -> None:
    mock.reset()
    mock.add(responses.POST, GITHUB_TOKEN_URL, json={"access_token": f"gho_{uid}", "token_type": "bearer"})
    mock.add(
        responses.GET,
        GITHUB_USER_URL,
        json={"id": uid, "login": login, "name": "Octo Cat", "email": profile_email},
    )
    mock.add(responses.GET, GITHUB_EMAILS_URL, json=emails if emails is not None else [])


def primary(email: str, *, verified: bool = True) -> dict[str, Any]:
    return {"email": email, "primary": True, "verified": verified, "visibility": "private"}


def secondary(email: str, *, verified: bool = True) -> dict[str, Any]:
    return {"email": email, "primary": False, "verified": verified, "visibility": None}


def google_says(mock: responses.RequestsMock, *, sub: str = "108001", email: str, email_verified: Any) -> None:
    mock.reset()
    mock.add(
        responses.POST,
        GOOGLE_TOKEN_URL,
        json={"access_token": f"ya29.{sub}", "token_type": "Bearer", "expires_in": 3599},
    )
    mock.add(
        responses.GET,
        GOOGLE_USERINFO_URL,
        json={"sub": sub, "email": email, "email_verified": email_verified, "name": "Gee Person"},
    )


# --- The browser's side -------------------------------------------------------------------------


def start_sign_in(client: Client, backend: str, authorize_url: str) -> str:
    """Press "Continue with ..." and return the `state` the provider is sent."""
    response = client.post(f"/auth/login/{backend}/")
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == authorize_url
    query = parse_qs(location.query)
    assert query["redirect_uri"] == [f"http://testserver/auth/complete/{backend}/"]
    return query["state"][0]


def come_back(client: Client, backend: str, state: str | None) -> HttpResponse:
    """The provider's redirect back to us, followed to the page the user ends on."""
    params = {"code": "provider-code"} if state is None else {"code": "provider-code", "state": state}
    return client.get(f"/auth/complete/{backend}/", params, follow=True)


def sign_in_with_github(client: Client) -> HttpResponse:
    return come_back(client, "github", start_sign_in(client, "github", GITHUB_AUTHORIZE_URL))


def sign_in_with_google(client: Client) -> HttpResponse:
    return come_back(client, "google-oauth2", start_sign_in(client, "google-oauth2", GOOGLE_AUTHORIZE_URL))


def final_path(response: HttpResponse) -> str:
    return response.redirect_chain[-1][0] if response.redirect_chain else response.request["PATH_INFO"]


def page(response: HttpResponse) -> str:
    return response.content.decode()


def shown_balance(response: HttpResponse) -> str:
    match = re.search(r'data-testid="balance">([^<]+)<', page(response))
    assert match, "the page shows no balance"
    return match.group(1)


def assert_signed_into_dashboard(response: HttpResponse, email: str) -> None:
    assert response.status_code == 200
    assert final_path(response) == "/"
    assert f'<span class="email">{email}</span>' in page(response)


def assert_refused_on_login_page(response: HttpResponse, client: Client, message: str) -> None:
    assert response.status_code == 200
    assert final_path(response) == "/login/"
    assert re.search(ERROR_FLASH + re.escape(message), page(response)), "the refusal is explained on the page"
    assert "Continue with GitHub" in page(response), "the refusal lands on the sign-in page"
    dashboard = client.get("/")
    assert dashboard.status_code == 302 and dashboard["Location"].startswith("/login/"), "not signed in"


def signup_grants() -> list[tuple[str, int]]:
    return list(
        LedgerEntry.objects.filter(kind=EntryKind.SIGNUP_GRANT).values_list("reference", "amount_nano").order_by("id")
    )


def account_for(email: str) -> Account:
    return Account.objects.get(owner__email=email)


# --- GitHub ---------------------------------------------------------------------------------------


def test_it_creates_an_account_with_two_dollars_on_a_first_github_sign_in(
    client: Client, provider: responses.RequestsMock
) -> None:
    github_says(provider, uid=1001, emails=[secondary("old@example.com"), primary("octo@example.com")])

    response = sign_in_with_github(client)

    assert_signed_into_dashboard(response, "octo@example.com")
    assert shown_balance(response) == "$2.00"
    account = account_for("octo@example.com")
    assert ledger.get_balance(account).balance_nano == TWO_DOLLARS_NANO
    assert account.projects.get(is_default=True).name == "Default project"
    assert signup_grants() == [("signup:github:1001", TWO_DOLLARS_NANO)]
    assert UserSocialAuth.objects.get(provider="github", uid="1001").user == account.owner
    emails_call = next(call for call in provider.calls if call.request.url == GITHUB_EMAILS_URL)
    assert emails_call.request.headers["Authorization"] == "token gho_1001"


def test_it_grants_two_dollars_once_per_github_identity_across_sign_ins(
    provider: responses.RequestsMock,
) -> None:
    github_says(provider, uid=1001, emails=[primary("octo@example.com")])
    first = sign_in_with_github(Client())
    assert shown_balance(first) == "$2.00"

    again = sign_in_with_github(Client())

    assert_signed_into_dashboard(again, "octo@example.com")
    assert shown_balance(again) == "$2.00"
    assert ledger.get_balance(account_for("octo@example.com")).balance_nano == TWO_DOLLARS_NANO
    assert User.objects.count() == 1
    assert signup_grants() == [("signup:github:1001", TWO_DOLLARS_NANO)]


def test_it_does_not_grant_again_when_a_github_identity_is_relinked_to_its_account(
    provider: responses.RequestsMock,
) -> None:
    github_says(provider, uid=1001, emails=[primary("octo@example.com")])
    sign_in_with_github(Client())
    UserSocialAuth.objects.filter(provider="github", uid="1001").delete()

    relinked = sign_in_with_github(Client())

    assert_signed_into_dashboard(relinked, "octo@example.com")
    assert shown_balance(relinked) == "$2.00"
    owner = User.objects.get()
    assert UserSocialAuth.objects.get(provider="github", uid="1001").user == owner
    assert signup_grants() == [("signup:github:1001", TWO_DOLLARS_NANO)]


def test_it_does_not_grant_again_when_a_github_identity_signs_up_a_second_account(
    provider: responses.RequestsMock,
) -> None:
    github_says(provider, uid=1001, emails=[primary("octo@example.com")])
    sign_in_with_github(Client())
    UserSocialAuth.objects.filter(provider="github", uid="1001").delete()
    # The same GitHub user, now with another primary address: no account matches it.
    github_says(provider, uid=1001, emails=[primary("octo@new.example.com")])

    second = sign_in_with_github(Client())

    assert_signed_into_dashboard(second, "octo@new.example.com")
    assert shown_balance(second) == "$0.00"
    assert ledger.get_balance(account_for("octo@new.example.com")).balance_nano == 0
    assert ledger.get_balance(account_for("octo@example.com")).balance_nano == TWO_DOLLARS_NANO
    assert signup_grants() == [("signup:github:1001", TWO_DOLLARS_NANO)]


def test_it_grants_each_distinct_github_identity_its_own_two_dollars(provider: responses.RequestsMock) -> None:
    github_says(provider, uid=1001, emails=[primary("octo@example.com")])
    sign_in_with_github(Client())
    github_says(provider, uid=2002, login="hubot", emails=[primary("hubot@example.com")])

    other = sign_in_with_github(Client())

    assert_signed_into_dashboard(other, "hubot@example.com")
    assert shown_balance(other) == "$2.00"
    assert [reference for reference, _ in signup_grants()] == ["signup:github:1001", "signup:github:2002"]


def test_it_refuses_github_sign_in_when_the_primary_email_is_unverified(
    client: Client, provider: responses.RequestsMock
) -> None:
    # A verified secondary address is not enough: only the verified primary one counts.
    github_says(
        provider,
        profile_email="octo@example.com",
        emails=[primary("octo@example.com", verified=False), secondary("alt@example.com")],
    )

    response = sign_in_with_github(client)

    assert_refused_on_login_page(response, client, NO_VERIFIED_GITHUB_EMAIL)
    assert not User.objects.exists()
    assert not UserSocialAuth.objects.exists()
    assert signup_grants() == []


def test_it_refuses_github_sign_in_with_only_a_profile_email(client: Client, provider: responses.RequestsMock) -> None:
    github_says(provider, profile_email="octo@example.com", emails=[])

    response = sign_in_with_github(client)

    assert_refused_on_login_page(response, client, NO_VERIFIED_GITHUB_EMAIL)
    assert not User.objects.exists()


def test_it_ignores_the_github_profile_email_when_the_verified_primary_differs(
    client: Client, provider: responses.RequestsMock
) -> None:
    victim = make_account("victim@example.com", credit_nano=50 * 1_000_000_000)
    # Anyone can type someone else's address into their public GitHub profile.
    github_says(provider, uid=666, profile_email="victim@example.com", emails=[primary("mallory@example.com")])

    response = sign_in_with_github(client)

    assert_signed_into_dashboard(response, "mallory@example.com")
    assert "victim@example.com" not in page(response)
    assert shown_balance(response) == "$2.00"
    assert UserSocialAuth.objects.get(provider="github", uid="666").user.email == "mallory@example.com"
    assert ledger.get_balance(victim).balance_nano == 50 * 1_000_000_000


def test_it_signs_a_github_identity_into_the_existing_account_with_its_verified_email(
    client: Client, provider: responses.RequestsMock
) -> None:
    existing = make_account("alice@example.com", credit_nano=5 * 1_000_000_000)
    github_says(provider, uid=1001, emails=[primary("Alice@Example.com")])

    response = sign_in_with_github(client)

    assert_signed_into_dashboard(response, "alice@example.com")
    assert shown_balance(response) == "$7.00"
    assert User.objects.count() == 1 and Account.objects.count() == 1
    assert UserSocialAuth.objects.get(provider="github", uid="1001").user == existing.owner

    again = sign_in_with_github(Client())

    assert shown_balance(again) == "$7.00"
    assert ledger.get_balance(existing).balance_nano == 7 * 1_000_000_000


# --- Google ---------------------------------------------------------------------------------------


def test_it_creates_an_account_with_two_dollars_on_a_first_google_sign_in_with_a_verified_email(
    client: Client, provider: responses.RequestsMock
) -> None:
    google_says(provider, sub="108001", email="gee@example.com", email_verified=True)

    response = sign_in_with_google(client)

    assert_signed_into_dashboard(response, "gee@example.com")
    assert shown_balance(response) == "$2.00"
    assert ledger.get_balance(account_for("gee@example.com")).balance_nano == TWO_DOLLARS_NANO
    assert signup_grants() == [("signup:google-oauth2:108001", TWO_DOLLARS_NANO)]

    again = sign_in_with_google(Client())

    assert_signed_into_dashboard(again, "gee@example.com")
    assert shown_balance(again) == "$2.00"
    assert signup_grants() == [("signup:google-oauth2:108001", TWO_DOLLARS_NANO)]


def test_it_signs_a_google_identity_into_the_existing_account_with_its_verified_email(
    client: Client, provider: responses.RequestsMock
) -> None:
    existing = make_account("alice@example.com")
    google_says(provider, email="alice@example.com", email_verified=True)

    response = sign_in_with_google(client)

    assert_signed_into_dashboard(response, "alice@example.com")
    assert shown_balance(response) == "$2.00"
    assert User.objects.count() == 1
    assert ledger.get_balance(existing).balance_nano == TWO_DOLLARS_NANO


@pytest.mark.parametrize("email_verified", [False, None, "false"])
def test_it_refuses_google_sign_in_when_the_email_is_not_verified(
    client: Client, provider: responses.RequestsMock, email_verified: Any
) -> None:
    make_account("alice@example.com")
    google_says(provider, email="alice@example.com", email_verified=email_verified)

    response = sign_in_with_google(client)

    assert response.status_code == 200 and final_path(response) == "/login/"
    assert re.search(ERROR_FLASH + r"\w", page(response)), "the refusal is explained on the page"
    assert client.get("/").status_code == 302, "not signed in"
    assert not UserSocialAuth.objects.exists()
    assert signup_grants() == []


def test_it_tells_the_user_why_an_unverified_google_email_is_refused(
    client: Client, provider: responses.RequestsMock
) -> None:
    google_says(provider, email="gee@example.com", email_verified=False)

    response = sign_in_with_google(client)

    assert_refused_on_login_page(response, client, NO_VERIFIED_GOOGLE_EMAIL)
    assert not User.objects.exists()


# --- The OAuth round trip itself ------------------------------------------------------------------


def test_it_refuses_a_forged_state(client: Client, provider: responses.RequestsMock) -> None:
    github_says(provider, emails=[primary("octo@example.com")])
    start_sign_in(client, "github", GITHUB_AUTHORIZE_URL)

    response = come_back(client, "github", "forged-state-value")

    assert_refused_on_login_page(response, client, "The authentication session is unavailable. Please restart login.")
    assert len(provider.calls) == 0, "no code is exchanged for a forged state"
    assert not User.objects.exists()


def test_it_refuses_a_state_issued_to_another_browser(provider: responses.RequestsMock) -> None:
    # Login CSRF: the attacker starts a sign-in and has the victim's browser complete it.
    github_says(provider, emails=[primary("mallory@example.com")])
    attackers_state = start_sign_in(Client(), "github", GITHUB_AUTHORIZE_URL)
    victim = Client()

    response = come_back(victim, "github", attackers_state)

    assert_refused_on_login_page(response, victim, "The authentication session is unavailable. Please restart login.")
    assert len(provider.calls) == 0
    assert not User.objects.exists()


def test_it_refuses_a_missing_state(client: Client, provider: responses.RequestsMock) -> None:
    github_says(provider, emails=[primary("octo@example.com")])
    start_sign_in(client, "github", GITHUB_AUTHORIZE_URL)

    response = come_back(client, "github", None)

    assert_refused_on_login_page(response, client, "A required authentication parameter is missing.")
    assert len(provider.calls) == 0
    assert not User.objects.exists()


def test_it_accepts_a_state_only_once(client: Client, provider: responses.RequestsMock) -> None:
    github_says(provider, emails=[primary("octo@example.com")])
    state = start_sign_in(client, "github", GITHUB_AUTHORIZE_URL)
    assert_signed_into_dashboard(come_back(client, "github", state), "octo@example.com")
    client.post("/logout/")

    replayed = come_back(client, "github", state)

    assert_refused_on_login_page(replayed, client, "The authentication session is unavailable. Please restart login.")


def test_it_refuses_to_start_a_social_sign_in_by_get(client: Client, provider: responses.RequestsMock) -> None:
    response = client.get("/auth/login/github/")

    assert response.status_code == 405
    assert "Location" not in response
    assert not any(key.startswith("github_") for key in client.session.keys())
    assert len(provider.calls) == 0


def test_the_login_page_starts_social_sign_in_with_a_csrf_protected_post() -> None:
    browser = Client(enforce_csrf_checks=True)

    assert browser.post("/auth/login/github/").status_code == 403

    login_page = browser.get("/login/")
    assert browser.post("/auth/login/github/").status_code == 403, "the CSRF cookie alone is not enough"
    form = re.search(
        r'<form method="post" action="/auth/login/github/">\s*'
        r'<input type="hidden" name="csrfmiddlewaretoken" value="([^"]+)">',
        page(login_page),
    )
    assert form, "the login page has a POST form for GitHub with a CSRF token"
    assert "Continue with GitHub" in page(login_page) and "Continue with Google" in page(login_page)

    response = browser.post("/auth/login/github/", {"csrfmiddlewaretoken": form.group(1)})

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == GITHUB_AUTHORIZE_URL
    query = parse_qs(location.query)
    assert query["scope"] == ["user:email"] and query["client_id"] == ["github-client-id"]
    assert len(query["state"][0]) >= 32


@pytest.mark.django_db(transaction=True)
async def test_async_views_can_load_a_user_signed_in_through_each_social_backend():
    from asgiref.sync import sync_to_async
    from django.contrib.auth import load_backend

    from tests.factories import make_account

    account = await sync_to_async(make_account)("social@example.com")
    for path in (
        "console.social.GithubVerifiedEmailOAuth2",
        "console.social.GoogleVerifiedEmailOAuth2",
        "console.social.OpenIdConnect",
    ):
        # What request.auser() does for a session signed in through `path`.
        assert await load_backend(path).aget_user(account.owner.pk) == account.owner
