"""The credit ledger: append-only entries, a balance row per account, and holds."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from console.models import Account
from infrai.lib.ids import public_id


class EntryKind(models.TextChoices):
    SIGNUP_GRANT = "signup_grant", "Sign-up grant"
    TOPUP = "topup", "Top-up"
    USAGE = "usage", "Usage"
    HOLD = "hold", "Hold"
    RELEASE = "release", "Release"
    REFUND = "refund", "Refund"
    ADJUSTMENT = "adjustment", "Adjustment"


class CreditBalance(models.Model):
    """Running totals of the ledger, updated in the same transaction as every entry.

    `balance_nano` = sum of entries' amounts; `held_nano` = sum of entries' held deltas
    (open holds). Available credit is their difference.
    """

    account = models.OneToOneField(Account, on_delete=models.CASCADE, primary_key=True, related_name="credit")
    balance_nano = models.BigIntegerField(default=0)
    held_nano = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(held_nano__gte=0), name="held_never_negative")]

    @property
    def available_nano(self) -> int:
        return self.balance_nano - self.held_nano


class AppendOnlyError(RuntimeError):
    pass


class LedgerEntry(models.Model):
    """One immutable line of the ledger. Never updated or deleted."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="ledger_entries")
    kind = models.CharField(max_length=20, choices=EntryKind.choices)
    amount_nano = models.BigIntegerField(help_text="Change to the balance, nano-USD (signed)")
    held_delta_nano = models.BigIntegerField(default=0, help_text="Change to held credit, nano-USD")
    balance_after_nano = models.BigIntegerField()
    reference = models.CharField(max_length=200, unique=True)
    memo = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["account", "-created_at"], name="ledger_account_time")]

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AppendOnlyError("ledger entries are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AppendOnlyError("ledger entries are append-only")


class HoldState(models.TextChoices):
    OPEN = "open", "Open"
    SETTLED = "settled", "Settled"
    RELEASED = "released", "Released"
    EXPIRED = "expired", "Expired"


def _hold_id() -> str:
    return public_id("hold")


class Hold(models.Model):
    """Credit reserved for a call in flight; settled, released or expired exactly once."""

    public_id = models.CharField(max_length=40, unique=True, default=_hold_id, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="holds")
    reference = models.CharField(max_length=160, unique=True)
    amount_nano = models.BigIntegerField()
    charged_nano = models.BigIntegerField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=HoldState.choices, default=HoldState.OPEN)
    memo = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "expires_at"], name="hold_open_expiry")]


class UsageRecord(models.Model):
    """One billed call, written in the same transaction as its settlement."""

    request_id = models.CharField(max_length=36, unique=True)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="usage_records")
    project = models.ForeignKey("console.Project", on_delete=models.SET_NULL, null=True, related_name="+")
    key = models.ForeignKey("console.ProjectKey", on_delete=models.SET_NULL, null=True, related_name="+")
    capability = models.CharField(max_length=40)
    model = models.CharField(max_length=120, blank=True)
    vendor = models.CharField(max_length=40, blank=True)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    units = models.JSONField(default=dict, blank=True, help_text="Non-token units: images, seconds, characters")
    cost_nano = models.BigIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    cache_hit = models.BooleanField(default=False)
    byok = models.BooleanField(default=False)
    status = models.CharField(max_length=20, default="ok")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["account", "-created_at"], name="usage_account_time")]


# --- Stripe top-up ----------------------------------------------------------------------------


class TopUpState(models.TextChoices):
    PENDING = "pending", "Waiting for payment"
    PAID = "paid", "Paid"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"


def _topup_id() -> str:
    return public_id("topup")


class TopUp(models.Model):
    """One Stripe Checkout attempt to buy credit. Credited only by a verified Stripe webhook.

    The ledger reference of its credit is ``topup:<checkout session id>``, so the credit is
    posted once however often Stripe repeats its events.
    """

    public_id = models.CharField(max_length=40, unique=True, default=_topup_id, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="topups")
    amount_nano = models.BigIntegerField(help_text="Amount asked for, nano-USD")
    credited_nano = models.BigIntegerField(default=0, help_text="Credit posted when Stripe confirmed the payment")
    refunded_nano = models.BigIntegerField(default=0, help_text="Refunds taken back from the balance")
    state = models.CharField(max_length=10, choices=TopUpState.choices, default=TopUpState.PENDING)
    origin = models.CharField(max_length=10, default="console", help_text="console or api")
    return_path = models.CharField(max_length=500, default="/billing/")
    checkout_session_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    checkout_url = models.URLField(max_length=2000, blank=True)
    payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    failure = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["account", "-created_at"], name="topup_account_time")]
        constraints = [models.CheckConstraint(condition=models.Q(amount_nano__gt=0), name="topup_amount_positive")]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.state})"


class StripeEvent(models.Model):
    """Every Stripe event received, stored once under its Stripe id (a repeat only counts)."""

    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    livemode = models.BooleanField(default=False)
    payload = models.JSONField()
    deliveries = models.PositiveIntegerField(default=1)
    outcome = models.CharField(max_length=200, blank=True)
    last_error = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [models.UniqueConstraint(fields=["event_id"], name="stripe_event_id_unique")]

    def __str__(self) -> str:
        return f"{self.event_id} ({self.type})"
