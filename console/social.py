"""Google and GitHub sign-in: the pieces of social-auth's pipeline that are ours.

Rules: only a verified e-mail can create or join an account; a verified e-mail that matches an
existing account signs into it; each social identity (provider + uid) earns the sign-up grant
once for ever (the ledger's unique reference enforces it, whatever happens to accounts).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from social_core.backends.github import GithubOAuth2
from social_core.exceptions import AuthForbidden

from billing import ledger
from console.accounts import create_account, ensure_account
from console.models import User


class GithubVerifiedEmailOAuth2(GithubOAuth2):
    """GitHub, with the e-mail taken only from the verified primary address in /user/emails."""

    name = "github"

    def user_data(self, access_token: str, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        data = dict(self._user_data(access_token) or {})
        emails = self._user_data(access_token, "/emails") or []
        verified_primary = [
            e for e in emails if isinstance(e, dict) and e.get("primary") and e.get("verified") and e.get("email")
        ]
        data["profile_email"] = data.get("email")
        data["email"] = verified_primary[0]["email"] if verified_primary else ""
        data["email_verified"] = bool(verified_primary)
        return data


def _verified_email(backend: Any, details: dict[str, Any], response: dict[str, Any]) -> str:
    email = (details.get("email") or "").strip().lower()
    if not email:
        return ""
    if backend.name == "github":
        return email if response.get("email_verified") else ""
    # Google and OpenID Connect report the claim; "true" strings appear in some providers.
    verified = response.get("email_verified")
    return email if verified is True or str(verified).lower() == "true" else ""


def require_verified_email(
    backend: Any, details: dict[str, Any], response: dict[str, Any], user: User | None = None, **_: Any
) -> dict[str, Any]:
    email = _verified_email(backend, details, response)
    if user is None and not email:
        raise AuthForbidden(backend, f"Your {backend.name} account has no verified e-mail address we can use.")
    return {"verified_email": email}


def associate_by_verified_email(verified_email: str = "", user: User | None = None, **_: Any) -> dict[str, Any] | None:
    if user is not None or not verified_email:
        return None
    existing = User.objects.filter(email__iexact=verified_email).first()
    if existing is None:
        return None
    ensure_account(existing)
    return {"user": existing, "is_new": False}


def create_user(verified_email: str = "", user: User | None = None, **_: Any) -> dict[str, Any] | None:
    if user is not None:
        return None
    account = create_account(verified_email)
    return {"user": account.owner, "is_new": True}


def grant_signup_credit(backend: Any, uid: str, user: User | None = None, **_: Any) -> None:
    if user is None or backend.name not in settings.SIGNUP_GRANT_PROVIDERS:
        return
    account = ensure_account(user)
    ledger.grant_signup_credit(account, backend.name, str(uid))
