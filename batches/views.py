"""`/v1/ai/batch/*`: parse, find the caller's batch, call one rule in batches/batch.py."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from batches import batch
from gateway import idempotency
from gateway.api import ApiRequestState, api_view, api_view_async, metadata, parse_json_body


@api_view_async(["POST"])
async def submit(request: HttpRequest, state: ApiRequestState) -> dict[str, Any]:
    assert state.caller is not None
    answer, replayed = await batch.submit(request, state.caller, parse_json_body(request))
    if replayed:
        answer["_metadata"] = metadata(state, replayed=True)
    return answer


@api_view(["GET"])
def status(request: HttpRequest, state: ApiRequestState, batch_id: str) -> dict[str, Any]:
    assert state.caller is not None
    return batch.status_json(batch.get_batch(state.caller.account, batch_id))


@api_view(["GET"])
def results(request: HttpRequest, state: ApiRequestState, batch_id: str) -> dict[str, Any]:
    assert state.caller is not None
    return batch.results_page(request, batch.get_batch(state.caller.account, batch_id, for_items=True))


@api_view(["GET"])
def batch_list(request: HttpRequest, state: ApiRequestState) -> dict[str, Any]:
    assert state.caller is not None
    return batch.list_page(request, state.caller.account)


@api_view(["POST"])
def cancel(request: HttpRequest, state: ApiRequestState, batch_id: str) -> dict[str, Any]:
    assert state.caller is not None
    # Cancelling is idempotent by nature; a key is checked for form only. The seed's example
    # also sends `batch_id` in the body: the path names the batch.
    idempotency.explicit_key(request, parse_json_body(request), required=False)
    return batch.status_json(batch.cancel(batch.get_batch(state.caller.account, batch_id)))


@api_view(["POST"])
def export(request: HttpRequest, state: ApiRequestState, batch_id: str) -> dict[str, Any]:
    assert state.caller is not None
    body = parse_json_body(request)
    return batch.export(request, batch.get_batch(state.caller.account, batch_id, for_items=True), body)


@api_view(["POST"])
def set_retention(request: HttpRequest, state: ApiRequestState, batch_id: str) -> dict[str, Any]:
    assert state.caller is not None
    body = parse_json_body(request)
    found = batch.get_batch(state.caller.account, batch_id)
    idempotency.explicit_key(request, body, required=False)
    return batch.status_json(batch.set_retention(found, batch.parse_retention(body)))
