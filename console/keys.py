"""Project keys: `ifr_pk_proj_` + 40 base62 characters, stored as an HMAC.

The first 8 random characters are kept in clear as a lookup prefix (indexed, shown in lists);
the full key is compared as HMAC-SHA256 in constant time. The key itself exists only in the
response that creates it.

An active key found by `find_active_key` is kept in Django's cache under its HMAC for
API_KEY_CACHE_SECONDS (default 30), so most calls skip the database. Revoking (or saving or
deleting) a key replaces that entry with a "revoked" mark, so the key is refused at once in this
process and, with Redis as the cache, in every process. Without Redis each process has its own
cache: another process may still accept a revoked key for up to API_KEY_CACHE_SECONDS.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.base import BaseCache
from django.core.signals import setting_changed
from django.db.models import QuerySet
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from console.models import Project, ProjectKey
from infrai.lib.ids import random_base62

KEY_PREFIX = "ifr_pk_proj_"
RANDOM_LENGTH = 40
LOOKUP_LENGTH = 8
KEY_PATTERN = re.compile(rf"^{KEY_PREFIX}[0-9A-Za-z]{{{RANDOM_LENGTH}}}$")
# Touching last_used_at on every call would add a write to the hot path; once a minute is enough.
LAST_USED_RESOLUTION_SECONDS = 60
REVOKED = "revoked"
log = logging.getLogger(__name__)
# Key hash -> when this process last wrote the key's last_used_at (a cached key's own value is stale).
_touched: dict[str, float] = {}


@dataclass(frozen=True)
class NewKey:
    record: ProjectKey
    secret: str


def hash_key(secret: str) -> str:
    return hmac.new(settings.KEY_HASH_SECRET.encode(), secret.encode(), hashlib.sha256).hexdigest()


def create_key(project: Project, label: str = "") -> NewKey:
    secret = KEY_PREFIX + random_base62(RANDOM_LENGTH)
    record = ProjectKey.objects.create(
        project=project,
        label=label,
        lookup_prefix=secret[len(KEY_PREFIX) : len(KEY_PREFIX) + LOOKUP_LENGTH],
        key_hash=hash_key(secret),
    )
    return NewKey(record=record, secret=secret)


def is_well_formed(secret: str) -> bool:
    return bool(KEY_PATTERN.match(secret))


_shared_cache: BaseCache | None = None


def shared_cache() -> BaseCache:
    """Django's default cache, one instance per process. `django.core.cache.cache` is one per
    request under ASGI (a context-local), and each new RedisCache opens its own connection pool:
    a new TCP connection to Redis per request (~1.2 ms of CPU). This one keeps its pool."""
    global _shared_cache
    if _shared_cache is None:
        _shared_cache = caches.create_connection(DEFAULT_CACHE_ALIAS)
    return _shared_cache


def _caches_setting_changed(setting: str, **_: Any) -> None:
    global _shared_cache
    if setting == "CACHES":
        _shared_cache = None


setting_changed.connect(_caches_setting_changed, dispatch_uid="shared-cache-settings")


def cache_seconds() -> int:
    return settings.API_KEY_CACHE_SECONDS


def entry_name(key_hash: str) -> str:
    return f"project-key:{key_hash}"


class _NotCached:
    pass


NOT_CACHED = _NotCached()


def from_cache(value: Any) -> ProjectKey | None | _NotCached:
    """A key cache entry read: the key, None for a revoked key, NOT_CACHED for no entry."""
    if value == REVOKED:
        return None
    if isinstance(value, ProjectKey):
        return value
    return NOT_CACHED


def find_active_key(secret: str) -> ProjectKey | None:
    """The active key matching `secret` (with its project and account), or None. The caller
    checks well-formedness first. Each call gets its own copy of the objects."""
    lookup = secret[len(KEY_PREFIX) : len(KEY_PREFIX) + LOOKUP_LENGTH]
    digest = hash_key(secret)
    entry = entry_name(digest)
    try:
        cached = from_cache(shared_cache().get(entry))
    except Exception:
        log.warning("key cache unavailable; looking the key up in the database", exc_info=True)
        cached = NOT_CACHED
    if cached is not NOT_CACHED:
        return cached
    candidates = ProjectKey.objects.select_related("project__account").filter(
        lookup_prefix=lookup, revoked_at__isnull=True
    )
    for candidate in candidates:
        if hmac.compare_digest(candidate.key_hash, digest):
            try:
                # add, not set: a revocation written meanwhile must win over this older read.
                shared_cache().add(entry, candidate, timeout=cache_seconds())
            except Exception:
                log.warning("key cache unavailable", exc_info=True)
            return candidate
    return None


def touch_due(key: ProjectKey) -> bool:
    """Whether this call should write the key's last_used_at (at most once a minute per process)."""
    if key.last_used_at and (timezone.now() - key.last_used_at).total_seconds() < LAST_USED_RESOLUTION_SECONDS:
        return False
    touched = _touched.get(key.key_hash)
    return touched is None or time.monotonic() - touched >= LAST_USED_RESOLUTION_SECONDS


def touch_last_used(key: ProjectKey) -> None:
    if not touch_due(key):
        return
    now = timezone.now()
    ProjectKey.objects.filter(pk=key.pk).update(last_used_at=now)
    key.last_used_at = now
    _touched[key.key_hash] = time.monotonic()
    if len(_touched) > 100_000:
        _touched.clear()


def forget_cached_key(key_hash: str) -> None:
    """Refuse this key from the cache from now on (a later lookup that finds it active in the
    database caches it again)."""
    try:
        shared_cache().set(entry_name(key_hash), REVOKED, timeout=cache_seconds())
    except Exception:
        log.warning("key cache unavailable: a revoked key may be accepted for %s s", cache_seconds(), exc_info=True)


def revoke_key(key: ProjectKey) -> bool:
    """Revoke at once; True if this call revoked it, False if it already was."""
    updated = ProjectKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    forget_cached_key(key.key_hash)
    key.refresh_from_db(fields=["revoked_at"])
    return updated == 1


def _key_saved(instance: ProjectKey, created: bool, **_: Any) -> None:
    if created:
        return
    if instance.revoked_at is not None:
        forget_cached_key(instance.key_hash)
        return
    try:
        shared_cache().delete(entry_name(instance.key_hash))
    except Exception:
        log.warning("key cache unavailable", exc_info=True)


def _key_deleted(instance: ProjectKey, **_: Any) -> None:
    forget_cached_key(instance.key_hash)


post_save.connect(_key_saved, sender=ProjectKey, dispatch_uid="project-key-saved")
post_delete.connect(_key_deleted, sender=ProjectKey, dispatch_uid="project-key-deleted")


def keys_for_account(account_id: int) -> QuerySet[ProjectKey]:
    return ProjectKey.objects.filter(project__account_id=account_id).select_related("project")
