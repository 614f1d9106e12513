"""Google and GitHub sign-in: the pieces of social-auth's pipeline that are ours.

Rules: only a verified e-mail can create or join an account; a verified e-mail that matches an
existing account signs into it; each social identity (provider + uid) earns the sign-up grant
once for ever (the ledger's unique reference enforces it, whatever happens to accounts).

Refusals raise `SignInRefused`, whose text is written for the person signing in: social-auth's
SocialAuthExceptionMiddleware shows `str(exception)` as a message on SOCIAL_AUTH_LOGIN_ERROR_URL
(social-core 7's own exceptions only show a generic sentence for their error code).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError
from social_core.backends.github import GithubOAuth2
from social_core.backends.google import GoogleOAuth2
from social_core.backends.open_id_connect import OpenIdConnectAuth
from social_core.exceptions import AuthPolicyError

from billing import ledger
from console.accounts import create_account, ensure_account
from console.models import User


class SignInRefused(AuthPolicyError):
    """A social sign-in refused by our rules; its text is shown on the login page."""

    def __init__(self, backend: Any, message: str, *, claim: str | None = None) -> None:
        super().__init__(backend, message, code="authentication_disallowed", stage="pipeline", claim=claim)
        self.user_message = message

    def __str__(self) -> str:
        return self.user_message


def _title(backend: Any) -> str:
    return str(getattr(backend, "title", "") or backend.name)


def no_verified_email(backend: Any) -> SignInRefused:
    title = _title(backend)
    return SignInRefused(
        backend,
        f"Your {title} account has no verified e-mail address, so we cannot sign you in with it. "
        f"Verify your e-mail address with {title} and try again, or sign in by e-mail below.",
        claim="email_verified",
    )


class AsyncUserLookup:
    """Django's async views ask the session's backend for `aget_user`; social-core has only `get_user`."""

    async def aget_user(self, user_id: int) -> User | None:
        return await sync_to_async(self.get_user)(user_id)  # type: ignore[attr-defined]


class OpenIdConnect(AsyncUserLookup, OpenIdConnectAuth):
    """The generic OpenID Connect backend (name "oidc"), usable from async views."""


class GithubVerifiedEmailOAuth2(AsyncUserLookup, GithubOAuth2):
    """GitHub, with the e-mail taken only from the verified primary address in /user/emails.

    The profile's public `email` is whatever the user typed there and is never trusted.
    """

    name = "github"

    def user_data(self, access_token: str, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        data = dict(self._user_data(access_token) or {})
        emails = self._user_data(access_token, "/emails") or []
        verified_primary = [
            e
            for e in emails
            if isinstance(e, dict) and e.get("primary") is True and e.get("verified") is True and e.get("email")
        ]
        data["profile_email"] = data.get("email")
        data["email"] = verified_primary[0]["email"] if verified_primary else ""
        data["email_verified"] = bool(verified_primary)
        return data


class GoogleVerifiedEmailOAuth2(AsyncUserLookup, GoogleOAuth2):
    """Google, refusing an unverified e-mail with a message the user can act on.

    social-core's GoogleOAuth2 already refuses unless `email_verified` is true, but its message is
    a generic "An authentication response field could not be verified.". To show this one,
    AUTHENTICATION_BACKENDS must list this class instead of social_core's GoogleOAuth2.
    """

    name = "google-oauth2"

    def validate_email_verified(
        self,
        response: Mapping[str, Any] | None,
        *,
        stage: Literal["user_info", "token_validation"] = "user_info",
    ) -> None:
        if (response or {}).get("email_verified") is not True:
            raise no_verified_email(self)


def _verified_email(backend: Any, details: dict[str, Any], response: dict[str, Any]) -> str:
    if backend.name == "github":
        # Set by GithubVerifiedEmailOAuth2.user_data from /user/emails only.
        email = response.get("email") if response.get("email_verified") is True else ""
    else:
        # Google (and OpenID Connect) report the claim; a "true" string appears in some providers.
        verified = response.get("email_verified")
        email = details.get("email") if verified is True or str(verified).lower() == "true" else ""
    return (email or "").strip().lower()


def require_verified_email(backend: Any, details: dict[str, Any], response: dict[str, Any], **_: Any) -> dict[str, Any]:
    """Refuse any social sign-in (new, returning or linking) without a verified e-mail."""
    email = _verified_email(backend, details, response)
    if not email:
        raise no_verified_email(backend)
    return {"verified_email": email}


def associate_by_verified_email(verified_email: str = "", user: User | None = None, **_: Any) -> dict[str, Any] | None:
    """A new identity whose verified e-mail is an existing user's signs into that user."""
    if user is not None or not verified_email:
        return None
    existing = User.objects.filter(email__iexact=verified_email).first()
    if existing is None:
        return None
    ensure_account(existing)
    return {"user": existing, "is_new": False}


def create_user(backend: Any, verified_email: str = "", user: User | None = None, **_: Any) -> dict[str, Any] | None:
    """A new identity with a new verified e-mail: a new account with its default project."""
    if user is not None:
        return None
    if not verified_email:
        raise no_verified_email(backend)
    try:
        account = create_account(verified_email)
    except IntegrityError:
        # Two first sign-ins with the same e-mail at once: the other one created the user.
        existing = User.objects.filter(email__iexact=verified_email).first()
        if existing is None:
            raise
        ensure_account(existing)
        return {"user": existing, "is_new": False}
    return {"user": account.owner, "is_new": True}


def grant_signup_credit(backend: Any, uid: str, user: User | None = None, **_: Any) -> None:
    """The sign-up grant for this identity; the ledger turns every repeat into a no-op."""
    if user is None or backend.name not in settings.SIGNUP_GRANT_PROVIDERS:
        return
    account = ensure_account(user)
    ledger.grant_signup_credit(account, backend.name, str(uid))
