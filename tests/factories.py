"""Plain factory functions for tests: accounts with credit, keys, signed-in clients."""

from __future__ import annotations

from django.test import Client

from billing import ledger
from billing.models import EntryKind
from console import keys
from console.accounts import create_account, default_project
from console.models import Account
from infrai.lib.ids import uuid7


def make_account(email: str = "alice@example.com", credit_nano: int = 0) -> Account:
    account = create_account(email)
    if credit_nano:
        ledger.credit(account, credit_nano, EntryKind.ADJUSTMENT, f"test-credit:{uuid7()}")
    return account


def make_key(account: Account, label: str = "test") -> str:
    return keys.create_key(default_project(account), label=label).secret


def signed_in_client(account: Account) -> Client:
    client = Client()
    client.force_login(account.owner)
    return client


def bearer(secret: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
