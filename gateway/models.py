"""Stored results of cost-incurring and resource-creating calls, for idempotent replays."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from console.models import Account


class IdempotencyRecord(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    scope = models.CharField(max_length=60, help_text="The capability, e.g. account.keys.create")
    key = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)
    response = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "scope", "key"], name="idempotency_key_unique_per_account")
        ]
