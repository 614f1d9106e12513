from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from console.models import Account, Project, ProjectKey, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "date_joined"]
    search_fields = ["email", "name"]
    fieldsets = [
        (None, {"fields": ["email", "name", "password"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["public_id", "owner", "created_at"]
    search_fields = ["public_id", "owner__email"]
    readonly_fields = ["public_id"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["public_id", "name", "account", "is_default", "created_at"]
    search_fields = ["public_id", "name", "account__owner__email"]


@admin.register(ProjectKey)
class ProjectKeyAdmin(admin.ModelAdmin):
    list_display = ["public_id", "display_prefix", "label", "project", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["public_id", "lookup_prefix", "key_hash", "created_at", "last_used_at"]
    exclude: list[str] = []
