"""`/v1/ai/*` capabilities other than chat. Each view: validate, then `capabilities.metered`."""

from __future__ import annotations

import base64
import struct
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from gateway import capabilities, files, operations
from gateway.api import ApiRequestState, api_view_async, field_error, parse_json_body
from gateway.capabilities import metered
from gateway.chat import meta
from gateway.inputs import media, optional_str, required_str
from gateway.sandbox import tokens
from gateway.vendors.base import Usage
from gateway.views_ai import run_idempotent

MAX_IMAGES = operations.MAX_IMAGES


async def run_prepared(
    request: HttpRequest, state: ApiRequestState, prepared: operations.Prepared
) -> capabilities.Served:
    return await metered(
        request,
        state,
        prepared.capability,
        prepared.chain,
        prepared.worst_case,
        prepared.call,
        prepared.max_cost_multiplier,
    )


async def run_embed(request: HttpRequest, state: ApiRequestState, body: dict[str, Any]) -> capabilities.Served:
    return await run_prepared(request, state, await operations.prepare_embed(state.caller.account, body))  # type: ignore[union-attr]


async def run_image(request: HttpRequest, state: ApiRequestState, body: dict[str, Any]) -> capabilities.Served:
    return await run_prepared(request, state, await operations.prepare_image(state.caller.account, body))  # type: ignore[union-attr]


async def run_tts(
    request: HttpRequest, state: ApiRequestState, body: dict[str, Any], format_field: str = "format"
) -> capabilities.Served:
    prepared = await operations.prepare_tts(state.caller.account, body, format_field)  # type: ignore[union-attr]
    return await run_prepared(request, state, prepared)


@api_view_async(["POST"])
async def ai_embed(request: HttpRequest, state: ApiRequestState) -> Any:
    body = parse_json_body(request)

    async def produce() -> dict[str, Any]:
        served = await run_embed(request, state, body)
        return {
            "embeddings": served.result.embeddings,
            "model": served.candidate.model_name,
            "usage": {
                "prompt_tokens": served.result.usage.input_tokens,
                "total_tokens": served.result.usage.input_tokens,
            },
            "_metadata": served.metadata,
        }

    return await run_idempotent(request, state, "ai.embed", body, produce)


def float32_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@api_view_async(["POST"])
async def openai_embeddings(request: HttpRequest, state: ApiRequestState) -> Any:
    body = parse_json_body(request)
    encoding = optional_str(body, "encoding_format", ("float", "base64")) or "float"

    async def produce() -> dict[str, Any]:
        served = await run_embed(request, state, body)
        data = [
            {"object": "embedding", "index": i, "embedding": float32_base64(v) if encoding == "base64" else v}
            for i, v in enumerate(served.result.embeddings)
        ]
        used = served.result.usage.input_tokens
        return {
            "object": "list",
            "data": data,
            "model": served.candidate.model_name,
            "usage": {"prompt_tokens": used, "total_tokens": used},
            "_metadata": served.metadata,
        }

    return await run_idempotent(request, state, "embeddings", body, produce)


# --- Images -----------------------------------------------------------------------------------


async def store_images(
    request: HttpRequest, state: ApiRequestState, images: list[bytes | str], with_b64: bool
) -> list[dict[str, Any]]:
    account = state.caller.account.public_id  # type: ignore[union-attr]
    out = []
    for image in images:
        if isinstance(image, str):
            out.append({"url": image})
            continue
        name = await sync_to_async(files.save)(account, "images", image, "png")
        url, expires_at = files.signed_url(files.base_url_of(request), name, 24 * 3600)
        item: dict[str, Any] = {"url": url, "expires_at": expires_at}
        if with_b64:
            item["b64"] = base64.b64encode(image).decode()
        out.append(item)
    return out


@api_view_async(["POST"])
async def ai_image(request: HttpRequest, state: ApiRequestState) -> Any:
    body = parse_json_body(request)
    with_b64 = (optional_str(body, "response_format", ("url", "b64_json")) or "url") == "b64_json"

    async def produce() -> dict[str, Any]:
        served = await run_image(request, state, body)
        return {"images": await store_images(request, state, served.result, with_b64), "_metadata": served.metadata}

    return await run_idempotent(request, state, "ai.image", body, produce)


@api_view_async(["POST"])
async def openai_images(request: HttpRequest, state: ApiRequestState) -> Any:
    import time

    body = parse_json_body(request)
    response_format = optional_str(body, "response_format", ("url", "b64_json")) or "url"

    async def produce() -> dict[str, Any]:
        served = await run_image(request, state, body)
        stored = await store_images(request, state, served.result, response_format == "b64_json")
        data = [
            {"b64_json": s["b64"]} if response_format == "b64_json" and "b64" in s else {"url": s["url"]}
            for s in stored
        ]
        return {"created": int(time.time()), "data": data, "_metadata": served.metadata}

    return await run_idempotent(request, state, "images.generations", body, produce)


# --- Vision -----------------------------------------------------------------------------------


@api_view_async(["POST"])
async def ai_vision(request: HttpRequest, state: ApiRequestState) -> Any:
    body = parse_json_body(request)
    prompt = required_str(body, "prompt", 20_000)
    raw_images = body.get("images")
    if not isinstance(raw_images, list) or not 1 <= len(raw_images) <= MAX_IMAGES:
        raise field_error(
            "images", f"images must be a list of 1 to {MAX_IMAGES} items of {{url}} or {{base64, mime?}}."
        )
    images = [(await media(item, f"images[{i}]"))[0] for i, item in enumerate(raw_images)]
    prepared = await operations.prepare_vision(state.caller.account, body, prompt, images)  # type: ignore[union-attr]

    async def produce() -> dict[str, Any]:
        served = await run_prepared(request, state, prepared)
        usage: Usage = served.result.usage
        return {
            "content": served.result.content,
            "finish_reason": served.result.finish_reason,
            "model": served.candidate.model_name,
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
            "_metadata": served.metadata,
        }

    return await run_idempotent(request, state, "ai.vision", body, produce)


# --- Speech -----------------------------------------------------------------------------------


@api_view_async(["POST"])
async def ai_tts(request: HttpRequest, state: ApiRequestState) -> Any:
    body = parse_json_body(request)

    async def produce() -> dict[str, Any]:
        served = await run_tts(request, state, body)
        speech = served.result
        name = await sync_to_async(files.save)(state.caller.account.public_id, "speech", speech.audio, speech.format)  # type: ignore[union-attr]
        url, expires_at = files.signed_url(files.base_url_of(request), name)
        return {
            "audio_url": url,
            "format": speech.format,
            "expires_at": expires_at,
            "duration_seconds": round(speech.duration_seconds, 3),
            "_metadata": served.metadata,
        }

    return await run_idempotent(request, state, "ai.tts", body, produce)


@api_view_async(["POST"])
async def openai_speech(request: HttpRequest, state: ApiRequestState) -> Any:
    from django.http import HttpResponse

    body = parse_json_body(request)
    served = await run_tts(request, state, body, "response_format")
    response = HttpResponse(served.result.audio, content_type=served.result.mime_type)
    response["X-Infrai-Cost-Usd"] = served.metadata["cost_usd"]
    response["X-Infrai-Vendor"] = served.metadata["vendor"]
    return response


async def run_asr(
    request: HttpRequest, state: ApiRequestState, body: dict[str, Any], audio: bytes, mime: str | None
) -> capabilities.Served:
    prepared = await operations.prepare_asr(state.caller.account, body, audio, mime)  # type: ignore[union-attr]
    return await run_prepared(request, state, prepared)


@api_view_async(["POST"])
async def ai_asr(request: HttpRequest, state: ApiRequestState) -> Any:
    body = parse_json_body(request)
    if "audio" not in body:
        raise field_error("audio", "audio is required: {url} or {base64, mime?}.", code="MISSING_FIELD")
    audio, mime = await media(body["audio"], "audio")

    async def produce() -> dict[str, Any]:
        served = await run_asr(request, state, body, audio, mime)
        t = served.result
        return {
            "text": t.text,
            "language": t.language,
            "duration_seconds": round(t.duration_seconds, 3),
            "segments": t.segments,
            "_metadata": served.metadata,
        }

    return await run_idempotent(request, state, "ai.asr", body, produce)


@api_view_async(["POST"])
async def openai_transcriptions(request: HttpRequest, state: ApiRequestState) -> Any:
    from django.http import HttpResponse

    upload = request.FILES.get("file")
    if upload is None:
        raise field_error("file", "file is required (multipart/form-data).", code="MISSING_FIELD")
    body = {k: request.POST.get(k) for k in ("model", "language", "vendor") if request.POST.get(k)}
    response_format = request.POST.get("response_format") or "json"
    if response_format not in ("json", "text", "verbose_json"):
        raise field_error("response_format", "response_format must be json, text or verbose_json.")
    served = await run_asr(request, state, body, upload.read(), upload.content_type)
    t = served.result
    if response_format == "text":
        return HttpResponse(t.text, content_type="text/plain; charset=utf-8")
    result: dict[str, Any] = {"text": t.text, "_metadata": served.metadata}
    if response_format == "verbose_json":
        result.update(
            {"task": "transcribe", "language": t.language, "duration": t.duration_seconds, "segments": t.segments}
        )
    return result


# --- Rerank and upscale -----------------------------------------------------------------------


@api_view_async(["POST"])
async def ai_rerank(request: HttpRequest, state: ApiRequestState) -> Any:
    body = parse_json_body(request)

    async def produce() -> dict[str, Any]:
        served = await run_prepared(request, state, await operations.prepare_rerank(state.caller.account, body))  # type: ignore[union-attr]
        return {"results": served.result, "model": served.candidate.model_name, "_metadata": served.metadata}

    return await run_idempotent(request, state, "ai.rerank", body, produce)


@api_view_async(["POST"])
async def ai_upscale(request: HttpRequest, state: ApiRequestState) -> Any:
    body = parse_json_body(request)
    if "image" not in body:
        raise field_error("image", "image is required: a URL, base64, or {url}/{base64}.", code="MISSING_FIELD")
    factor = body.get("factor", 2)
    if factor not in (2, 4) or isinstance(factor, bool):
        raise field_error("factor", "factor must be 2 or 4.")
    image, _ = await media(body["image"], "image")
    prepared = await operations.prepare_upscale(state.caller.account, body, image, factor)  # type: ignore[union-attr]

    async def produce() -> dict[str, Any]:
        served = await run_prepared(request, state, prepared)
        stored = await store_images(request, state, [served.result.png], False)
        return {
            "image": stored[0]["url"],
            "expires_at": stored[0].get("expires_at"),
            "original_size": {"width": served.result.original_size[0], "height": served.result.original_size[1]},
            "new_size": {"width": served.result.new_size[0], "height": served.result.new_size[1]},
            "_metadata": served.metadata,
        }

    return await run_idempotent(request, state, "ai.image.upscale", body, produce)


# --- Free calls: voices, token counts ---------------------------------------------------------


def _cursor(request: HttpRequest, total: int) -> tuple[int, int]:
    raw_limit = request.GET.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 200:
        raise field_error("limit", "limit must be an integer from 1 to 200.")
    cursor = request.GET.get("cursor")
    offset = 0
    if cursor:
        try:
            offset = int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("o:"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise field_error("cursor", "cursor is not one this API gave out.") from exc
        if not 0 <= offset <= total:
            raise field_error("cursor", "cursor is out of range.")
    return offset, int(raw_limit)


def _next_cursor(offset: int, limit: int, total: int) -> str | None:
    nxt = offset + limit
    return base64.urlsafe_b64encode(f"o:{nxt}".encode()).decode() if nxt < total else None


@api_view_async(["GET"])
async def tts_voices(request: HttpRequest, state: ApiRequestState) -> Any:
    from gateway.routing import credential_for
    from gateway.vendors import VENDORS

    voices: list[dict[str, Any]] = []
    for vendor in VENDORS.values():
        if (
            "tts" in vendor.capabilities
            and await sync_to_async(credential_for)(state.caller.account, vendor) is not None
        ):  # type: ignore[union-attr]
            voices.extend(await sync_to_async(vendor.voices)())
    offset, limit = _cursor(request, len(voices))
    return {
        "voices": voices[offset : offset + limit],
        "total_count": len(voices),
        "next_cursor": _next_cursor(offset, limit, len(voices)),
    }


@api_view_async(["POST"])
async def tokens_count(request: HttpRequest, state: ApiRequestState) -> Any:
    from gateway.chat import _messages

    body = parse_json_body(request)
    if "messages" not in body:
        raise field_error("messages", "messages is required.", code="MISSING_FIELD")
    messages = _messages(body["messages"])
    model = optional_str(body, "model") or "sandbox-chat"
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise field_error("tools", "tools must be a list.")
    encoding = tokens.encoding_name_for_model(model)
    return {
        "prompt_tokens": tokens.count_messages(messages, tools=tools, encoding=encoding),
        "model": model,
        "encoding": encoding,
    }


# --- Realtime voice sessions ------------------------------------------------------------------


async def _session_token(request: HttpRequest, state: ApiRequestState, kind: str, default_ttl: int) -> dict[str, Any]:
    """A session token for `/ws/voice/` (playground/voice.py signs, redeems and serves it)."""
    from playground import voice

    body = parse_json_body(request)
    issued = await voice.issue_token(request, state.caller, state.request_id, body, kind, default_ttl)  # type: ignore[arg-type]
    return {**issued.answer(files.base_url_of(request)), "_metadata": meta(state, issued.candidate, 0)}


@api_view_async(["POST"])
async def realtime_token(request: HttpRequest, state: ApiRequestState) -> Any:
    return await _session_token(request, state, "realtime", 600)


@api_view_async(["POST"])
async def voice_session(request: HttpRequest, state: ApiRequestState) -> Any:
    return await _session_token(request, state, "voice", 60)
