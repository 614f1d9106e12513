from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def console(request: HttpRequest) -> dict[str, Any]:
    return {
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
