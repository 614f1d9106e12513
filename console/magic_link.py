"""E-mail sign-in by a single-use link that expires (MAGIC_LINK_TTL_SECONDS, 15 minutes)."""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse
from django.utils import timezone

from console.accounts import get_or_create_account_for_email
from console.models import MagicLink, User
from infrai import ratelimit

log = logging.getLogger(__name__)

HOUR = 3600


class RateLimited(Exception):
    pass


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def request_link(email: str, ip: str | None, base_url: str) -> None:
    """E-mail a sign-in link to `email`, within the per-address and per-IP limits."""
    email = email.strip().lower()
    if not ratelimit.hit("magic-ip", ip or "unknown", settings.MAGIC_LINK_PER_IP_PER_HOUR, HOUR):
        raise RateLimited("Too many sign-in requests from your network. Try again within the hour.")
    if not ratelimit.hit("magic-email", _hash(email), settings.MAGIC_LINK_PER_ADDRESS_PER_HOUR, HOUR):
        raise RateLimited("Too many sign-in links were sent to this address. Try again within the hour.")
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    MagicLink.objects.create(
        email=email,
        token_hash=_hash(token),
        requested_ip=ip,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.MAGIC_LINK_TTL_SECONDS),
    )
    url = base_url.rstrip("/") + reverse("console:magic_link", args=[token])
    minutes = settings.MAGIC_LINK_TTL_SECONDS // 60
    send_mail(
        subject="Your Infrai Console sign-in link",
        message=f"Sign in to Infrai Console:\n\n{url}\n\nThe link works once and expires in {minutes} minutes.\n"
        "If you did not ask for it, ignore this e-mail.",
        from_email=None,
        recipient_list=[email],
    )
    if settings.MAGIC_LINK_LOG_LINKS:
        log.warning("Sign-in link for %s (development only): %s", email, url)


def peek(token: str) -> MagicLink | None:
    """The link if it can still be used (for the confirmation page), without using it."""
    return MagicLink.objects.filter(
        token_hash=_hash(token), used_at__isnull=True, expires_at__gt=timezone.now()
    ).first()


def redeem(token: str) -> User | None:
    """Use the link once; returns the signed-in user, creating the account on first use."""
    now = timezone.now()
    token_hash = _hash(token)
    claimed = MagicLink.objects.filter(token_hash=token_hash, used_at__isnull=True, expires_at__gt=now).update(
        used_at=now
    )
    if not claimed:
        return None
    link = MagicLink.objects.get(token_hash=token_hash)
    return get_or_create_account_for_email(link.email).owner
