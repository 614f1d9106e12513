from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email

from billing import ledger
from billing.models import EntryKind
from console.accounts import get_or_create_account_for_email
from infrai.lib.ids import uuid7
from infrai.lib.money import MoneyError, usd_to_nano


class Command(BaseCommand):
    help = "Create an account (user, default project, balance); optionally give it credit as an adjustment."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--credit-usd", default=None, help="Credit to add, e.g. 10 or 0.50")

    def handle(self, *args: Any, email: str, credit_usd: str | None, **options: Any) -> None:
        try:
            validate_email(email)
        except ValidationError as exc:
            raise CommandError(f"not an e-mail address: {email}") from exc
        amount = 0
        if credit_usd is not None:
            try:
                amount = usd_to_nano(Decimal(credit_usd))
            except (InvalidOperation, MoneyError) as exc:
                raise CommandError(f"--credit-usd must be a decimal amount of dollars, got {credit_usd!r}") from exc
            if amount <= 0:
                raise CommandError("--credit-usd must be positive")
        account = get_or_create_account_for_email(email)
        if amount:
            ledger.credit(account, amount, EntryKind.ADJUSTMENT, f"adjustment:cli:{uuid7()}", memo="Credit by operator")
        balance = ledger.get_balance(account)
        self.stdout.write(f"{account.public_id} {account.owner.email} balance_nano={balance.balance_nano}")
