"""Pushing job state changes to the owner's open pages over the Channels layer.

Each account has one group; a worker process sends to it after its transaction commits, so a
page served by another process (or machine) receives it when the layer is Redis. With the
embedded in-memory layer only the same process hears it, and pages fall back to polling.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


def account_group(account_public_id: str) -> str:
    return f"account.{account_public_id}"


def _send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # a live update must never fail the job; pages also poll
        log.warning("could not push a live update to %s", group, exc_info=True)


def publish(account_public_id: str, event: str, payload: dict[str, Any]) -> None:
    """Send `{type: "job.event", event, payload}` to the account's pages once the transaction commits."""
    message = {"type": "job.event", "event": event, "payload": payload}
    transaction.on_commit(lambda: _send(account_group(account_public_id), message))
