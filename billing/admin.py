from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from billing.models import CreditBalance, Hold, LedgerEntry


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
