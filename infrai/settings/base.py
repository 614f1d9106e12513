"""Settings for every environment, read from environment variables.

With nothing set this is the embedded development setup: SQLite, an in-memory channel layer,
a local-memory cache, e-mail printed to the console, the offline sandbox vendor and the local
Stripe stand-in. `DATABASE_URL` and `REDIS_URL` switch to PostgreSQL and Redis.
`infrai.settings.production` layers the checks a public deployment needs on top.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from infrai.lib.env import env_bool, env_decimal, env_int, env_json, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("INFRAI_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", True)
# A fixed development key; production.py refuses to start without SECRET_KEY.
SECRET_KEY = env_str("SECRET_KEY", "dev-insecure-key-change-me-0123456789-abcdefghijklmnopqrstuvwxyz")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = env_str("SITE_URL", "").rstrip("/")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "social_django",
    "console",
    "billing",
    "gateway",
    "playground",
    "jobs",
    "batches",
    "videos",
    "django_tasks",
    "django_tasks_db",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "social_django.middleware.SocialAuthExceptionMiddleware",
]

ROOT_URLCONF = "infrai.urls"
ASGI_APPLICATION = "infrai.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "social_django.context_processors.backends",
                "console.context_processors.console",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    # Health checks: a connection the database dropped (restart, failover) is replaced before
    # use instead of failing the request that drew it; with the pool, psycopg_pool checks each
    # connection as it is handed out (one round trip). DB_CONN_HEALTH_CHECKS=false skips that.
    DATABASES = {
        "default": dj_database_url.parse(DATABASE_URL, conn_health_checks=env_bool("DB_CONN_HEALTH_CHECKS", True))
    }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # A bounded pool per process: under ASGI every concurrent request runs its ORM work in
        # its own thread, so without a pool 100 requests would open 100 connections.
        DATABASES["default"]["OPTIONS"] = {
            "pool": {
                "min_size": 1,
                "max_size": env_int("DB_POOL_MAX_SIZE", 10),
                "timeout": env_int("DB_POOL_TIMEOUT", 30),
            }
        }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(VAR_DIR / "db.sqlite3")),
            # SQLite serialises writers; BEGIN IMMEDIATE makes each transaction take the write
            # lock up front so concurrent debits queue instead of failing with "locked".
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "infrai.cache.ProcessWideRedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_USER_MODEL = "console.User"
AUTHENTICATION_BACKENDS = [
    "console.social.GithubVerifiedEmailOAuth2",
    "console.social.GoogleVerifiedEmailOAuth2",
    "console.social.OpenIdConnect",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:dashboard"
LOGOUT_REDIRECT_URL = "console:login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Generated files (images, speech, videos, exports). Any Django storage backend by setting, e.g.
# STORAGE_BACKEND=storages.backends.s3.S3Storage with STORAGE_OPTIONS_JSON='{"bucket_name": "..."}'
# for S3 or an S3-compatible store (django-storages is installed). Files are only ever served
# through the console's signed URLs, so the bucket can stay private.
STORAGES = {
    "default": {
        "BACKEND": env_str("STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage"),
        "OPTIONS": env_json("STORAGE_OPTIONS_JSON"),
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
WHITENOISE_USE_FINDERS = DEBUG

# --- E-mail ---------------------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Infrai Console <noreply@infrai.local>")

# --- Sign-in --------------------------------------------------------------------------------
MAGIC_LINK_TTL_SECONDS = env_int("MAGIC_LINK_TTL_SECONDS", 15 * 60)
MAGIC_LINK_PER_ADDRESS_PER_HOUR = env_int("MAGIC_LINK_PER_ADDRESS_PER_HOUR", 5)
MAGIC_LINK_PER_IP_PER_HOUR = env_int("MAGIC_LINK_PER_IP_PER_HOUR", 20)
# Log the sign-in link in development so `make run` works without a mail server.
MAGIC_LINK_LOG_LINKS = env_bool("MAGIC_LINK_LOG_LINKS", DEBUG)

SOCIAL_AUTH_JSONFIELD_ENABLED = True
SOCIAL_AUTH_URL_NAMESPACE = "social"
SOCIAL_AUTH_LOGIN_ERROR_URL = "/login/"
SOCIAL_AUTH_REQUIRE_POST = True
SOCIAL_AUTH_GITHUB_KEY = env_str("SOCIAL_AUTH_GITHUB_KEY", "")
SOCIAL_AUTH_GITHUB_SECRET = env_str("SOCIAL_AUTH_GITHUB_SECRET", "")
SOCIAL_AUTH_GITHUB_SCOPE = ["user:email"]
SOCIAL_AUTH_GOOGLE_OAUTH2_KEY = env_str("SOCIAL_AUTH_GOOGLE_OAUTH2_KEY", "")
SOCIAL_AUTH_GOOGLE_OAUTH2_SECRET = env_str("SOCIAL_AUTH_GOOGLE_OAUTH2_SECRET", "")
SOCIAL_AUTH_OIDC_OIDC_ENDPOINT = env_str("SOCIAL_AUTH_OIDC_ENDPOINT", "")
SOCIAL_AUTH_OIDC_KEY = env_str("SOCIAL_AUTH_OIDC_KEY", "")
SOCIAL_AUTH_OIDC_SECRET = env_str("SOCIAL_AUTH_OIDC_SECRET", "")
SOCIAL_AUTH_PIPELINE = (
    "social_core.pipeline.social_auth.social_details",
    "social_core.pipeline.social_auth.social_uid",
    "social_core.pipeline.social_auth.auth_allowed",
    "social_core.pipeline.social_auth.social_user",
    "console.social.require_verified_email",
    "console.social.associate_by_verified_email",
    "console.social.create_user",
    "social_core.pipeline.social_auth.associate_user",
    "social_core.pipeline.social_auth.load_extra_data",
    "console.social.grant_signup_credit",
)
# Which social providers earn the sign-up grant (the generic OIDC one is for browser tests).
SIGNUP_GRANT_PROVIDERS = env_list("SIGNUP_GRANT_PROVIDERS", "google-oauth2,github")

# --- Money (amounts as decimal USD strings; stored as integer nano-USD) ----------------------
SIGNUP_GRANT_USD: Decimal = env_decimal("SIGNUP_GRANT_USD", "2.00")
EMAIL_SIGNUP_CREDIT_USD: Decimal = env_decimal("EMAIL_SIGNUP_CREDIT_USD", "0")

# --- Keys and secrets -----------------------------------------------------------------------
# Project keys are stored as HMAC-SHA256(KEY_HASH_SECRET, key); changing it invalidates them.
KEY_HASH_SECRET = env_str("KEY_HASH_SECRET", SECRET_KEY)
IDEMPOTENCY_WINDOW_SECONDS = env_int("IDEMPOTENCY_WINDOW_SECONDS", 24 * 3600)
if not 3600 <= IDEMPOTENCY_WINDOW_SECONDS <= 7 * 24 * 3600:
    raise ImproperlyConfigured("IDEMPOTENCY_WINDOW_SECONDS must be from 3600 (1 h) to 604800 (7 d)")

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
X_FRAME_OPTIONS = "DENY"

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # httpx logs every upstream request at INFO: a line per API call on the hot path.
    "loggers": {"django.db.backends": {"level": "INFO"}, "httpx": {"level": "WARNING"}},
}
# Show sign-in failures (forged state, refused e-mail) as messages on the login page.
SOCIAL_AUTH_RAISE_EXCEPTIONS = False

# --- Stripe top-up --------------------------------------------------------------------------
# With no STRIPE_SECRET_KEY, `make run` starts the local Stripe stand-in (localstripe plus a
# Checkout Sessions extension) on STRIPE_STANDIN_PORT and points the SDK at it: test mode.
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY", "")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET", "")
STRIPE_STANDIN_PORT = env_int("STRIPE_STANDIN_PORT", 8420)
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "" if STRIPE_SECRET_KEY else f"http://127.0.0.1:{STRIPE_STANDIN_PORT}")
STRIPE_TEST_MODE = not STRIPE_SECRET_KEY or STRIPE_SECRET_KEY.startswith("sk_test_")
if not STRIPE_SECRET_KEY:
    STRIPE_SECRET_KEY = "sk_test_standin"
    STRIPE_WEBHOOK_SECRET = STRIPE_WEBHOOK_SECRET or "whsec_standin_local_only"
TOPUP_PRESETS_USD = [env_decimal(f"TOPUP_PRESET_{i}_USD", d) for i, d in enumerate(["5", "10", "25", "100"], 1)]
TOPUP_MIN_USD: Decimal = env_decimal("TOPUP_MIN_USD", "5")
TOPUP_MAX_USD: Decimal = env_decimal("TOPUP_MAX_USD", "1000")

# --- BYOK -----------------------------------------------------------------------------------
# Comma-separated Fernet keys, newest first; `manage.py rotate_byok_key` re-encrypts with the first.
BYOK_ENCRYPTION_KEYS = env_list("BYOK_ENCRYPTION_KEYS", "")
# Allow BYOK base URLs on private networks (a self-hosted vLLM/Ollama next to the console).
BYOK_ALLOW_PRIVATE_BASE_URLS = env_bool("BYOK_ALLOW_PRIVATE_BASE_URLS", False)
# A call on the caller's own key pays only this share of the catalog price (0 = free).
BYOK_PLATFORM_FEE_PERCENT: Decimal = env_decimal("BYOK_PLATFORM_FEE_PERCENT", "0")

# --- Gateway --------------------------------------------------------------------------------
UPSTREAM_MAX_CONNECTIONS = env_int("UPSTREAM_MAX_CONNECTIONS", 200)
# Calls per project key per minute (0 = no limit); over it, 429 RATE_LIMITED with Retry-After.
API_RATE_LIMIT_PER_KEY_PER_MINUTE = env_int("API_RATE_LIMIT_PER_KEY_PER_MINUTE", 600)
# Platform credentials per vendor; a vendor without one is usable only through a caller's BYOK.
OPENAI_API_KEY = env_str("OPENAI_API_KEY", "")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL", "https://api.openai.com/v1")
GENSTUDIO_API_KEY = env_str("GENSTUDIO_API_KEY", "")
GENSTUDIO_BASE_URL = env_str("GENSTUDIO_BASE_URL", "https://cloud.infini-ai.com")
COHERE_API_KEY = env_str("COHERE_API_KEY", "")
COHERE_BASE_URL = env_str("COHERE_BASE_URL", "https://api.cohere.com")
OPENAI_COMPATIBLE_API_KEY = env_str("OPENAI_COMPATIBLE_API_KEY", "")
OPENAI_COMPATIBLE_BASE_URL = env_str("OPENAI_COMPATIBLE_BASE_URL", "")
# The sandbox serves every capability offline; it is on unless switched off.
SANDBOX_ENABLED = env_bool("SANDBOX_ENABLED", True)
SANDBOX_TOKENS_PER_SECOND = env_int("SANDBOX_TOKENS_PER_SECOND", 60)
# Speech recognition decodes in this many worker processes (pocketsphinx holds the GIL); 0: in a thread.
SANDBOX_ASR_PROCESSES = env_int("SANDBOX_ASR_PROCESSES", 1)
CNY_PER_USD: Decimal = env_decimal("CNY_PER_USD", "7.20")
HOLD_TTL_SECONDS = env_int("HOLD_TTL_SECONDS", 900)
# How long a process trusts its cached copy of a project key, and of the catalog and an account's
# BYOK vendors. Changes reach every process at once through Redis; without Redis, other
# processes see a revoked key after up to API_KEY_CACHE_SECONDS and catalog/BYOK changes after
# up to ROUTING_CACHE_SECONDS.
API_KEY_CACHE_SECONDS = env_int("API_KEY_CACHE_SECONDS", 30)
ROUTING_CACHE_SECONDS = env_int("ROUTING_CACHE_SECONDS", 60)
CHAT_CACHE_TTL_SECONDS = env_int("CHAT_CACHE_TTL_SECONDS", 3600)

# --- Jobs -----------------------------------------------------------------------------------
# django-tasks with its database backend: jobs survive restarts, run on SQLite and PostgreSQL,
# and several `manage.py db_worker` processes share the queue (see README, "Jobs").
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
BATCH_MAX_ITEMS = env_int("BATCH_MAX_ITEMS", 1000)
BATCH_MAX_PARALLEL_TASKS = env_int("BATCH_MAX_PARALLEL_TASKS", 4)
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 120)
DOWNLOAD_URL_TTL_SECONDS = env_int("DOWNLOAD_URL_TTL_SECONDS", 3600)
