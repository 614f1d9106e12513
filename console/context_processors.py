from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def _sandbox_only() -> bool:
    from gateway.vendors import VENDORS

    real = [v for name, v in VENDORS.items() if name != "sandbox" and v.platform_credential() is not None]
    return settings.SANDBOX_ENABLED and not real


def console(request: HttpRequest) -> dict[str, Any]:
    return {
        "sandbox_only": _sandbox_only(),
        "stripe_test_mode": settings.STRIPE_TEST_MODE,
        "social_providers": [
            (name, title)
            for name, title, configured in [
                ("google-oauth2", "Google", bool(settings.SOCIAL_AUTH_GOOGLE_OAUTH2_KEY)),
                ("github", "GitHub", bool(settings.SOCIAL_AUTH_GITHUB_KEY)),
                ("oidc", "OpenID Connect", bool(settings.SOCIAL_AUTH_OIDC_OIDC_ENDPOINT)),
            ]
            if configured
        ],
    }
