"""What the playground's pages and socket share: who pays, where a 402 sends the user, and
the billed image, upscale and vision calls run through the gateway's own metered flow.

Console calls are billed to the signed-in user's current project with no key
(`Caller(key=None, ...)`), through the same routing, holds and prices as `/v1`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.storage import default_storage
from django.http import HttpRequest
from django.urls import reverse

from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from console import accounts
from console.models import Account, Project, User
from gateway import files, operations
from gateway.api import ApiError, ApiRequestState, Caller, field_error
from gateway.capabilities import Served
from gateway.models import CatalogModel
from infrai.lib.ids import uuid7
from infrai.lib.money import format_usd, usd_to_nano

PROJECT_SESSION_KEY = "project"  # console.views.PROJECT_SESSION_KEY
PAGES = {
    "chat": "console:playground",
    "compare": "console:playground_compare",
    "image": "console:playground_image",
    "video": "console:playground_video",
    "voice": "console:playground_voice",
    "cost": "console:playground_cost",
}
IMAGE_SIZES = ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792", "1536x1024", "1024x1536")
MAX_VISION_BYTES = 10 * 1024 * 1024


def new_state(caller: Caller) -> ApiRequestState:
    return ApiRequestState(request_id=str(uuid7()), started=time.perf_counter(), caller=caller)


def caller_for(user: User, session: Any) -> Caller:
    """The signed-in user's account and current project (as the console's project switcher keeps it)."""
    account = accounts.ensure_account(user)
    return Caller(key=None, project=current_project(account, session), account=account)


def current_project(account: Account, session: Any) -> Project:
    public_id = session.get(PROJECT_SESSION_KEY) if session is not None else None
    if public_id:
        project = account.projects.filter(public_id=public_id).first()
        if project:
            return project
    return accounts.default_project(account)


def base_url_of(request: HttpRequest) -> str:
    return settings.SITE_URL or request.build_absolute_uri("/").rstrip("/")


def page_path(page: str) -> str:
    """Where a playground page lives: the top-up's way back."""
    return reverse(PAGES.get(page, PAGES["chat"]))


def with_return_to(topup_url: str, return_to: str) -> str:
    """The gateway's top-up link, also bringing the user back to the playground page afterwards."""
    parts = urlsplit(topup_url)
    query = (
        f"{parts.query}&{urlencode({'return_to': return_to})}" if parts.query else urlencode({"return_to": return_to})
    )
    return urlunsplit(parts._replace(query=query))


def error_payload(exc: ApiError, page: str) -> dict[str, Any]:
    """An ApiError as the playground shows it; a 402 keeps its shortfall and links back here."""
    payload: dict[str, Any] = {"status": exc.status, "code": exc.code, "message": exc.message, **exc.extra}
    if exc.status == 402 and "topup_url" in exc.extra:
        payload["topup_url"] = with_return_to(exc.extra["topup_url"], page_path(page))
        payload["suggested_usd"] = parse_qs(urlsplit(payload["topup_url"]).query).get("amount_usd", [""])[0]
        # The one-click button posts these to billing's top-up, which answers with Stripe Checkout.
        payload["topup_action"] = reverse("billing:topup")
        payload["return_to"] = page_path(page)
        if "required_usd" in exc.extra and "available_usd" in exc.extra:
            shortfall = Decimal(exc.extra["required_usd"]) - max(Decimal(exc.extra["available_usd"]), Decimal(0))
            payload["shortfall_usd"] = format_usd(usd_to_nano(shortfall))
    return payload


def usage_of(request_id: str) -> UsageRecord | None:
    return UsageRecord.objects.filter(request_id=request_id).first()


def release_unstarted(request_id: str) -> None:
    """Give back the hold of a call stopped before it started (holds are keyed by request id)."""
    hold = Hold.objects.filter(reference=request_id, state=HoldState.OPEN).first()
    if hold is not None:
        ledger.release(hold)


def usage_summary(record: UsageRecord | None, request_id: str) -> dict[str, Any]:
    """Cost, tokens, latency and vendor of a settled call (or zeros when nothing was charged)."""
    if record is None:
        return {
            "cost_usd": "0.00",
            "latency_ms": 0,
            "vendor": "",
            "request_id": request_id,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    return {
        "cost_usd": format_usd(record.cost_nano),
        "latency_ms": record.latency_ms,
        "vendor": record.vendor,
        "request_id": request_id,
        "usage": {
            "prompt_tokens": record.input_tokens,
            "completion_tokens": record.output_tokens,
            "total_tokens": record.input_tokens + record.output_tokens,
        },
    }


# --- Choices offered by the forms -------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    model_id: str
    vendor: str
    label: str


def usable_models(account: Account, capability: str) -> list[ModelChoice]:
    """Catalog models of `capability` the account can call (a platform or BYOK credential)."""
    from gateway.routing import credential_for
    from gateway.vendors import get_vendor

    choices: dict[str, ModelChoice] = {}
    usable_vendors: dict[str, bool] = {}
    for entry in CatalogModel.objects.filter(capability=capability, enabled=True).order_by("vendor", "model_id"):
        if entry.vendor not in usable_vendors:
            vendor = get_vendor(entry.vendor)
            usable_vendors[entry.vendor] = bool(
                vendor is not None
                and capability in vendor.capabilities
                and (entry.vendor != "sandbox" or settings.SANDBOX_ENABLED)
                and credential_for(account, vendor) is not None
            )
        if usable_vendors[entry.vendor] and entry.model_id not in choices:
            label = entry.display_name or entry.model_id
            choices[entry.model_id] = ModelChoice(entry.model_id, entry.vendor, f"{label} · {entry.vendor}")
    return list(choices.values())


# --- Images, upscale and vision ---------------------------------------------------------------


async def run_image(
    request: HttpRequest, state: ApiRequestState, body: dict[str, Any]
) -> tuple[Served, list[dict[str, Any]]]:
    """`/v1/ai/image`'s flow: the prepared call, metered, its PNGs stored behind signed URLs."""
    from gateway.views_capabilities import run_image as gateway_run_image
    from gateway.views_capabilities import store_images

    served = await gateway_run_image(request, state, body)
    return served, await store_images(request, state, served.result, False)


def stored_image(account: Account, url_or_token: str) -> bytes:
    """The bytes of an image the playground made for this account, from its signed URL."""
    token = url_or_token.rstrip("/").rsplit("/files/", 1)[-1]
    name = files.resolve(token)
    if name is None or name.split("/")[1:2] != [account.public_id]:
        raise field_error("image", "This image link is invalid or has expired; generate the image again.")
    with default_storage.open(name, "rb") as handle:
        return handle.read()


async def run_prepared(request: HttpRequest, state: ApiRequestState, prepared: operations.Prepared) -> Served:
    from gateway.views_capabilities import run_prepared as gateway_run_prepared

    return await gateway_run_prepared(request, state, prepared)


async def run_upscale(request: HttpRequest, state: ApiRequestState, image: bytes, factor: int) -> Served:
    """`/v1/ai/image/upscale`'s prepared call, billed like the API's."""
    caller = state.caller
    assert caller is not None
    prepared = await operations.prepare_upscale(caller.account, {}, image, factor)
    return await run_prepared(request, state, prepared)


async def run_vision(request: HttpRequest, state: ApiRequestState, prompt: str, images: list[bytes]) -> Served:
    """`/v1/ai/vision`'s prepared call, billed like the API's."""
    if not prompt.strip():
        raise field_error("prompt", "Ask something about the image.", code="MISSING_FIELD")
    if not images:
        raise field_error("image", "Choose or drop an image file.", code="MISSING_FIELD")
    if len(images) > operations.MAX_IMAGES:
        raise field_error("image", f"At most {operations.MAX_IMAGES} images.")
    caller = state.caller
    assert caller is not None
    prepared = await operations.prepare_vision(caller.account, {}, prompt, images)
    return await run_prepared(request, state, prepared)


async def usage_record(request_id: str) -> UsageRecord | None:
    return await sync_to_async(usage_of)(request_id)
