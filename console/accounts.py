"""Creating accounts and finding things only through the caller's account."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.http import Http404

from billing import ledger
from console.models import Account, Project, ProjectKey, User

DEFAULT_PROJECT_NAME = "Default project"


class ProjectNameTaken(ValueError):
    pass


@transaction.atomic
def create_account(email: str) -> Account:
    """A user, their account, its default project and its (zero) credit balance."""
    user = User.objects.create_user(email=email)
    return ensure_account(user)


@transaction.atomic
def ensure_account(user: User) -> Account:
    account, created = Account.objects.get_or_create(owner=user)
    if created:
        Project.objects.create(account=account, name=DEFAULT_PROJECT_NAME, is_default=True)
        ledger.open_balance(account)
    return account


def get_or_create_account_for_email(email: str) -> Account:
    email = email.strip().lower()
    user = User.objects.filter(email__iexact=email).first()
    if user is None:
        return create_account(email)
    return ensure_account(user)


def default_project(account: Account) -> Project:
    return account.projects.get(is_default=True)


def create_project(account: Account, name: str) -> Project:
    try:
        with transaction.atomic():
            return Project.objects.create(account=account, name=name)
    except IntegrityError as exc:
        raise ProjectNameTaken(name) from exc


def rename_project(project: Project, name: str) -> Project:
    project.name = name
    try:
        with transaction.atomic():
            project.save(update_fields=["name"])
    except IntegrityError as exc:
        raise ProjectNameTaken(name) from exc
    return project


def get_project(account: Account, project_public_id: str) -> Project:
    try:
        return Project.objects.get(account=account, public_id=project_public_id)
    except Project.DoesNotExist as exc:
        raise Http404("No such project") from exc


def get_key(account: Account, key_public_id: str) -> ProjectKey:
    try:
        return ProjectKey.objects.select_related("project").get(project__account=account, public_id=key_public_id)
    except ProjectKey.DoesNotExist as exc:
        raise Http404("No such key") from exc
