"""Prepared calls: each capability's validation, routing, worst case and vendor call, apart
from HTTP. The `/v1` views run them through `capabilities.metered` (one hold per request); the
batch worker runs them against the holds a batch took up front.

`prepare_*` raises ApiError naming the field for bad input, so a batch can refuse an item up
front with its index and field.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async

from console.models import Account
from gateway import capabilities, catalog, chat, routing
from gateway.api import field_error
from gateway.capabilities import facts
from gateway.inputs import integer, optional_str, required_str
from gateway.metering import UsageFacts
from gateway.routing import Candidate
from gateway.sandbox import tokens
from gateway.vendors.sandbox import VISION_TOKENS_PER_IMAGE

MAX_EMBED_INPUTS = 2048
MAX_IMAGES = 4
SIZE_PATTERN = re.compile(r"^(\d{2,4}x\d{2,4}|auto)$")
AUDIO_FORMATS = ("mp3", "wav", "ogg", "pcm", "opus", "flac")
# An upper bound for holds: compressed speech is rarely under 8 kB per second.
MIN_AUDIO_BYTES_PER_SECOND = 8000
MAX_RERANK_DOCUMENTS = 1000

Call = Callable[[Candidate], Awaitable[tuple[Any, int, UsageFacts]]]


@dataclass
class Prepared:
    capability: str
    chain: list[Candidate]
    worst_case: Callable[[Candidate], int]
    call: Call
    max_cost_multiplier: float = 1.5


async def route(account: Account, capability: str, body: dict[str, Any]) -> list[Candidate]:
    return await sync_to_async(routing.candidates_for_body)(account, capability, body)


# --- Chat (plain; streaming stays in gateway/chat.py) -----------------------------------------


async def prepare_chat(account: Account, body: dict[str, Any]) -> Prepared:
    params = chat.parse_chat_params(body, None)
    if params.stream:
        raise field_error("stream", "stream is not available here.")
    caller_plan = await chat.plan_async(account, params)

    async def call(candidate: Candidate) -> tuple[Any, int, UsageFacts]:
        result = await candidate.vendor.chat(chat.chat_request(candidate, params), candidate.credential)
        usage = chat.measured_usage(result.usage, caller_plan, result.content)
        result.usage = usage
        cost = chat.actual_cost_nano(candidate, usage, params)
        return (
            result,
            cost,
            facts("chat", candidate, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
        )

    return Prepared(
        "chat",
        caller_plan.chain,
        lambda c: chat.worst_case_nano(c, caller_plan.prompt_tokens, params),
        call,
        params.max_cost_multiplier,
    )


# --- Embeddings -------------------------------------------------------------------------------


def embed_inputs(body: dict[str, Any]) -> list[str]:
    value = body.get("input")
    if value is None:
        raise field_error("input", "input is required: a string or a list of strings.", code="MISSING_FIELD")
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list) or not inputs or len(inputs) > MAX_EMBED_INPUTS:
        raise field_error("input", f"input must be a string or a list of 1 to {MAX_EMBED_INPUTS} strings.")
    for i, text in enumerate(inputs):
        if not isinstance(text, str) or not text:
            raise field_error(f"input[{i}]", "each input must be a non-empty string.")
    return inputs


async def prepare_embed(account: Account, body: dict[str, Any]) -> Prepared:
    inputs = embed_inputs(body)
    dimensions = integer(body, "dimensions", None, 1, 4096)
    chain = await route(account, "embed", body)
    counted = sum(tokens.count_text(text) for text in inputs)

    async def call(candidate: Candidate) -> tuple[Any, int, UsageFacts]:
        result = await candidate.vendor.embed(candidate.model_name, inputs, dimensions, candidate.credential)
        used = result.usage.input_tokens or counted
        result.usage.input_tokens = used
        return (
            result,
            capabilities.input_tokens_nano(candidate.entry, used),
            facts("embed", candidate, input_tokens=used),
        )

    return Prepared("embed", chain, lambda c: capabilities.input_tokens_nano(c.entry, counted), call)


# --- Images -----------------------------------------------------------------------------------


async def prepare_image(account: Account, body: dict[str, Any]) -> Prepared:
    prompt = required_str(body, "prompt", 4000)
    size = body.get("size", "1024x1024")
    if not isinstance(size, str) or not SIZE_PATTERN.match(size):
        raise field_error("size", "size must look like 1024x1024 (or auto).")
    n = integer(body, "n", 1, 1, MAX_IMAGES)
    assert n is not None
    chain = await route(account, "image", body)

    async def call(candidate: Candidate) -> tuple[Any, int, UsageFacts]:
        images = await candidate.vendor.image(candidate.model_name, prompt, size, n, candidate.credential)
        cost = capabilities.charged(candidate, capabilities.per_image_nano(candidate.entry, n))
        return images, cost, facts("image", candidate, units={"images": n, "size": size})

    return Prepared("image", chain, lambda c: capabilities.per_image_nano(c.entry, n), call)


# --- Speech -----------------------------------------------------------------------------------


async def prepare_tts(account: Account, body: dict[str, Any], format_field: str = "format") -> Prepared:
    text = required_str(body, "input", 4096)
    voice = optional_str(body, "voice")
    audio_format = optional_str(body, format_field, AUDIO_FORMATS) or "mp3"
    chain = await route(account, "tts", body)

    async def call(candidate: Candidate) -> tuple[Any, int, UsageFacts]:
        speech = await candidate.vendor.tts(candidate.model_name, text, voice, audio_format, candidate.credential)
        cost = capabilities.charged(candidate, capabilities.per_kchar_nano(candidate.entry, len(text)))
        units = {"characters": len(text), "seconds": round(speech.duration_seconds, 3)}
        return speech, cost, facts("tts", candidate, units=units)

    return Prepared("tts", chain, lambda c: capabilities.per_kchar_nano(c.entry, len(text)), call)


async def prepare_asr(account: Account, body: dict[str, Any], audio: bytes, mime: str | None) -> Prepared:
    language = optional_str(body, "language")
    chain = await route(account, "asr", body)
    longest_seconds = len(audio) / MIN_AUDIO_BYTES_PER_SECOND + 1

    async def call(candidate: Candidate) -> tuple[Any, int, UsageFacts]:
        transcript = await candidate.vendor.asr(candidate.model_name, audio, mime, language, candidate.credential)
        seconds = transcript.duration_seconds
        cost = capabilities.charged(candidate, capabilities.per_minute_nano(candidate.entry, seconds))
        return transcript, cost, facts("asr", candidate, units={"seconds": round(seconds, 3)})

    return Prepared("asr", chain, lambda c: capabilities.per_minute_nano(c.entry, longest_seconds), call)


# --- Rerank -----------------------------------------------------------------------------------


async def prepare_rerank(account: Account, body: dict[str, Any]) -> Prepared:
    query = required_str(body, "query", 10_000)
    raw = body.get("documents")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_RERANK_DOCUMENTS:
        raise field_error(
            "documents", f"documents must be a list of 1 to {MAX_RERANK_DOCUMENTS} strings or {{text}} objects."
        )
    documents = []
    for i, doc in enumerate(raw):
        text = doc.get("text") if isinstance(doc, dict) else doc
        if not isinstance(text, str) or not text:
            raise field_error(f"documents[{i}]", "each document must be a non-empty string or {text}.")
        documents.append(text)
    top_n = integer(body, "top_n", None, 1, len(documents))
    chain = await route(account, "rerank", body)
    counted = tokens.count_text(query) * len(documents) + sum(tokens.count_text(d) for d in documents)

    async def call(candidate: Candidate) -> tuple[Any, int, UsageFacts]:
        ranked, usage = await candidate.vendor.rerank_with_usage(
            candidate.model_name, query, documents, top_n, candidate.credential
        )
        # Bill the vendor's own units (Cohere: search units) when it reports them, else our count.
        billed = usage.input_tokens or counted
        cost = capabilities.charged(candidate, capabilities.input_tokens_nano(candidate.entry, billed))
        return ranked, cost, facts("rerank", candidate, input_tokens=billed, units={"documents": len(documents)})

    return Prepared("rerank", chain, lambda c: capabilities.input_tokens_nano(c.entry, counted), call)


# --- Vision and upscale (their media is fetched/decoded by the caller) --------------------------


async def prepare_vision(account: Account, body: dict[str, Any], prompt: str, images: list[bytes]) -> Prepared:
    chain = await route(account, "vision", body)
    prompt_tokens = tokens.count_text(prompt) + VISION_TOKENS_PER_IMAGE * len(images)

    def worst(candidate: Candidate) -> int:
        return catalog.token_cost_nano(candidate.entry, prompt_tokens, catalog.output_limit(candidate.entry))

    async def call(candidate: Candidate) -> tuple[Any, int, UsageFacts]:
        result = await candidate.vendor.vision(candidate.model_name, prompt, images, candidate.credential)
        usage = result.usage
        cost = capabilities.charged(
            candidate, catalog.token_cost_nano(candidate.entry, usage.input_tokens, usage.output_tokens)
        )
        return (
            result,
            cost,
            facts("vision", candidate, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
        )

    return Prepared("vision", chain, worst, call)


async def prepare_upscale(account: Account, body: dict[str, Any], image: bytes, factor: int) -> Prepared:
    if factor not in (2, 4) or isinstance(factor, bool):
        raise field_error("factor", "factor must be 2 or 4.")
    chain = await route(account, "upscale", body)

    async def call(candidate: Candidate) -> tuple[Any, int, UsageFacts]:
        result = await candidate.vendor.upscale(candidate.model_name, image, factor, candidate.credential)
        cost = capabilities.charged(candidate, capabilities.per_image_nano(candidate.entry, 1))
        return result, cost, facts("upscale", candidate, units={"images": 1, "factor": factor})

    return Prepared("upscale", chain, lambda c: capabilities.per_image_nano(c.entry, 1), call)


PREPARERS: dict[str, Callable[[Account, dict[str, Any]], Awaitable[Prepared]]] = {
    "chat": prepare_chat,
    "embed": prepare_embed,
    "image": prepare_image,
    "tts": prepare_tts,
    "rerank": prepare_rerank,
}
