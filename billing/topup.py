"""The top-up entry point of the `/v1` API: `POST /v1/account/topup {amount_usd}` -> `{checkout_url}`.

The gateway maps `TopUpError` (a ValueError with `.field`) to a 400 field error and
`TopUpUnavailable` to a 502/503; both carry a message fit to show the caller.
Call it outside any database transaction (not inside `gateway.idempotency.run_once`, whose
callback runs in one): it calls Stripe, and refuses to do that while a transaction is open.
Stripe's own idempotency key (one per TopUp) already makes a retried session creation safe.
"""

from __future__ import annotations

from billing.stripe_checkout import DEFAULT_RETURN_PATH, TopUpError, TopUpUnavailable, parse_amount, start_topup
from console.models import Account

__all__ = ["TopUpError", "TopUpUnavailable", "api_topup"]


def api_topup(account: Account, amount_usd_raw: object, base_url: str) -> str:
    """Start a Stripe Checkout for `amount_usd_raw` (a JSON number or decimal string); its URL.

    After paying, the browser lands on the console's top-up page, which shows the balance as
    soon as Stripe's webhook has credited it.
    """
    amount = parse_amount(amount_usd_raw)
    return start_topup(account, amount, DEFAULT_RETURN_PATH, base_url, origin="api")
