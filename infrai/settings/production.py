"""Production settings: refuse to start without secrets; secure cookies and HSTS.

Select with DJANGO_SETTINGS_MODULE=infrai.settings.production.
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from infrai.lib.env import env_bool, env_int

from .base import *  # noqa: F403
from .base import SITE_URL

REQUIRED = ["SECRET_KEY", "KEY_HASH_SECRET", "BYOK_ENCRYPTION_KEYS", "DATABASE_URL", "ALLOWED_HOSTS", "SITE_URL"]
_missing = [name for name in REQUIRED if not os.environ.get(name)]
if _missing:
    raise ImproperlyConfigured(f"production settings need these environment variables: {', '.join(_missing)}")
if len(os.environ["SECRET_KEY"]) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters")

if os.environ.get("STRIPE_SECRET_KEY") and not os.environ.get("STRIPE_WEBHOOK_SECRET"):
    raise ImproperlyConfigured("STRIPE_WEBHOOK_SECRET is required with STRIPE_SECRET_KEY, or every webhook is refused")

DEBUG = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
WHITENOISE_USE_FINDERS = False
# Hashed file names (console.3f9a....css), which WhiteNoise serves as immutable for a year: pages
# never wait on revalidating their stylesheets and scripts, and a deploy changes every name it
# changes the content of. Needs `manage.py collectstatic`, as before.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}}  # noqa: F405
MAGIC_LINK_LOG_LINKS = False
if SITE_URL and not CSRF_TRUSTED_ORIGINS:  # noqa: F405
    CSRF_TRUSTED_ORIGINS = [SITE_URL]
