from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from console import keys
from console.accounts import default_project
from console.models import Account


class Command(BaseCommand):
    help = "Create a project key for an existing account; the key is printed alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--project", default=None, help="Project name (default: the default project)")
        parser.add_argument("--label", default="created by manage.py")

    def handle(self, *args: Any, email: str, project: str | None, label: str, **options: Any) -> None:
        account = Account.objects.filter(owner__email__iexact=email).first()
        if account is None:
            raise CommandError(f"no account for {email}; create it with create_account first")
        if project is None:
            target = default_project(account)
        else:
            found = account.projects.filter(name=project).first()
            if found is None:
                raise CommandError(f"{email} has no project named {project!r}")
            target = found
        new = keys.create_key(target, label=label)
        self.stdout.write(f"created {new.record.public_id} in {target.public_id} ({target.name})")
        self.stdout.write(new.secret)
