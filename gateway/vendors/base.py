"""The small interface every vendor module implements.

A vendor turns our request dataclasses into its wire format and back, and maps its own
failures to `VendorError(retryable=...)`. To add a vendor: subclass `Vendor`, implement the
capabilities it serves, register it in `gateway/vendors/__init__.py`, add its models to
`gateway/catalog.json`, and test it against a local server speaking its wire format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Credential:
    api_key: str = field(repr=False)  # never in a log line or an error page
    base_url: str = ""
    byok: bool = False


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    temperature: float | None = None
    max_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChatResult:
    content: str
    finish_reason: str
    usage: Usage
    model: str
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class ChatDelta:
    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass
class EmbedResult:
    embeddings: list[list[float]]
    usage: Usage
    model: str


@dataclass
class Speech:
    audio: bytes
    format: str
    mime_type: str
    duration_seconds: float


@dataclass
class Transcript:
    text: str
    language: str
    duration_seconds: float
    segments: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Upscaled:
    png: bytes
    original_size: tuple[int, int]
    new_size: tuple[int, int]


class VendorError(Exception):
    """An upstream failure. `retryable` ones (429, 5xx, timeouts) may fail over to another model."""

    def __init__(
        self, message: str, *, status: int = 502, code: str = "UPSTREAM_ERROR", retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retryable = retryable


class StreamCut(VendorError):
    """The upstream stream ended before its final event."""


def error_for_status(vendor: str, status: int, detail: str) -> VendorError:
    """Map an upstream HTTP status to our error: what the caller sees and whether to fail over."""
    if status == 429:
        return VendorError(
            f"{vendor} rate-limited the request: {detail}", status=503, code="UPSTREAM_RATE_LIMITED", retryable=True
        )
    if status in (401, 403):
        return VendorError(f"{vendor} refused the credential: {detail}", status=502, code="UPSTREAM_AUTH_FAILED")
    if status == 408 or status >= 500:
        return VendorError(
            f"{vendor} failed ({status}): {detail}", status=502, code="UPSTREAM_UNAVAILABLE", retryable=True
        )
    return VendorError(f"{vendor} rejected the request ({status}): {detail}", status=502, code="UPSTREAM_REJECTED")


def timeout_error(vendor: str) -> VendorError:
    return VendorError(f"{vendor} did not answer in time", status=504, code="UPSTREAM_TIMEOUT", retryable=True)


class Vendor:
    name: ClassVar[str]
    label: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def platform_credential(self) -> Credential | None:
        """The platform's own credential from settings, or None (then only BYOK can use it)."""
        return None

    async def chat(self, request: ChatRequest, credential: Credential) -> ChatResult:
        raise VendorError(f"{self.name} does not serve chat", status=400, code="UNSUPPORTED_CAPABILITY")

    def chat_stream(self, request: ChatRequest, credential: Credential) -> AsyncIterator[ChatDelta]:
        raise VendorError(f"{self.name} does not stream chat", status=400, code="UNSUPPORTED_CAPABILITY")

    async def embed(self, model: str, inputs: list[str], dimensions: int | None, credential: Credential) -> EmbedResult:
        raise VendorError(f"{self.name} does not serve embeddings", status=400, code="UNSUPPORTED_CAPABILITY")

    async def rerank(
        self, model: str, query: str, documents: list[str], top_n: int | None, credential: Credential
    ) -> list[dict[str, Any]]:
        """[{index, relevance_score}] best first."""
        raise VendorError(f"{self.name} does not serve rerank", status=400, code="UNSUPPORTED_CAPABILITY")

    async def rerank_with_usage(
        self, model: str, query: str, documents: list[str], top_n: int | None, credential: Credential
    ) -> tuple[list[dict[str, Any]], Usage]:
        """The ranking and what the vendor says it billed (empty Usage when it says nothing)."""
        return await self.rerank(model, query, documents, top_n, credential), Usage()

    async def image(self, model: str, prompt: str, size: str, n: int, credential: Credential) -> list[bytes | str]:
        """PNG bytes or image URLs, one per image."""
        raise VendorError(f"{self.name} does not serve images", status=400, code="UNSUPPORTED_CAPABILITY")

    async def vision(self, model: str, prompt: str, images: list[bytes], credential: Credential) -> ChatResult:
        raise VendorError(f"{self.name} does not serve vision", status=400, code="UNSUPPORTED_CAPABILITY")

    async def tts(self, model: str, text: str, voice: str | None, audio_format: str, credential: Credential) -> Speech:
        raise VendorError(f"{self.name} does not serve speech", status=400, code="UNSUPPORTED_CAPABILITY")

    async def asr(
        self, model: str, audio: bytes, mime: str | None, language: str | None, credential: Credential
    ) -> Transcript:
        raise VendorError(f"{self.name} does not serve transcription", status=400, code="UNSUPPORTED_CAPABILITY")

    async def upscale(self, model: str, image: bytes, factor: int, credential: Credential) -> Upscaled:
        raise VendorError(f"{self.name} does not upscale images", status=400, code="UNSUPPORTED_CAPABILITY")

    def voices(self) -> list[dict[str, Any]]:
        return []
