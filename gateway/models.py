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
    request_id = models.CharField(max_length=36, blank=True, default="", help_text="The call that claimed the key")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "scope", "key"], name="idempotency_key_unique_per_account")
        ]


class CatalogModel(models.Model):
    """A model a vendor serves, with its prices. Loaded from gateway/catalog.json; editable in the admin.

    Prices are in `currency` (USD or CNY, converted with settings.CNY_PER_USD) per the unit
    named by the field. GenStudio prices each model-and-chip pair: `chip` tells them apart.
    """

    vendor = models.CharField(max_length=40)
    model_id = models.CharField(max_length=120)
    chip = models.CharField(max_length=40, blank=True)
    capability = models.CharField(max_length=20)
    display_name = models.CharField(max_length=120, blank=True)
    currency = models.CharField(max_length=3, default="USD", choices=[("USD", "USD"), ("CNY", "CNY")])
    input_per_mtok = models.DecimalField(max_digits=18, decimal_places=9, default=0)
    cached_input_per_mtok = models.DecimalField(max_digits=18, decimal_places=9, null=True, blank=True)
    output_per_mtok = models.DecimalField(max_digits=18, decimal_places=9, default=0)
    batch_input_per_mtok = models.DecimalField(max_digits=18, decimal_places=9, null=True, blank=True)
    batch_output_per_mtok = models.DecimalField(max_digits=18, decimal_places=9, null=True, blank=True)
    per_image = models.DecimalField(max_digits=18, decimal_places=9, default=0)
    per_second = models.DecimalField(max_digits=18, decimal_places=9, default=0)
    per_kchar = models.DecimalField(max_digits=18, decimal_places=9, default=0)
    per_minute = models.DecimalField(max_digits=18, decimal_places=9, default=0)
    context_tokens = models.PositiveIntegerField(default=0)
    max_output_tokens = models.PositiveIntegerField(default=0)
    tasks = models.JSONField(default=list, blank=True)
    quality_rank = models.PositiveSmallIntegerField(default=1, help_text="Higher is smarter")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["capability", "vendor", "model_id", "chip"]
        constraints = [
            models.UniqueConstraint(fields=["vendor", "model_id", "chip", "capability"], name="catalog_entry_unique")
        ]

    def __str__(self) -> str:
        chip = f" on {self.chip}" if self.chip else ""
        return f"{self.vendor}/{self.model_id}{chip} ({self.capability})"


from gateway.models_byok import BYOKCredential  # noqa: E402,F401
