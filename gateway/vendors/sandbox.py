"""The built-in sandbox vendor: every capability offline, always labelled "sandbox".

It wraps the engines in gateway/sandbox/. Failure injection for tests and demos: a model name
ending in `-fail-429`, `-fail-500`, `-timeout` or `-cut-stream[-N]` (e.g.
`sandbox-chat-fail-429`), or the header `X-Sandbox-Fail: 429|500|timeout|cut-stream`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import ClassVar

from django.conf import settings

from gateway.sandbox import chat as sandbox_chat
from gateway.sandbox import errors as sandbox_errors
from gateway.vendors.base import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    Credential,
    EmbedResult,
    StreamCut,
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


def catalog_model_id(model: str) -> str:
    """The catalog entry behind a sandbox model name carrying a failure directive."""
    return DIRECTIVE_SUFFIX.sub("", model)


def engine_model(request: ChatRequest) -> str:
    directive = HEADER_DIRECTIVES.get(str(request.extra.get("sandbox_fail") or ""))
    return f"{request.model}-{directive}" if directive else request.model


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
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "embed"})

    def platform_credential(self) -> Credential | None:
        return SANDBOX_CREDENTIAL if settings.SANDBOX_ENABLED else None

    async def chat(self, request: ChatRequest, credential: Credential) -> ChatResult:
        try:
            result = sandbox_chat.generate_reply(
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
