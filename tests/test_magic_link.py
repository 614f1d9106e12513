from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from billing import ledger
from console.models import Account, User

pytestmark = pytest.mark.django_db


def _request_link(client, email="new@example.com", ip="10.0.0.1"):
    return client.post("/login/", {"email": email}, REMOTE_ADDR=ip)


def _link_path() -> str:
    match = re.search(r"https?://[^/\s]+(/login/magic/[^/\s]+/)", mail.outbox[-1].body)
    assert match, mail.outbox[-1].body
    return match.group(1)


def test_it_mails_a_link_and_creates_the_account_on_first_use_at_zero_dollars(client):
    response = _request_link(client)
    assert response.status_code == 302 and response["Location"] == "/login/check-email/"
    assert mail.outbox[-1].to == ["new@example.com"]
    assert not User.objects.exists()

    path = _link_path()
    confirm = client.get(path)
    assert confirm.status_code == 200 and b"Sign in" in confirm.content
    assert not User.objects.exists(), "opening the link must not use it up (mail scanners prefetch links)"

    signed_in = client.post(path, follow=True)
    assert signed_in.redirect_chain[-1][0] == "/"
    assert b"$0.00" in signed_in.content
    account = Account.objects.get(owner__email="new@example.com")
    assert ledger.get_balance(account).balance_nano == 0
    assert account.projects.get().is_default


def test_the_link_cannot_be_used_twice(client):
    _request_link(client)
    path = _link_path()
    assert client.post(path).status_code == 302
    client.logout()
    reuse = client.post(path)
    assert reuse.status_code == 400
    assert b"already used or has expired" in reuse.content
    assert "_auth_user_id" not in client.session


def test_the_link_expires_after_fifteen_minutes(client):
    _request_link(client)
    path = _link_path()
    with time_machine.travel(timezone.now() + timedelta(minutes=15, seconds=1)):
        assert client.get(path).status_code == 400
        assert client.post(path).status_code == 400
    assert not User.objects.exists()


def test_a_link_used_within_fifteen_minutes_works(client):
    _request_link(client)
    path = _link_path()
    with time_machine.travel(timezone.now() + timedelta(minutes=14)):
        assert client.post(path).status_code == 302


def test_signing_in_again_reaches_the_same_account(client):
    _request_link(client, "Same@Example.com")
    client.post(_link_path())
    client.logout()
    _request_link(client, "same@example.com")
    client.post(_link_path())
    assert Account.objects.count() == 1


def test_it_rate_limits_links_per_address(client, settings):
    settings.MAGIC_LINK_PER_ADDRESS_PER_HOUR = 2
    for ip in ("10.0.0.1", "10.0.0.2"):
        assert _request_link(client, ip=ip).status_code == 302
    blocked = _request_link(client, ip="10.0.0.3")
    assert blocked.status_code == 429
    assert b"Too many sign-in links were sent to this address" in blocked.content
    assert len(mail.outbox) == 2


def test_it_rate_limits_links_per_ip(client, settings):
    settings.MAGIC_LINK_PER_IP_PER_HOUR = 3
    for n in range(3):
        assert _request_link(client, f"user{n}@example.com").status_code == 302
    blocked = _request_link(client, "user9@example.com")
    assert blocked.status_code == 429
    assert b"Too many sign-in requests from your network" in blocked.content


def test_a_bad_address_gets_a_field_error(client):
    response = client.post("/login/", {"email": "not-an-email"})
    assert response.status_code == 400
    assert b"Enter a valid email address." in response.content
    assert not mail.outbox


def test_the_link_is_logged_in_development(client, settings, caplog):
    settings.MAGIC_LINK_LOG_LINKS = True
    _request_link(client)
    assert _link_path() in caplog.text


def test_the_link_is_not_logged_when_disabled(client, settings, caplog):
    settings.MAGIC_LINK_LOG_LINKS = False
    _request_link(client)
    assert _link_path() not in caplog.text


def test_sign_out_takes_post_and_ends_the_session(client):
    _request_link(client)
    client.post(_link_path())
    assert client.get("/logout/").status_code == 405
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302
