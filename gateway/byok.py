"""BYOK credentials: the lookup the router uses. Registration and encryption arrive with the BYOK issue."""

from __future__ import annotations

from console.models import Account
from gateway.vendors.base import Credential


def credential_for(account: Account, vendor_name: str) -> Credential | None:
    return None
