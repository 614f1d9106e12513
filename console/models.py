"""Accounts, their users, projects and project keys."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone

from infrai.lib.ids import public_id


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        if not email:
            raise ValueError("email is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    def __str__(self) -> str:
        return self.email


def _account_id() -> str:
    return public_id("acct")


def _project_id() -> str:
    return public_id("proj")


def _key_id() -> str:
    return public_id("key")


class Account(models.Model):
    """The tenant: owns projects, keys, credit and everything billed."""

    public_id = models.CharField(max_length=40, unique=True, default=_account_id, editable=False)
    owner = models.OneToOneField(User, on_delete=models.PROTECT, related_name="account")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.public_id} ({self.owner.email})"


class Project(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=_project_id, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=80)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-is_default", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["account", "name"], name="project_name_unique_per_account"),
            models.UniqueConstraint(
                fields=["account"], condition=models.Q(is_default=True), name="one_default_project_per_account"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ProjectKey(models.Model):
    """A `/v1` credential. Only an HMAC of the key is kept; see console/keys.py."""

    public_id = models.CharField(max_length=40, unique=True, default=_key_id, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="keys")
    label = models.CharField(max_length=80, blank=True)
    lookup_prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.display_prefix}… ({self.label or 'no label'})"

    @property
    def display_prefix(self) -> str:
        from console.keys import KEY_PREFIX

        return f"{KEY_PREFIX}{self.lookup_prefix}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class MagicLink(models.Model):
    """A single-use e-mail sign-in link; only its hash is stored."""

    email = models.EmailField(db_index=True)
    token_hash = models.CharField(max_length=64, unique=True)
    requested_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
