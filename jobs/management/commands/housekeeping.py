import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from jobs import housekeeping


class Command(BaseCommand):
    help = "Run the periodic chores once (expired holds, dead workers' leases, timeouts, retention); --loop repeats."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", action="store_true")
        parser.add_argument("--interval", type=float, default=15.0)

    def handle(self, *args: Any, loop: bool, interval: float, **options: Any) -> None:
        while True:
            for name, count in housekeeping.run_all().items():
                if count:
                    self.stdout.write(f"{name}: {count}")
            if not loop:
                return
            time.sleep(interval)
