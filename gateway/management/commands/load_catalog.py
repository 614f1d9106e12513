from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from gateway.catalog import load_catalog


class Command(BaseCommand):
    help = "Load gateway/catalog.json into the model catalog (admin edits are kept unless --reset)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reset", action="store_true", help="Overwrite existing entries with the file's values")

    def handle(self, *args: Any, reset: bool, **options: Any) -> None:
        created, updated = load_catalog(reset=reset)
        self.stdout.write(f"catalog: {created} created, {updated} updated")
