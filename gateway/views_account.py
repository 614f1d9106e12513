"""`/v1/account/*`: keys, balance and the routes every `/v1` caller can reach."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from billing import ledger
from console import keys
from console.models import ProjectKey
from gateway.api import ApiError, ApiRequestState, api_view, field_error, parse_json_body
from gateway.idempotency import explicit_key, run_once
from infrai.lib.money import format_usd

MAX_LABEL_LENGTH = 80


def key_json(key: ProjectKey) -> dict[str, Any]:
    return {
        "id": key.public_id,
        "object": "project_key",
        "label": key.label,
        "prefix": key.display_prefix,
        "project": key.project.public_id,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


@api_view(["GET", "POST"])
def account_keys(request: HttpRequest, state: ApiRequestState) -> dict[str, Any]:
    caller = state.caller
    assert caller is not None
    if request.method == "GET":
        records = keys.keys_for_account(caller.account.pk).filter(project=caller.project)
        return {"object": "list", "data": [key_json(k) for k in records]}

    body = parse_json_body(request)
    idem_key = explicit_key(request, body, required=True)
    assert idem_key is not None
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > MAX_LABEL_LENGTH:
        raise field_error("label", f"label must be a string of at most {MAX_LABEL_LENGTH} characters.")

    def create() -> tuple[int, dict[str, Any], dict[str, Any]]:
        new = keys.create_key(caller.project, label=label.strip())
        stored = key_json(new.record)
        return 201, stored, {**stored, "key": new.secret}

    status, response, replayed = run_once(caller.account, "account.keys.create", idem_key, body, create)
    if replayed:
        response["key"] = None
        response["message"] = (
            "Replayed: this key was created by an earlier call with the same idempotency_key; its secret was shown only then."
        )
    response["replayed"] = replayed
    response["_status"] = status
    return response


@api_view(["GET", "DELETE"])
def account_key_detail(request: HttpRequest, state: ApiRequestState, key_id: str) -> dict[str, Any]:
    caller = state.caller
    assert caller is not None
    key = keys.keys_for_account(caller.account.pk).filter(public_id=key_id).first()
    if key is None:
        raise ApiError(404, "NOT_FOUND", f"No key {key_id} in this account.", field="key_id")
    if request.method == "DELETE":
        keys.revoke_key(key)
    return key_json(key)


@api_view(["GET"])
def account_balance(request: HttpRequest, state: ApiRequestState) -> dict[str, Any]:
    caller = state.caller
    assert caller is not None
    balance = ledger.get_balance(caller.account)
    return {
        "balance_usd": format_usd(balance.balance_nano),
        "held_usd": format_usd(balance.held_nano),
        "available_usd": format_usd(balance.available_nano),
    }


@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
def not_found(request: HttpRequest, state: ApiRequestState, path: str = "") -> dict[str, Any]:
    """Unknown `/v1` routes: authentication first, so a valid key always gets past it."""
    raise ApiError(404, "NOT_FOUND", f"There is no route /v1/{path}. See /v1/docs for the API.")


@api_view(["POST"])
def account_topup(request: HttpRequest, state: ApiRequestState) -> dict[str, Any]:
    from billing.topup import TopUpError, TopUpUnavailable, api_topup

    caller = state.caller
    assert caller is not None
    body = parse_json_body(request)
    if "amount_usd" not in body:
        raise field_error("amount_usd", 'amount_usd is required, e.g. {"amount_usd": "25"}.', code="MISSING_FIELD")
    base_url = settings.SITE_URL or request.build_absolute_uri("/").rstrip("/")
    try:
        checkout_url = api_topup(caller.account, body["amount_usd"], base_url)
    except TopUpError as exc:
        raise field_error(exc.field, exc.message) from exc
    except TopUpUnavailable as exc:
        raise ApiError(503, "PAYMENTS_UNAVAILABLE", str(exc)) from exc
    return {"checkout_url": checkout_url}
