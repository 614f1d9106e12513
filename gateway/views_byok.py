"""`/v1/account/byok`: register, list, test and revoke the caller's own vendor credentials.

Credentials are write-only: every answer carries the fingerprint, never the secret. Everything
is scoped to the caller's account; another account's id is a 404.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.views.decorators.debug import sensitive_variables

from console.models import Account
from gateway import byok
from gateway.api import ApiError, ApiRequestState, api_view, api_view_async, parse_json_body
from gateway.idempotency import explicit_key, run_once
from gateway.models_byok import BYOKCredential

SCOPE = "account.byok.register"


def credential_json(record: BYOKCredential) -> dict[str, Any]:
    return {
        "id": record.public_id,
        "object": "byok_credential",
        "provider": record.provider,
        "alias": record.alias,
        "fingerprint": record.fingerprint,
        "created_at": record.created_at.isoformat(),
        "last_test_at": record.last_test_at.isoformat() if record.last_test_at else None,
        "last_test_ok": record.last_test_ok,
        "last_test_latency_ms": record.last_test_latency_ms,
        "last_test_error": record.last_test_error or None,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


def _get(account: Account, byok_id: str) -> BYOKCredential:
    record = byok.credentials_for_account(account).filter(public_id=byok_id).first()
    if record is None:
        raise ApiError(404, "NOT_FOUND", f"No BYOK credential {byok_id} in this account.", field="id")
    return record


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


@sensitive_variables("body", "registration")
def _register(request: HttpRequest, account: Account) -> dict[str, Any]:
    body = parse_json_body(request)
    idem_key = explicit_key(request, body, required=True)
    assert idem_key is not None
    try:
        registration = byok.clean_registration(body.get("provider"), body.get("alias"), body.get("credentials"))
    except byok.InvalidCredential as exc:
        raise exc.api_error() from None

    def create() -> tuple[int, dict[str, Any], dict[str, Any]]:
        try:
            record = byok.register(account, registration)
        except byok.InvalidCredential as exc:
            raise exc.api_error() from None
        stored = credential_json(record)
        return 201, stored, dict(stored)

    status, response, replayed = run_once(account, SCOPE, idem_key, registration.idempotency_material(), create)
    if replayed:
        # The record as it is now (it may have been tested or revoked since), not the snapshot.
        current = byok.credentials_for_account(account).filter(public_id=response.get("id")).first()
        if current is not None:
            response = credential_json(current)
    response["replayed"] = replayed
    response["_status"] = status
    return response


@api_view(["GET", "POST"])
def byok_collection(request: HttpRequest, state: ApiRequestState) -> dict[str, Any]:
    caller = state.caller
    assert caller is not None
    if request.method == "POST":
        return _register(request, caller.account)
    records = byok.credentials_for_account(caller.account)
    if not _truthy(request.GET.get("include_revoked")):
        records = records.filter(revoked_at__isnull=True)
    return {"object": "list", "data": [credential_json(r) for r in records], "providers": byok.providers()}


@api_view(["GET", "DELETE"])
def byok_detail(request: HttpRequest, state: ApiRequestState, byok_id: str) -> dict[str, Any]:
    caller = state.caller
    assert caller is not None
    record = _get(caller.account, byok_id)
    if request.method == "DELETE":
        byok.revoke(record)
    return credential_json(record)


@api_view(["POST"])
def byok_revoke(request: HttpRequest, state: ApiRequestState, byok_id: str) -> dict[str, Any]:
    caller = state.caller
    assert caller is not None
    record = _get(caller.account, byok_id)
    byok.revoke(record)
    return credential_json(record)


@api_view_async(["POST"])
async def byok_test(request: HttpRequest, state: ApiRequestState, byok_id: str) -> dict[str, Any]:
    caller = state.caller
    assert caller is not None
    record = await sync_to_async(_get)(caller.account, byok_id)
    try:
        result = await byok.probe_and_store(record)
    except byok.NotTestable as exc:
        raise ApiError(409, "BYOK_REVOKED", str(exc), field="id") from exc
    answer: dict[str, Any] = {"ok": result.ok, "latency_ms": result.latency_ms}
    if not result.ok:
        answer["error"] = result.error
    answer["credential"] = credential_json(record)
    return answer
