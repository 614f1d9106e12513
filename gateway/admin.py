from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from gateway.models import BYOKCredential, CatalogModel, IdempotencyRecord


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    """Prices and limits are edited here; `manage.py load_catalog` keeps these edits."""

    list_display = [
        "model_id",
        "vendor",
        "chip",
        "capability",
        "currency",
        "input_per_mtok",
        "output_per_mtok",
        "per_image",
        "per_kchar",
        "per_minute",
        "per_second",
        "quality_rank",
        "enabled",
    ]
    list_filter = ["vendor", "capability", "currency", "enabled"]
    list_editable = ["enabled"]
    search_fields = ["model_id", "display_name"]


@admin.register(BYOKCredential)
class BYOKCredentialAdmin(admin.ModelAdmin):
    """Metadata only: the encrypted secret is never shown, and credentials are not edited here."""

    list_display = [
        "public_id",
        "account",
        "provider",
        "alias",
        "fingerprint",
        "created_at",
        "last_test_ok",
        "revoked_at",
    ]
    list_filter = ["provider"]
    search_fields = ["public_id", "alias", "account__public_id"]
    exclude = ["secret_encrypted"]
    readonly_fields = [
        "public_id",
        "account",
        "provider",
        "alias",
        "fingerprint",
        "created_at",
        "last_test_at",
        "last_test_ok",
        "last_test_latency_ms",
        "last_test_error",
        "revoked_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ["account", "scope", "key", "status_code", "created_at", "expires_at"]
    search_fields = ["key", "account__public_id"]
