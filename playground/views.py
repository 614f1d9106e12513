"""Playground pages: Chat, Compare, Image and Cost, and the plain-HTTP runs behind them.

Chat and Compare stream over the websocket (playground/sessions.py); the POST views here
answer whole replies when the socket is unavailable. Image, upscale, vision and cost are
plain POSTs (htmx swaps the partial; without JavaScript the whole page comes back).
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from billing import ledger
from gateway import chat, routing, views_cost
from gateway.api import ApiError, Caller, field_error
from gateway.views_ai import chat_json
from playground import runs, snippets
from playground.sessions import MAX_COMPARE, chat_body

MAX_RUN_FOR_REAL = 6
VISION_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


# --- Shared -----------------------------------------------------------------------------------


def _caller(request: HttpRequest) -> Caller:
    return runs.caller_for(request.user, request.session)  # type: ignore[arg-type]


def _page_context(request: HttpRequest, caller: Caller, tab: str) -> dict[str, Any]:
    balance = ledger.get_balance(caller.account)
    return {
        "nav": "playground",
        "tab": tab,
        "project": caller.project,
        "available_nano": balance.available_nano,
        "base_url": runs.base_url_of(request),
    }


def _render(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    return render(request, template, context, status=status)


async def _arender(
    request: HttpRequest, full: str, partial: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """The partial for htmx, else the whole page around it (needs the page's context too).

    htmx gets 200 even for an error: the partial shows it, htmx swaps only 2xx by default, and
    browsers log every 4xx answer as a console error."""
    if getattr(request, "htmx", False):
        return await sync_to_async(_render)(request, partial, context, 200)
    return await sync_to_async(_full)(request, full, context, status)


def _full(request: HttpRequest, template: str, context: dict[str, Any], status: int) -> HttpResponse:
    caller = context["caller"]
    page = {**_page_context(request, caller, context["tab"]), **_choices(caller, context["tab"]), **context}
    return render(request, template, page, status=status)


def _choices(caller: Caller, tab: str) -> dict[str, Any]:
    if tab in ("chat", "compare", "cost"):
        return {
            "chat_models": runs.usable_models(caller.account, "chat"),
            "tasks": routing.TASKS,
            "preferences": routing.PREFERENCES,
            "cache_strategies": chat.CACHE_STRATEGIES,
        }
    if tab == "image":
        return {
            "image_models": runs.usable_models(caller.account, "image"),
            "sizes": runs.IMAGE_SIZES,
        }
    return {}


def _error_status(exc: ApiError) -> int:
    return exc.status if 400 <= exc.status < 600 else 400


# --- Pages ------------------------------------------------------------------------------------


def _page(request: HttpRequest, tab: str, template: str, **extra: Any) -> HttpResponse:
    caller = _caller(request)
    return render(request, template, {**_page_context(request, caller, tab), **_choices(caller, tab), **extra})


@login_required
def chat_page(request: HttpRequest) -> HttpResponse:
    return _page(request, "chat", "playground/chat.html", form={"temperature": "0.7", "max_tokens": "512"})


@login_required
def compare_page(request: HttpRequest) -> HttpResponse:
    caller = _caller(request)
    first_two = [m.model_id for m in runs.usable_models(caller.account, "chat")[:2]]
    return _page(request, "compare", "playground/compare.html", chosen=first_two)


@login_required
def image_page(request: HttpRequest) -> HttpResponse:
    return _page(request, "image", "playground/image.html", form={"size": "512x512", "n": "2"})


@login_required
def cost_page(request: HttpRequest) -> HttpResponse:
    return _page(request, "cost", "playground/cost.html", form={"expected_output_tokens": "256"})


# --- Chat without the socket ------------------------------------------------------------------


def _number(value: str, name: str, kind: type) -> int | float | None:
    if value in ("", None):
        return None
    try:
        return kind(value)
    except ValueError as exc:
        raise field_error(name, f"{name} must be a number.") from exc


def _form_message(request: HttpRequest) -> dict[str, Any]:
    """A chat form posted without JavaScript: the history rides in a hidden field."""
    try:
        history = json.loads(request.POST.get("history") or "[]")
    except ValueError as exc:
        raise field_error("history", "history is not valid JSON.") from exc
    prompt = request.POST.get("prompt", "")
    if not prompt.strip():
        raise field_error("prompt", "Type a message first.", code="MISSING_FIELD")
    return {
        "messages": [*history, {"role": "user", "content": prompt}] if isinstance(history, list) else history,
        "system": request.POST.get("system", ""),
        "model": request.POST.get("model", ""),
        "task": request.POST.get("task", ""),
        "prefer": request.POST.get("prefer", ""),
        "temperature": _number(request.POST.get("temperature", ""), "temperature", float),
        "max_tokens": _number(request.POST.get("max_tokens", ""), "max_tokens", int),
    }


async def _run_chat_body(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    body = {**body, "stream": False}
    params = chat.parse_chat_params(body, None)
    state = runs.new_state(caller)
    outcome = await chat.run_chat(runs.base_url_of(request), caller, state, params)
    return {**chat_json(outcome), "code": snippets.chat(runs.base_url_of(request), body)}


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError as exc:
        raise ApiError(400, "INVALID_JSON", "The request body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_JSON", "The request body must be a JSON object.")
    return body


@require_POST
@login_required
async def chat_send(request: HttpRequest) -> HttpResponse:
    """The whole reply in one answer: JSON for the page's script, or the page for a plain form."""
    caller = await sync_to_async(_caller)(request)
    wants_json = request.content_type == "application/json"
    message: dict[str, Any] = {}
    try:
        message = _json_body(request) if wants_json else _form_message(request)
        body = chat_body(message)
        result = await _run_chat_body(request, caller, body)
    except ApiError as exc:
        error = runs.error_payload(exc, "chat")
        if wants_json:
            return JsonResponse({"error": error}, status=_error_status(exc))
        context = {"caller": caller, "tab": "chat", "error": error, "form": request.POST, **_transcript(message)}
        return await sync_to_async(_full)(request, "playground/chat.html", context, _error_status(exc))
    if wants_json:
        return JsonResponse(result)
    turns = [*message["messages"], {"role": "assistant", "content": result["content"]}]
    reply = {**result, "meta": result["_metadata"]}
    context = {
        "caller": caller,
        "tab": "chat",
        "reply": reply,
        "form": request.POST,
        **_transcript({"messages": turns}),
    }
    return await sync_to_async(_full)(request, "playground/chat.html", context, 200)


def _transcript(message: dict[str, Any]) -> dict[str, Any]:
    turns = message.get("messages") if isinstance(message.get("messages"), list) else []
    turns = [t for t in turns if isinstance(t, dict) and t.get("role") in ("user", "assistant")]
    return {"turns": turns, "history_json": json.dumps(turns)}


def _compare_form(request: HttpRequest) -> dict[str, Any]:
    prompt = request.POST.get("prompt", "")
    if not prompt.strip():
        raise field_error("prompt", "Type a prompt first.", code="MISSING_FIELD")
    return {
        "messages": [{"role": "user", "content": prompt}],
        "models": request.POST.getlist("models"),
        "system": request.POST.get("system", ""),
        "temperature": _number(request.POST.get("temperature", ""), "temperature", float),
        "max_tokens": _number(request.POST.get("max_tokens", ""), "max_tokens", int),
    }


@require_POST
@login_required
async def compare_send(request: HttpRequest) -> HttpResponse:
    """Compare without the socket: every model at once, each column whole."""
    caller = await sync_to_async(_caller)(request)
    wants_json = request.content_type == "application/json"
    context: dict[str, Any] = {"caller": caller, "tab": "compare", "form": request.POST}
    context["chosen"] = request.POST.getlist("models")
    try:
        message = _json_body(request) if wants_json else _compare_form(request)
        models = message.get("models")
        if (
            not isinstance(models, list)
            or not 2 <= len(models) <= MAX_COMPARE
            or len(set(map(str, models))) != len(models)
        ):
            raise field_error("models", f"Choose 2 to {MAX_COMPARE} different models to compare.")
        bodies = [chat_body(message, str(model)) for model in models]
        for body in bodies:
            chat.parse_chat_params({**body, "stream": False}, None)
    except ApiError as exc:
        error = runs.error_payload(exc, "compare")
        if wants_json:
            return JsonResponse({"error": error}, status=_error_status(exc))
        context["error"] = error
        return await sync_to_async(_full)(request, "playground/compare.html", context, _error_status(exc))

    async def column(body: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await _run_chat_body(request, caller, body)
        except ApiError as exc:
            return {"model": body["model"], "error": runs.error_payload(exc, "compare")}
        return {**result, "meta": result["_metadata"]}

    columns = list(await asyncio.gather(*(column(b) for b in bodies)))
    if wants_json:
        return JsonResponse({"columns": columns})
    context["columns"] = columns
    return await sync_to_async(_full)(request, "playground/compare.html", context, 200)


# --- Image, upscale, vision -------------------------------------------------------------------


def _int(value: str | None, default: int) -> int | str:
    if not value:
        return default
    return int(value) if value.isdigit() else value


@require_POST
@login_required
async def image_generate(request: HttpRequest) -> HttpResponse:
    caller = await sync_to_async(_caller)(request)
    body: dict[str, Any] = {
        "prompt": request.POST.get("prompt", ""),
        "size": request.POST.get("size") or "1024x1024",
        "n": _int(request.POST.get("n"), 1),
    }
    if request.POST.get("model"):
        body["model"] = request.POST["model"]
    context: dict[str, Any] = {"caller": caller, "tab": "image", "kind": "generate", "form": request.POST}
    state = runs.new_state(caller)
    try:
        served, images = await runs.run_image(request, state, body)
    except ApiError as exc:
        context["error"] = runs.error_payload(exc, "image")
        return await _arender(
            request, "playground/image.html", "playground/_image_results.html", context, _error_status(exc)
        )
    context.update(
        images=images,
        meta=served.metadata,
        model=served.candidate.model_name,
        size=body["size"],
        code=snippets.image(runs.base_url_of(request), {**body, "model": served.candidate.model_name}),
    )
    return await _arender(request, "playground/image.html", "playground/_image_results.html", context)


@require_POST
@login_required
async def image_upscale(request: HttpRequest) -> HttpResponse:
    caller = await sync_to_async(_caller)(request)
    url = request.POST.get("image", "")
    factor = _int(request.POST.get("factor"), 2)
    context: dict[str, Any] = {"caller": caller, "tab": "image", "kind": "upscale", "form": {}, "factor": factor}
    state = runs.new_state(caller)
    try:
        image = await sync_to_async(runs.stored_image)(caller.account, url)
        served = await runs.run_upscale(request, state, image, factor)  # type: ignore[arg-type]
        from gateway.views_capabilities import store_images

        stored = await store_images(request, state, [served.result.png], False)
    except ApiError as exc:
        context["error"] = runs.error_payload(exc, "image")
        return await _arender(
            request, "playground/image.html", "playground/_upscaled.html", context, _error_status(exc)
        )
    context.update(
        upscaled=stored[0]["url"],
        original_size=served.result.original_size,
        new_size=served.result.new_size,
        meta=served.metadata,
        code=snippets.upscale(runs.base_url_of(request), {"image": url, "factor": factor}),
    )
    return await _arender(request, "playground/image.html", "playground/_upscaled.html", context)


@require_POST
@login_required
async def image_vision(request: HttpRequest) -> HttpResponse:
    caller = await sync_to_async(_caller)(request)
    prompt = request.POST.get("prompt", "")
    upload = request.FILES.get("image")
    context: dict[str, Any] = {"caller": caller, "tab": "image", "kind": "vision", "form": {}, "question": prompt}
    state = runs.new_state(caller)
    try:
        images: list[bytes] = []
        if upload is not None:
            if upload.size and upload.size > runs.MAX_VISION_BYTES:
                raise field_error("image", f"The image is larger than {runs.MAX_VISION_BYTES // (1024 * 1024)} MB.")
            if upload.content_type not in VISION_TYPES:
                raise field_error("image", "Choose a PNG, JPEG, WebP or GIF image.")
            images.append(upload.read())
        served = await runs.run_vision(request, state, prompt, images)
    except ApiError as exc:
        context["error"] = runs.error_payload(exc, "image")
        return await _arender(
            request, "playground/image.html", "playground/_vision_result.html", context, _error_status(exc)
        )
    assert upload is not None
    context.update(
        answer=served.result.content,
        usage=served.result.usage,
        meta=served.metadata,
        filename=upload.name,
        code=snippets.vision(
            runs.base_url_of(request), prompt, upload.name or "image.png", upload.content_type or "image/png"
        ),
    )
    return await _arender(request, "playground/image.html", "playground/_vision_result.html", context)


# --- Cost compare -----------------------------------------------------------------------------


def _cost_body(request: HttpRequest) -> dict[str, Any]:
    """The /v1/ai/cost/compare body the form stands for."""
    raw = request.POST.get("messages_json", "").strip()
    if raw:
        try:
            messages: Any = json.loads(raw)
        except ValueError as exc:
            raise field_error("messages", "The conversation is not valid JSON.") from exc
    else:
        messages = request.POST.get("prompt", "")
    body: dict[str, Any] = {
        "messages": messages,
        "expected_output_tokens": _int(
            request.POST.get("expected_output_tokens"), views_cost.DEFAULT_EXPECTED_OUTPUT_TOKENS
        ),
        "batch_mode": request.POST.get("batch_mode") == "on",
        "cache_strategy": request.POST.get("cache_strategy") or "vendor",
    }
    models = [m for m in request.POST.getlist("models") if m]
    if models:
        body["models"] = models
    return body


def _bars(estimates: list[dict[str, Any]], actual: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows with the bar widths of their estimate (and actual cost), relative to the largest."""

    def actual_usd(model: str) -> Decimal | None:
        ran = actual.get(model)
        return Decimal(ran["meta"]["cost_usd"]) if ran and "meta" in ran else None

    amounts = [Decimal(e["estimated_cost_usd"]) for e in estimates]
    amounts += [a for a in (actual_usd(e["model"]) for e in estimates) if a is not None]
    top = max(amounts, default=Decimal(0))

    def percent(amount: Decimal | None) -> float | None:
        if amount is None:
            return None
        return float(amount / top * 100) if top else 0.0

    return [
        {
            **e,
            "actual": actual.get(e["model"]),
            "bar_percent": percent(Decimal(e["estimated_cost_usd"])),
            "actual_percent": percent(actual_usd(e["model"])),
        }
        for e in estimates
    ]


async def _run_for_real(
    request: HttpRequest, caller: Caller, body: dict[str, Any], models: list[str]
) -> dict[str, Any]:
    """Each chosen model once, at once, with max_tokens the expected output: actual cost and latency."""
    base = {k: v for k, v in body.items() if k in ("messages", "batch_mode", "cache_strategy")}
    expected = body.get("expected_output_tokens")
    if isinstance(expected, int) and expected > 0:
        base["max_tokens"] = expected

    async def one(model: str) -> tuple[str, dict[str, Any]]:
        try:
            result = await _run_chat_body(request, caller, {**base, "model": model})
        except ApiError as exc:
            return model, {"error": runs.error_payload(exc, "cost")}
        return model, {**result, "meta": result["_metadata"]}

    return dict(await asyncio.gather(*(one(m) for m in models)))


@require_POST
@login_required
async def cost_compare(request: HttpRequest) -> HttpResponse:
    caller = await sync_to_async(_caller)(request)
    context: dict[str, Any] = {
        "caller": caller,
        "tab": "cost",
        "form": request.POST,
        "form_models": request.POST.getlist("models"),
    }
    try:
        body = _cost_body(request)
        result = await sync_to_async(views_cost.compare)(caller.account, body, request)
        actual: dict[str, Any] = {}
        if request.POST.get("action") == "run":
            chosen = [m for m in request.POST.getlist("run") if m]
            if not chosen:
                raise field_error("run", "Tick the models to run for real.")
            if len(chosen) > MAX_RUN_FOR_REAL:
                raise field_error("run", f"Run at most {MAX_RUN_FOR_REAL} models at a time.")
            known = {e["model"] for e in result["estimates"] if e["available"]}
            unknown = [m for m in chosen if m not in known]
            if unknown:
                raise field_error("run", f"{unknown[0]} is not in the table or not available to you.")
            actual = await _run_for_real(request, caller, body, chosen)
    except ApiError as exc:
        context["error"] = runs.error_payload(exc, "cost")
        return await _arender(
            request, "playground/cost.html", "playground/_cost_results.html", context, _error_status(exc)
        )
    context.update(estimates=_bars(result["estimates"], actual), ran=bool(actual), chosen=request.POST.getlist("run"))
    return await _arender(request, "playground/cost.html", "playground/_cost_results.html", context)
