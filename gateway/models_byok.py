"""BYOK: a caller's own vendor credential, encrypted at rest. The rules live in gateway/byok.py."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from console.models import Account
from infrai.lib.ids import public_id


def _byok_id() -> str:
    return public_id("byok")


class BYOKCredential(models.Model):
    """One registered credential. Only `fingerprint` is ever shown; the secret is a Fernet token.

    `secret_encrypted` holds the credentials JSON ({api_key, base_url?}) encrypted with the keys
    of settings.BYOK_ENCRYPTION_KEYS; revoking empties it, so a revoked key is gone for good.
    """

    public_id = models.CharField(max_length=40, unique=True, default=_byok_id, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="byok_credentials")
    provider = models.CharField(max_length=40, help_text="A vendor name of gateway.vendors.VENDORS")
    alias = models.CharField(max_length=80)
    secret_encrypted = models.TextField(blank=True, editable=False)
    fingerprint = models.CharField(max_length=40)
    created_at = models.DateTimeField(default=timezone.now)
    last_test_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_test_error = models.CharField(max_length=500, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "BYOK credential"
        indexes = [models.Index(fields=["account", "provider", "-created_at"], name="byok_account_provider")]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "alias"],
                condition=models.Q(revoked_at__isnull=True),
                name="byok_alias_unique_per_account",
            )
        ]

    def __str__(self) -> str:
        return f"{self.alias} ({self.provider}, {self.fingerprint})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
