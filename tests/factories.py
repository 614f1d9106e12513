"""Plain factory functions for tests: accounts with credit, keys, signed-in clients."""

from __future__ import annotations

from typing import Any

from django.test import Client

from billing import ledger
from billing.models import EntryKind, UsageRecord
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


def unsaved_usage_record(account: Account, request_id: str, cost_nano: int, **fields: Any) -> UsageRecord:
    """A chat call's usage record, unsaved (the ledger writes it with a settlement)."""
    values: dict[str, Any] = {
        "request_id": request_id,
        "account_id": account.pk,
        "project_id": default_project(account).pk,
        "capability": "chat",
        "model": "sandbox-chat",
        "vendor": "sandbox",
        "input_tokens": 12,
        "output_tokens": 34,
        "units": {"note": "exact"},
        "cost_nano": cost_nano,
    }
    return UsageRecord(**{**values, **fields})
