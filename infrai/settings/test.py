"""Test settings: the embedded defaults (or DATABASE_URL/REDIS_URL), made fast and quiet."""

from infrai.lib.env import env_str

from .base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")
MAGIC_LINK_LOG_LINKS = False
WHITENOISE_AUTOREFRESH = True
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not the shared-cache in-memory database: that one has table locks that ignore
    # the busy timeout, so tests with concurrent threads would fail for SQLite's sake.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}  # noqa: F405

# Stream sandbox replies without pacing; tests that need a realistic rate set it themselves.
SANDBOX_TOKENS_PER_SECOND = 0

# Tests make many calls with one key; the rate limit has its own test that switches it on.
API_RATE_LIMIT_PER_KEY_PER_MINUTE = 0
