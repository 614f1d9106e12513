"""The built-in sandbox vendor: every capability offline, always labelled "sandbox".

It wraps the engines in gateway/sandbox/. Failure injection for tests and demos (chat only): a model name
ending in `-fail-429`, `-fail-500`, `-timeout` or `-cut-stream[-N]` (e.g.
`sandbox-chat-fail-429`), or the header `X-Sandbox-Fail: 429|500|timeout|cut-stream`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, ClassVar

from django.conf import settings

from gateway.sandbox import chat as sandbox_chat
from gateway.sandbox import errors as sandbox_errors
from gateway.vendors.base import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    Credential,
    EmbedResult,
    Speech,
    StreamCut,
    Transcript,
    Upscaled,
    Usage,
    Vendor,
    VendorError,
    error_for_status,
    timeout_error,
)

DIRECTIVE_SUFFIX = re.compile(r"-(fail-\d{3}|timeout|cut-stream(?:-\d+)?)$")
HEADER_DIRECTIVES = {
    "429": "fail-429",
    "500": "fail-500",
    "503": "fail-503",
    "timeout": "timeout",
    "cut-stream": "cut-stream",
}
SANDBOX_CREDENTIAL = Credential(api_key="", base_url="sandbox:")
# What a vendor like OpenAI bills for one low-detail image in a vision prompt.
VISION_TOKENS_PER_IMAGE = 85


def catalog_model_id(model: str) -> str:
    """The catalog entry behind a sandbox model name carrying a failure directive."""
    return DIRECTIVE_SUFFIX.sub("", model)


def engine_model(request: ChatRequest) -> str:
    directive = HEADER_DIRECTIVES.get(str(request.extra.get("sandbox_fail") or ""))
    return f"{request.model}-{directive}" if directive else request.model


_asr_pool: ProcessPoolExecutor | None = None
_asr_pool_lock = threading.Lock()


def _asr_processes() -> ProcessPoolExecutor | None:
    global _asr_pool  # noqa: PLW0603 - one pool per server process, made on first use
    workers = settings.SANDBOX_ASR_PROCESSES
    if workers <= 0:
        return None
    with _asr_pool_lock:
        if _asr_pool is None:
            # spawn, not fork: a forked copy of a threaded server (daphne, asgiref's executors) may deadlock.
            from gateway.sandbox.speech import die_with_parent

            context = multiprocessing.get_context("spawn")
            _asr_pool = ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent)
        return _asr_pool


async def transcribe_elsewhere(audio: bytes, mime: str | None, language: str) -> Any:
    """pocketsphinx holds the GIL while it decodes (about a second per utterance), which would
    stall every socket and call this server process is handling: decode in a worker process
    (SANDBOX_ASR_PROCESSES, default 1; 0 decodes in a thread here)."""
    global _asr_pool  # noqa: PLW0603
    from gateway.sandbox import speech

    pool = _asr_processes()
    if pool is None:
        return await asyncio.to_thread(speech.transcribe, audio, mime, language)
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, speech.transcribe, audio, mime, language)
    except BrokenProcessPool as exc:
        with _asr_pool_lock:
            if _asr_pool is pool:
                _asr_pool = None  # the next call starts a fresh worker
        raise sandbox_errors.SandboxUnavailable("the speech recognition worker stopped; try again") from exc


def _map_error(exc: sandbox_errors.SandboxError) -> VendorError:
    if isinstance(exc, sandbox_errors.SandboxTimeout):
        return timeout_error("sandbox")
    if isinstance(exc, sandbox_errors.SandboxStreamCut):
        return StreamCut("sandbox cut the stream (injected)")
    if isinstance(exc, sandbox_errors.SandboxInvalidRequest):
        return VendorError(exc.message, status=400, code="INVALID_REQUEST")
    return error_for_status("sandbox", exc.status, exc.message)


class Sandbox(Vendor):
    name: ClassVar[str] = "sandbox"
    label: ClassVar[str] = "Sandbox (offline)"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"chat", "embed", "image", "vision", "tts", "asr", "rerank", "upscale", "realtime"}
    )

    def platform_credential(self) -> Credential | None:
        return SANDBOX_CREDENTIAL if settings.SANDBOX_ENABLED else None

    async def chat(self, request: ChatRequest, credential: Credential) -> ChatResult:
        try:
            # In a thread: the first call of a process loads the tokenizer (a fraction of a second).
            result = await asyncio.to_thread(
                sandbox_chat.generate_reply,
                request.messages,
                model=engine_model(request),
                max_tokens=request.max_tokens,
                response_format=request.response_format,
                tools=request.tools,
            )
        except sandbox_errors.SandboxError as exc:
            raise _map_error(exc) from exc
        return ChatResult(
            content=result.text,
            finish_reason=result.finish_reason,
            usage=Usage(result.usage.prompt_tokens, result.usage.completion_tokens),
            model=request.model,
        )

    async def chat_stream(self, request: ChatRequest, credential: Credential) -> AsyncIterator[ChatDelta]:
        stream = sandbox_chat.stream_reply(
            request.messages,
            model=engine_model(request),
            max_tokens=request.max_tokens,
            response_format=request.response_format,
            tools=request.tools,
            tokens_per_second=settings.SANDBOX_TOKENS_PER_SECOND,
            timeout_after=0.05,
        )
        try:
            async for chunk in stream:
                usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens) if chunk.usage else None
                yield ChatDelta(text=chunk.delta, finish_reason=chunk.finish_reason, usage=usage)
        except sandbox_errors.SandboxError as exc:
            raise _map_error(exc) from exc
        except asyncio.CancelledError:
            await stream.aclose()
            raise

    async def embed(self, model: str, inputs: list[str], dimensions: int | None, credential: Credential) -> EmbedResult:
        from gateway.sandbox import embeddings, tokens

        try:
            vectors = [embeddings.embed(text, dimensions=dimensions or 1536) for text in inputs]
        except sandbox_errors.SandboxError as exc:
            raise _map_error(exc) from exc
        used = sum(tokens.count_text(text) for text in inputs)
        return EmbedResult(embeddings=vectors, usage=Usage(input_tokens=used), model=model)

    async def rerank(
        self, model: str, query: str, documents: list[str], top_n: int | None, credential: Credential
    ) -> list[dict[str, Any]]:
        from gateway.sandbox import rerank

        try:
            return [dict(row) for row in rerank.rerank(query, documents, top_n=top_n)]
        except sandbox_errors.SandboxError as exc:
            raise _map_error(exc) from exc

    async def image(self, model: str, prompt: str, size: str, n: int, credential: Credential) -> list[bytes | str]:
        from gateway.sandbox import images

        try:
            return await asyncio.to_thread(lambda: [images.generate(prompt, size, variant=i) for i in range(n)])
        except sandbox_errors.SandboxError as exc:
            raise _map_error(exc) from exc

    async def vision(self, model: str, prompt: str, images: list[bytes], credential: Credential) -> ChatResult:
        from gateway.sandbox import tokens, vision

        try:
            parts = await asyncio.to_thread(lambda: [vision.describe(image, prompt) for image in images])
        except sandbox_errors.SandboxError as exc:
            raise _map_error(exc) from exc
        content = "\n\n".join(parts if len(parts) == 1 else [f"Image {i + 1}: {text}" for i, text in enumerate(parts)])
        usage = Usage(tokens.count_text(prompt) + VISION_TOKENS_PER_IMAGE * len(images), tokens.count_text(content))
        return ChatResult(content=content, finish_reason="stop", usage=usage, model=model)

    async def tts(self, model: str, text: str, voice: str | None, audio_format: str, credential: Credential) -> Speech:
        from gateway.sandbox import speech

        try:
            result = await asyncio.to_thread(speech.synthesize, text, voice, 1.0, audio_format)
        except sandbox_errors.SandboxError as exc:
            raise _map_error(exc) from exc
        return Speech(result.audio, result.format, result.mime_type, result.duration)

    async def asr(
        self, model: str, audio: bytes, mime: str | None, language: str | None, credential: Credential
    ) -> Transcript:

        try:
            result = await transcribe_elsewhere(audio, mime, language or "en")
        except sandbox_errors.SandboxError as exc:
            raise _map_error(exc) from exc
        return Transcript(result["text"], result["language"], result["duration"], [dict(s) for s in result["segments"]])

    async def upscale(self, model: str, image: bytes, factor: int, credential: Credential) -> Upscaled:
        from gateway.sandbox import images

        try:
            result = await asyncio.to_thread(images.upscale, image, factor)
        except sandbox_errors.SandboxError as exc:
            raise _map_error(exc) from exc
        return Upscaled(result.png, (result.original_width, result.original_height), (result.width, result.height))

    def voices(self) -> list[dict[str, Any]]:
        from gateway.sandbox import speech

        try:
            found = speech.voices()
        except sandbox_errors.SandboxError:
            return []
        return [
            {"id": v.id, "name": v.name, "language": v.language, "gender": v.gender, "vendor": "sandbox"} for v in found
        ]
