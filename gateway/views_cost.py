"""ai.cost.estimate / ai.cost.compare / used by the console's cost-compare view.

They use the chat path's own token counting and pricing (gateway.chat, gateway.catalog), so an
estimate with the real output length equals the bill to the nano-dollar.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from console.models import Account
from gateway import catalog, chat, routing
from gateway.api import ApiRequestState, api_view_async, field_error, parse_json_body
from gateway.inputs import integer
from gateway.models import CatalogModel
from infrai.lib.money import format_usd

DEFAULT_EXPECTED_OUTPUT_TOKENS = 256
MAX_COMPARE_MODELS = 50


def _usable(account: Account, entry: CatalogModel) -> bool:
    from gateway.vendors import get_vendor

    vendor = get_vendor(entry.vendor)
    return vendor is not None and routing.credential_for(account, vendor) is not None


def estimate_for(
    account: Account, entry: CatalogModel, prompt_tokens: int, output_tokens: int, params: chat.ChatParams
) -> dict[str, Any]:
    cost = catalog.token_cost_breakdown(entry, prompt_tokens, output_tokens, 0, params.batch_mode)
    price = catalog.token_price(entry, params.batch_mode)
    rate = catalog.usd_rate(entry)
    parts = {name: format_usd(catalog.to_nano(amount, entry)) for name, amount in cost["parts"].items()}
    return {
        "model": entry.model_id,
        "vendor": entry.vendor,
        "vendor_region": entry.chip or None,
        "available": _usable(account, entry),
        "prompt_tokens": prompt_tokens,
        "expected_output_tokens": output_tokens,
        "estimated_cost_usd": format_usd(cost["total_nano"]),
        "breakdown": {
            "input_usd": parts["input"],
            "cached_input_usd": parts["cached_input"],
            "output_usd": parts["output"],
            "total_usd": format_usd(cost["total_nano"]),
            "price_currency": entry.currency,
            "input_per_mtok": str(price.input_per_mtok),
            "output_per_mtok": str(price.output_per_mtok),
            "usd_per_currency_unit": str(rate.normalize()),
            "batch_mode": params.batch_mode,
            "cache_strategy": params.cache_strategy,
            "repeat_with_infrai_cache_usd": "0.00" if params.cache_strategy == "infrai" else None,
        },
    }


def _parse(body: dict[str, Any], request: HttpRequest) -> tuple[chat.ChatParams, int]:
    params = chat.parse_chat_params(
        {k: v for k, v in body.items() if k not in ("models", "expected_output_tokens")}, request
    )
    expected = integer(body, "expected_output_tokens", DEFAULT_EXPECTED_OUTPUT_TOKENS, 0, 1_000_000)
    assert expected is not None
    return params, expected


def _entry_for(account: Account, model: str, field: str, vendor: str | None = None) -> CatalogModel:
    entries = CatalogModel.objects.filter(model_id=model, capability="chat", enabled=True)
    if vendor:
        entries = entries.filter(vendor=vendor)
    found = sorted(entries, key=lambda e: (not _usable(account, e), e.pk))
    if not found:
        raise field_error(
            field, f"Unknown chat model {model!r}. GET /v1/models lists the models.", code="UNKNOWN_MODEL"
        )
    return found[0]


def estimate(account: Account, body: dict[str, Any], request: HttpRequest) -> dict[str, Any]:
    params, expected = _parse(body, request)
    prompt_tokens = chat.prompt_tokens_of(params)
    if params.model:
        entry = _entry_for(account, params.model, "model", params.vendor)
    else:
        entry = routing.candidates(account, "chat", vendor=params.vendor, task=params.task, prefer=params.prefer)[
            0
        ].entry
    return estimate_for(account, entry, prompt_tokens, expected, params)


def compare(account: Account, body: dict[str, Any], request: HttpRequest) -> dict[str, Any]:
    params, expected = _parse(body, request)
    models = body.get("models")
    prompt_tokens = chat.prompt_tokens_of(params)
    if models is None:
        entries = [e for e in CatalogModel.objects.filter(capability="chat", enabled=True) if _usable(account, e)]
    else:
        if not isinstance(models, list) or not models or len(models) > MAX_COMPARE_MODELS:
            raise field_error("models", f"models must be a list of 1 to {MAX_COMPARE_MODELS} model ids.")
        entries = []
        for i, model in enumerate(models):
            if not isinstance(model, str):
                raise field_error(f"models[{i}]", "each model must be a model id string.")
            entries.append(_entry_for(account, model, f"models[{i}]"))
    estimates = [estimate_for(account, e, prompt_tokens, expected, params) for e in entries]
    estimates.sort(key=lambda e: Decimal(e["estimated_cost_usd"]))
    return {"estimates": estimates}


@api_view_async(["POST"])
async def cost_estimate(request: HttpRequest, state: ApiRequestState) -> Any:
    body = parse_json_body(request)
    return await sync_to_async(estimate)(state.caller.account, body, request)  # type: ignore[union-attr]


@api_view_async(["POST"])
async def cost_compare(request: HttpRequest, state: ApiRequestState) -> Any:
    body = parse_json_body(request)
    return await sync_to_async(compare)(state.caller.account, body, request)  # type: ignore[union-attr]
