import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing import ledger


class Command(BaseCommand):
    help = "Release holds whose calls never settled (expired); --loop keeps sweeping."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", action="store_true")
        parser.add_argument("--interval", type=int, default=30)

    def handle(self, *args: Any, loop: bool, interval: int, **options: Any) -> None:
        while True:
            released = ledger.sweep_expired_holds()
            if released:
                self.stdout.write(f"released {released} expired hold(s)")
            if not loop:
                return
            time.sleep(interval)
