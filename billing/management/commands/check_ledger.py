from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing import ledger


class Command(BaseCommand):
    help = "Verify every balance row equals its ledger's sums and its open holds; exit 1 if not."

    def handle(self, *args: Any, **options: Any) -> None:
        problems = ledger.check_consistency()
        for p in problems:
            self.stderr.write(
                f"account {p.account_id}: balance {p.balance_nano} vs ledger {p.ledger_balance_nano}; "
                f"held {p.held_nano} vs ledger {p.ledger_held_nano} vs open holds {p.open_holds_nano}"
            )
        if problems:
            raise CommandError(f"{len(problems)} account(s) disagree with the ledger")
        self.stdout.write("ledger consistent")
