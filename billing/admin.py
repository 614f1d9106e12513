from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from billing.models import CreditBalance, Hold, LedgerEntry, StripeEvent, TopUp


class ReadOnlyAdmin(admin.ModelAdmin):
    """The ledger is changed only through billing/ledger.py, never by editing rows."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "account",
        "kind",
        "amount_nano",
        "held_delta_nano",
        "balance_after_nano",
        "reference",
    ]
    list_filter = ["kind"]
    search_fields = ["reference", "account__public_id"]


@admin.register(CreditBalance)
class CreditBalanceAdmin(ReadOnlyAdmin):
    list_display = ["account", "balance_nano", "held_nano", "updated_at"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "account", "amount_nano", "state", "created_at", "expires_at"]
    list_filter = ["state"]


@admin.register(TopUp)
class TopUpAdmin(ReadOnlyAdmin):
    """Changed only by Stripe's webhooks (billing/webhooks.py)."""

    list_display = ["public_id", "account", "amount_nano", "state", "credited_nano", "refunded_nano", "created_at"]
    list_filter = ["state", "origin"]
    search_fields = ["public_id", "checkout_session_id", "payment_intent_id", "account__public_id"]


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "type", "deliveries", "outcome", "received_at", "processed_at"]
    list_filter = ["type"]
    search_fields = ["event_id"]
