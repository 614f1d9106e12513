from __future__ import annotations

import re

import pytest

from console.models import Project, ProjectKey
from tests.factories import bearer, make_account, make_key, signed_in_client

pytestmark = pytest.mark.django_db


def _created_secret(response) -> str:
    match = re.search(rb'data-testid="new-key">(ifr_pk_proj_[0-9A-Za-z]+)<', response.content)
    assert match, "the new key is shown on the page"
    return match.group(1).decode()


def test_every_account_starts_with_a_default_project():
    account = make_account()
    project = account.projects.get()
    assert project.is_default and project.public_id.startswith("proj_")


def test_a_user_creates_and_renames_projects():
    account = make_account()
    client = signed_in_client(account)
    response = client.post("/projects/", {"name": "Staging"}, follow=True)
    assert b"Staging" in response.content
    staging = account.projects.get(name="Staging")
    client.post(f"/projects/{staging.public_id}/rename/", {"name": "Production"})
    staging.refresh_from_db()
    assert staging.name == "Production"


def test_project_names_are_unique_within_an_account_with_a_field_error():
    account = make_account()
    client = signed_in_client(account)
    client.post("/projects/", {"name": "Staging"})
    again = client.post("/projects/", {"name": "Staging"})
    assert again.status_code == 400
    assert b"You already have a project with this name." in again.content
    empty = client.post("/projects/", {"name": "  "})
    assert empty.status_code == 400 and b"This field is required." in empty.content


def test_a_key_is_shown_once_then_only_its_prefix():
    account = make_account()
    client = signed_in_client(account)
    created = client.post("/keys/", {"label": "laptop"}, follow=True)
    secret = _created_secret(created)
    assert len(secret) == len("ifr_pk_proj_") + 40
    listing = client.get("/keys/")
    assert secret.encode() not in listing.content
    assert secret[:20].encode() in listing.content  # the lookup prefix
    assert b"laptop" in listing.content and b"never" in listing.content


def test_a_key_created_in_the_console_works_on_the_api_until_revoked(client):
    account = make_account()
    console = signed_in_client(account)
    secret = _created_secret(console.post("/keys/", {"label": "ci"}, follow=True))
    assert client.get("/v1/account/balance", **bearer(secret)).status_code == 200
    key = ProjectKey.objects.get()
    listing = console.get("/keys/")
    assert b"active" in listing.content
    console.post(f"/keys/{key.public_id}/revoke/")
    assert client.get("/v1/account/balance", **bearer(secret)).status_code == 401
    assert b"revoked" in console.get("/keys/").content


def test_reloading_after_creating_a_key_creates_no_second_key():
    client = signed_in_client(make_account())
    created = client.post("/keys/", {"label": "once"})
    assert created.status_code == 302 and created["Location"] == "/keys/"
    secret = _created_secret(client.get("/keys/"))
    again = client.get("/keys/")
    assert secret.encode() not in again.content and b'data-testid="new-key"' not in again.content
    assert ProjectKey.objects.filter(label="once").count() == 1


def test_keys_belong_to_the_selected_project():
    account = make_account()
    client = signed_in_client(account)
    client.post("/projects/", {"name": "Second"})  # creating selects it
    client.post("/keys/", {"label": "second-key"})
    key = ProjectKey.objects.get()
    assert key.project.name == "Second"
    default = account.projects.get(is_default=True)
    client.post(f"/projects/{default.public_id}/select/")
    assert b"second-key" not in client.get("/keys/").content


def test_the_dashboard_shows_balance_keys_and_a_first_call_snippet():
    account = make_account(credit_nano=1_500_000_000)
    make_key(account, label="backend")
    page = signed_in_client(account).get("/")
    assert b"$1.50" in page.content
    assert b"backend" in page.content
    assert b"http://testserver/v1/chat/completions" in page.content
    assert b'base_url="http://testserver/v1"' in page.content


def test_console_pages_need_sign_in(client):
    for url in ("/", "/keys/", "/projects/", "/usage/", "/jobs/", "/byok/", "/billing/", "/playground/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")


# --- An outsider (a second account) ---------------------------------------------------------


def test_an_outsider_cannot_see_rename_select_or_revoke_anothers_project_or_keys():
    alice = make_account("alice@example.com")
    make_key(alice, label="alice-secret-label")
    alice_project = alice.projects.get()
    alice_key = ProjectKey.objects.get()
    bob = signed_in_client(make_account("bob@example.com"))

    assert b"alice-secret-label" not in bob.get("/keys/").content
    assert alice_project.public_id.encode() not in bob.get("/projects/").content
    assert bob.post(f"/projects/{alice_project.public_id}/rename/", {"name": "pwned"}).status_code == 404
    assert bob.post(f"/projects/{alice_project.public_id}/select/").status_code == 404
    assert bob.post(f"/keys/{alice_key.public_id}/revoke/").status_code == 404
    alice_key.refresh_from_db()
    alice_project.refresh_from_db()
    assert alice_key.revoked_at is None and alice_project.name != "pwned"


def test_an_outsider_cannot_list_read_or_revoke_anothers_keys_through_the_api(client):
    alice = make_account("alice@example.com")
    make_key(alice)
    alice_key = ProjectKey.objects.get()
    bob_secret = make_key(make_account("bob@example.com"))

    listing = client.get("/v1/account/keys", **bearer(bob_secret)).json()
    assert alice_key.public_id not in [k["id"] for k in listing["data"]]
    assert client.get(f"/v1/account/keys/{alice_key.public_id}", **bearer(bob_secret)).status_code == 404
    revoke = client.delete(f"/v1/account/keys/{alice_key.public_id}", **bearer(bob_secret))
    assert revoke.status_code == 404 and revoke.json()["error"]["code"] == "NOT_FOUND"
    alice_key.refresh_from_db()
    assert alice_key.revoked_at is None


def test_project_ids_are_public_ids_not_sequential_numbers():
    account = make_account()
    page = signed_in_client(account).get("/projects/")
    project = Project.objects.get()
    assert project.public_id.encode() in page.content
    assert f"/projects/{project.pk}/".encode() not in page.content


def test_the_console_says_when_the_sandbox_vendor_and_test_payments_are_in_use(settings):
    page = signed_in_client(make_account()).get("/").content.decode()
    assert "Sandbox vendor" in page and "Payments: test mode" in page
    settings.OPENAI_API_KEY = "sk-real"
    assert "Sandbox vendor" not in signed_in_client(make_account("b@example.com")).get("/").content.decode()
