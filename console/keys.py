"""Project keys: `ifr_pk_proj_` + 40 base62 characters, stored as an HMAC.

The first 8 random characters are kept in clear as a lookup prefix (indexed, shown in lists);
the full key is compared as HMAC-SHA256 in constant time. The key itself exists only in the
response that creates it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from console.models import Project, ProjectKey
from infrai.lib.ids import random_base62

KEY_PREFIX = "ifr_pk_proj_"
RANDOM_LENGTH = 40
LOOKUP_LENGTH = 8
KEY_PATTERN = re.compile(rf"^{KEY_PREFIX}[0-9A-Za-z]{{{RANDOM_LENGTH}}}$")
# Touching last_used_at on every call would add a write to the hot path; once a minute is enough.
LAST_USED_RESOLUTION_SECONDS = 60


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


def find_active_key(secret: str) -> ProjectKey | None:
    """The active key matching `secret`, or None. The caller checks well-formedness first."""
    lookup = secret[len(KEY_PREFIX) : len(KEY_PREFIX) + LOOKUP_LENGTH]
    digest = hash_key(secret)
    candidates = ProjectKey.objects.select_related("project__account").filter(
        lookup_prefix=lookup, revoked_at__isnull=True
    )
    for candidate in candidates:
        if hmac.compare_digest(candidate.key_hash, digest):
            return candidate
    return None


def touch_last_used(key: ProjectKey) -> None:
    now = timezone.now()
    if key.last_used_at and (now - key.last_used_at).total_seconds() < LAST_USED_RESOLUTION_SECONDS:
        return
    ProjectKey.objects.filter(pk=key.pk).update(last_used_at=now)
    key.last_used_at = now


def revoke_key(key: ProjectKey) -> bool:
    """Revoke at once; True if this call revoked it, False if it already was."""
    updated = ProjectKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db(fields=["revoked_at"])
    return updated == 1


def keys_for_account(account_id: int) -> QuerySet[ProjectKey]:
    return ProjectKey.objects.filter(project__account_id=account_id).select_related("project")
