"""BYOK ("bring your own key"): encryption at rest, registration, the router's lookup, the test call.

A credential's secret ({api_key, base_url?} as JSON) is stored only as a MultiFernet token under
settings.BYOK_ENCRYPTION_KEYS (comma-separated Fernet keys, newest first; `manage.py
rotate_byok_key` re-encrypts with the first). With none set (development) a key derived from
SECRET_KEY with HKDF is used; production settings require the variable. The API and the console
show only `fingerprint`; secrets never go into responses, logs or error messages.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from asgiref.sync import sync_to_async
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from console.models import Account
from gateway.api import ApiError
from gateway.http import UnsafeUrl, check_public_url, client_for, user_urls_public_only
from gateway.models_byok import BYOKCredential
from gateway.vendors import VENDORS, get_vendor
from gateway.vendors.base import Credential, Vendor, VendorError, error_for_status
from gateway.vendors.openai_compatible import OpenAICompatible
from infrai.lib.redact import REDACTED as REDACTED  # tests and callers name it byok.REDACTED
from infrai.lib.redact import redact_secret

log = logging.getLogger(__name__)

MAX_ALIAS_LENGTH = 80
MAX_API_KEY_LENGTH = 8192
MAX_BASE_URL_LENGTH = 500
MAX_ERROR_LENGTH = 500
# Keys shorter than this show no characters in their fingerprint, only the tag.
MIN_LENGTH_TO_SHOW_CHARS = 20
PROBE_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
MAX_PROBE_BODY = 1 << 20  # a model list is tens of kB; refuse to buffer an endless answer

_ENCRYPTION_INFO = b"infrai-byok-dev-encryption-v1"
_FINGERPRINT_INFO = b"infrai-byok-fingerprint-v1"


# --- Encryption -------------------------------------------------------------------------------


def _derive(info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(settings.SECRET_KEY.encode())


def development_key() -> str:
    """The Fernet key used when BYOK_ENCRYPTION_KEYS is empty: stable for a given SECRET_KEY."""
    return base64.urlsafe_b64encode(_derive(_ENCRYPTION_INFO)).decode()


def configured_keys() -> list[str]:
    raw: Iterable[str] | str = settings.BYOK_ENCRYPTION_KEYS
    if isinstance(raw, str):
        raw = raw.split(",")
    return [key.strip() for key in raw if key and key.strip()]


def _fernets() -> list[Fernet]:
    keys = configured_keys() or [development_key()]
    fernets = []
    for position, key in enumerate(keys, 1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            # Never echo the value: it is a secret even when malformed.
            raise ImproperlyConfigured(
                f"BYOK_ENCRYPTION_KEYS entry {position} is not a Fernet key (32 url-safe base64-encoded bytes); "
                "generate one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            ) from None
    return fernets


def encryptor() -> MultiFernet:
    return MultiFernet(_fernets())


@dataclass(frozen=True)
class Secret:
    api_key: str = field(repr=False)
    base_url: str | None = None


@sensitive_variables("secret", "plain")
def encrypt(secret: Secret) -> str:
    material: dict[str, Any] = {"api_key": secret.api_key}
    if secret.base_url:
        material["base_url"] = secret.base_url
    plain = json.dumps(material, separators=(",", ":")).encode()
    return encryptor().encrypt(plain).decode()


class SecretUnavailable(Exception):
    """The stored token cannot be decrypted with the configured keys (or the credential is revoked)."""


@sensitive_variables("data")
def decrypt(token: str) -> Secret:
    if not token:
        raise SecretUnavailable("no secret stored")
    try:
        data = json.loads(encryptor().decrypt(token.encode()))
    except InvalidToken as exc:
        raise SecretUnavailable("cannot be decrypted with BYOK_ENCRYPTION_KEYS") from exc
    return Secret(api_key=data["api_key"], base_url=data.get("base_url") or None)


def reveal(record: BYOKCredential) -> Secret:
    return decrypt(record.secret_encrypted)


@dataclass
class RotationReport:
    checked: int = 0
    rotated: int = 0
    failed: list[str] = field(default_factory=list)


def rotate_all(batch_size: int = 500) -> RotationReport:
    """Re-encrypt every stored secret with the newest key; ones already under it are left as they are."""
    fernets = _fernets()
    newest, every = fernets[0], MultiFernet(fernets)
    report = RotationReport()
    pks = list(BYOKCredential.objects.exclude(secret_encrypted="").order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(pks), batch_size):
        rows = BYOKCredential.objects.filter(pk__in=pks[start : start + batch_size]).values_list(
            "pk", "public_id", "secret_encrypted"
        )
        for pk, public_id, token in rows:
            if not token:
                continue
            report.checked += 1
            try:
                newest.decrypt(token.encode())
                continue
            except InvalidToken:
                pass
            try:
                rotated = every.rotate(token.encode()).decode()
            except InvalidToken:
                report.failed.append(public_id)
                continue
            # Only if nobody changed it meanwhile (a revoke empties it); a rerun catches the rest.
            report.rotated += BYOKCredential.objects.filter(pk=pk, secret_encrypted=token).update(
                secret_encrypted=rotated
            )
    return report


# --- Fingerprints -----------------------------------------------------------------------------


def _tag(api_key: str, length: int = 6) -> str:
    # Keyed, so a weak key cannot be found by hashing guesses against the shown tag.
    return hmac.new(_derive(_FINGERPRINT_INFO), api_key.encode(), hashlib.sha256).hexdigest()[:length]


@sensitive_variables("api_key")
def fingerprint(api_key: str) -> str:
    """A short recognisable form: the key's first 3 and last 4 characters and a keyed sha256 tag.

    Keys too short to spare 7 characters show only the tag.
    """
    if len(api_key) >= MIN_LENGTH_TO_SHOW_CHARS:
        return f"{api_key[:3]}…{api_key[-4:]} #{_tag(api_key)}"
    return f"…#{_tag(api_key)}"


def scrub(text: str, secret: Secret | None) -> str:
    """Remove the secret from a message that may echo it, whole or in part (an upstream error body, an exception)."""
    if secret is not None and secret.api_key:
        text = redact_secret(text, secret.api_key)
    return text[:MAX_ERROR_LENGTH]


# --- Registration -----------------------------------------------------------------------------


class InvalidCredential(ValueError):
    """A registration field that cannot be accepted; `field` uses the API's names (credentials.api_key)."""

    def __init__(
        self, field_name: str, message: str, *, code: str = "INVALID_FIELD", status: int = 400, **extra: Any
    ) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message
        self.code = code
        self.status = status
        self.extra = extra

    def api_error(self) -> ApiError:
        return ApiError(self.status, self.code, self.message, field=self.field, **self.extra)


def providers() -> list[str]:
    """Vendors a credential can be registered for: every registered vendor but the offline sandbox."""
    return sorted(name for name in VENDORS if name != "sandbox")


def provider_choices() -> list[tuple[str, str]]:
    return [(name, VENDORS[name].label) for name in providers()]


def default_base_url(vendor_name: str) -> str:
    """The vendor's usual endpoint: its `default_base_url` or settings.<VENDOR>_BASE_URL."""
    if vendor_name == "openai_compatible":
        return ""  # a generic endpoint has no usual address; the platform's own is not the user's
    vendor = get_vendor(vendor_name)
    own = getattr(vendor, "default_base_url", "") if vendor is not None else ""
    return str(own or getattr(settings, f"{vendor_name.upper()}_BASE_URL", "") or "")


@dataclass(frozen=True)
class Registration:
    provider: str
    alias: str
    secret: Secret = field(repr=False)

    def idempotency_material(self) -> dict[str, Any]:
        """What a replay must match; the key itself only as a keyed hash, never stored in clear."""
        return {
            "provider": self.provider,
            "alias": self.alias,
            "credentials": {
                "api_key_hmac": _tag(self.secret.api_key, 64),
                "base_url": self.secret.base_url,
            },
        }


def _clean_base_url(value: Any, provider: str) -> str | None:
    name = "credentials.base_url"
    if value is None or value == "":
        if not default_base_url(provider):
            raise InvalidCredential(
                name, f"{provider} has no default endpoint on this server: give credentials.base_url."
            )
        return None
    if not isinstance(value, str) or len(value.strip()) > MAX_BASE_URL_LENGTH:
        raise InvalidCredential(
            name, f"credentials.base_url must be a URL of at most {MAX_BASE_URL_LENGTH} characters."
        )
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidCredential(name, "credentials.base_url must be an http:// or https:// URL with a host.")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidCredential(
            name, "credentials.base_url must not carry a user, password, query or fragment; put the key in api_key."
        )
    try:
        check_public_url(url)
    except UnsafeUrl as exc:
        raise InvalidCredential(
            name, f"credentials.base_url is refused: {exc}. Only public addresses are allowed on this server."
        ) from exc
    return url


@sensitive_variables("credentials", "api_key")
def clean_registration(provider: Any, alias: Any, credentials: Any) -> Registration:
    """Check a registration's fields in order; raise InvalidCredential naming the first bad one."""
    known = providers()
    if provider is None or provider == "":
        raise InvalidCredential(
            "provider", f"provider is required: one of {', '.join(known)}.", code="MISSING_FIELD", allowed=known
        )
    if not isinstance(provider, str) or provider not in known:
        raise InvalidCredential("provider", f"Unknown provider; use one of {', '.join(known)}.", allowed=known)
    if alias is None or (isinstance(alias, str) and not alias.strip()):
        raise InvalidCredential(
            "alias", "alias is required: a name to recognise this credential by.", code="MISSING_FIELD"
        )
    if not isinstance(alias, str) or len(alias.strip()) > MAX_ALIAS_LENGTH:
        raise InvalidCredential("alias", f"alias must be a string of at most {MAX_ALIAS_LENGTH} characters.")
    if credentials is None:
        raise InvalidCredential(
            "credentials", 'credentials is required: {"api_key": "...", "base_url": "..."}.', code="MISSING_FIELD"
        )
    if not isinstance(credentials, dict):
        raise InvalidCredential("credentials", 'credentials must be an object: {"api_key": "...", "base_url": "..."}.')
    unknown = sorted(str(name) for name in credentials if name not in ("api_key", "base_url"))
    if unknown:
        raise InvalidCredential(
            f"credentials.{unknown[0]}", "credentials takes only api_key and base_url.", allowed=["api_key", "base_url"]
        )
    api_key = credentials.get("api_key")
    if api_key is None or (isinstance(api_key, str) and not api_key.strip()):
        raise InvalidCredential("credentials.api_key", "credentials.api_key is required.", code="MISSING_FIELD")
    if not isinstance(api_key, str) or len(api_key.strip()) > MAX_API_KEY_LENGTH:
        raise InvalidCredential(
            "credentials.api_key", f"credentials.api_key must be a string of at most {MAX_API_KEY_LENGTH} characters."
        )
    api_key = api_key.strip()
    if any(ch.isspace() or not ch.isprintable() for ch in api_key):
        raise InvalidCredential(
            "credentials.api_key", "credentials.api_key must not contain spaces, line breaks or control characters."
        )
    base_url = _clean_base_url(credentials.get("base_url"), provider)
    return Registration(provider=provider, alias=alias.strip(), secret=Secret(api_key=api_key, base_url=base_url))


def alias_taken(alias: str) -> InvalidCredential:
    return InvalidCredential(
        "alias",
        f"You already have an active credential called {alias!r}; choose another alias or revoke that one first.",
        code="ALIAS_TAKEN",
        status=409,
    )


def register(account: Account, registration: Registration) -> BYOKCredential:
    if BYOKCredential.objects.filter(account=account, alias=registration.alias, revoked_at__isnull=True).exists():
        raise alias_taken(registration.alias)
    try:
        with transaction.atomic():
            record = BYOKCredential.objects.create(
                account=account,
                provider=registration.provider,
                alias=registration.alias,
                secret_encrypted=encrypt(registration.secret),
                fingerprint=fingerprint(registration.secret.api_key),
            )
    except IntegrityError as exc:  # a concurrent registration took the alias
        raise alias_taken(registration.alias) from exc
    log.info("byok credential %s registered for %s (%s)", record.public_id, account.public_id, registration.provider)
    return record


def credentials_for_account(account: Account) -> Any:
    return BYOKCredential.objects.filter(account=account)


def revoke(record: BYOKCredential) -> bool:
    """Revoke and forget the secret. Returns False when it was revoked already."""
    if record.revoked_at is not None:
        return False
    now = timezone.now()
    updated = BYOKCredential.objects.filter(pk=record.pk, revoked_at__isnull=True).update(
        revoked_at=now, secret_encrypted=""
    )
    record.refresh_from_db()
    if updated:
        log.info("byok credential %s revoked", record.public_id)
    return bool(updated)


# --- The router's lookup ----------------------------------------------------------------------


def credential_for(account: Account, vendor_name: str) -> Credential | None:
    """The account's newest active credential for this vendor, or None (then the platform's is used)."""
    if vendor_name == "sandbox":
        return None
    record = (
        BYOKCredential.objects.filter(account=account, provider=vendor_name, revoked_at__isnull=True)
        .exclude(secret_encrypted="")
        .order_by("-created_at", "-pk")
        .first()
    )
    if record is None:
        return None
    try:
        secret = reveal(record)
    except SecretUnavailable as exc:
        # Refuse rather than fall back to the shared pool: the caller asked for their own key.
        log.error("byok credential %s cannot be used: %s", record.public_id, exc)
        raise ApiError(
            503,
            "BYOK_UNAVAILABLE",
            f"Your {vendor_name} credential {record.alias!r} cannot be read on this server; "
            "register it again or revoke it to use the shared pool.",
            byok_id=record.public_id,
        ) from None
    return Credential(secret.api_key, secret.base_url or default_base_url(vendor_name), byok=True)


# --- The test call ----------------------------------------------------------------------------


@dataclass
class ProbeResult:
    ok: bool
    latency_ms: int
    error: str = ""


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _detail(raw: bytes) -> str:
    body = _json_or_none(raw)
    if body is None:
        return raw[:300].decode("utf-8", "replace")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or error)[:300]
    if isinstance(error, str):
        return error[:300]
    return str(body)[:300]


async def probe(vendor: Vendor, credential: Credential) -> ProbeResult:
    """One cheap authenticated call: GET {base_url}/models for OpenAI-compatible vendors.

    Another vendor can offer `async def verify_credential(credential) -> None`, raising
    VendorError when the credential does not work; without it the test is not available.
    """
    if not isinstance(vendor, OpenAICompatible):
        verify = getattr(vendor, "verify_credential", None)
        if verify is None:
            return ProbeResult(False, 0, f"Testing a {vendor.label} credential is not available yet.")
        started = time.perf_counter()
        try:
            await verify(credential)
        except VendorError as exc:
            return ProbeResult(False, int((time.perf_counter() - started) * 1000), exc.message)
        return ProbeResult(True, int((time.perf_counter() - started) * 1000))
    url = credential.base_url.rstrip("/") + "/models"
    started = time.perf_counter()
    latency = 0

    def elapsed() -> int:
        return int((time.perf_counter() - started) * 1000)

    raw = bytearray()
    try:
        client = client_for("byok-test", PROBE_TIMEOUT, public_only=user_urls_public_only())
        headers = {"Authorization": f"Bearer {credential.api_key}"}
        async with client.stream("GET", url, headers=headers, timeout=PROBE_TIMEOUT) as response:
            latency = elapsed()
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) > MAX_PROBE_BODY:
                    return ProbeResult(False, latency, f"{url} answered with more than {MAX_PROBE_BODY} bytes.")
    except httpx.TimeoutException:
        return ProbeResult(False, elapsed(), f"{vendor.label} did not answer within {PROBE_TIMEOUT.read:g} s.")
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        return ProbeResult(False, elapsed(), f"{vendor.label} is unreachable: {exc or type(exc).__name__}")
    status = response.status_code
    if status >= 400:
        return ProbeResult(False, latency, error_for_status(vendor.label, status, _detail(bytes(raw))).message)
    if not 200 <= status < 300:
        return ProbeResult(False, latency, f"{vendor.label} answered GET /models with HTTP {status}.")
    body = _json_or_none(bytes(raw))
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return ProbeResult(
            False, latency, f"{url} did not answer like an OpenAI-compatible API (no model list); check base_url."
        )
    return ProbeResult(True, latency)


def _store_result(record: BYOKCredential, result: ProbeResult) -> None:
    record.last_test_at = timezone.now()
    record.last_test_ok = result.ok
    record.last_test_latency_ms = result.latency_ms
    record.last_test_error = result.error[:MAX_ERROR_LENGTH]
    BYOKCredential.objects.filter(pk=record.pk).update(
        last_test_at=record.last_test_at,
        last_test_ok=record.last_test_ok,
        last_test_latency_ms=record.last_test_latency_ms,
        last_test_error=record.last_test_error,
    )


class NotTestable(Exception):
    pass


async def probe_and_store(record: BYOKCredential) -> ProbeResult:
    """Make the test call with the stored credential, store and return the result (secret scrubbed).

    Raises NotTestable for a revoked credential.
    """
    if record.revoked_at is not None:
        raise NotTestable("This credential is revoked; register the key again to use it.")
    vendor = get_vendor(record.provider)
    secret: Secret | None = None
    if vendor is None:
        result = ProbeResult(False, 0, f"Provider {record.provider!r} is no longer available on this server.")
    else:
        try:
            secret = reveal(record)
        except SecretUnavailable:
            result = ProbeResult(
                False, 0, "The stored credential cannot be decrypted on this server; register it again."
            )
        else:
            base_url = secret.base_url or default_base_url(record.provider)
            try:
                # Checked again at use: the host may resolve elsewhere than at registration.
                if secret.base_url:
                    await sync_to_async(check_public_url, thread_sensitive=False)(base_url)
            except UnsafeUrl as exc:
                result = ProbeResult(False, 0, f"base_url is refused: {exc}.")
            else:
                try:
                    result = await probe(vendor, Credential(secret.api_key, base_url, byok=True))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # report any failure of the call, never its details
                    log.warning("byok test of %s failed unexpectedly: %s", record.public_id, type(exc).__name__)
                    result = ProbeResult(False, 0, f"The test call failed: {type(exc).__name__}.")
    result.error = scrub(result.error, secret)
    await sync_to_async(_store_result)(record, result)
    return result
