"""Any OpenAI-compatible Chat Completions API: OpenAI itself, vLLM, Ollama, DeepSeek...

Streaming relays each SSE `data:` line as it arrives; closing the generator (a client that
went away) closes the upstream response, which cancels the request.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx
from django.conf import settings

from gateway.http import client_for_credential
from gateway.vendors.base import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    Credential,
    EmbedResult,
    Speech,
    StreamCut,
    Transcript,
    Usage,
    Vendor,
    VendorError,
    error_for_status,
    timeout_error,
)


def _usage(raw: dict[str, Any] | None) -> Usage:
    raw = raw or {}
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_input_tokens=int(details.get("cached_tokens") or 0),
    )


def error_detail(response: httpx.Response) -> str:
    """The message of an OpenAI-shaped error body ({error: {message, code}}), or its text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or error)[:300]
    return str(body)[:300]


def chat_completions_body(request: ChatRequest, model: str, stream: bool) -> dict[str, Any]:
    """An OpenAI Chat Completions request body (shared by every vendor speaking that format)."""
    body: dict[str, Any] = {"model": model, "messages": request.messages}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.tools:
        body["tools"] = request.tools
    if request.response_format:
        body["response_format"] = request.response_format
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


class OpenAICompatible(Vendor):
    name: ClassVar[str] = "openai_compatible"
    label: ClassVar[str] = "OpenAI-compatible endpoint"
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "embed", "image", "tts", "asr"})

    def platform_credential(self) -> Credential | None:
        if settings.OPENAI_COMPATIBLE_BASE_URL:
            return Credential(settings.OPENAI_COMPATIBLE_API_KEY, settings.OPENAI_COMPATIBLE_BASE_URL)
        return None

    def chat_url(self, request: ChatRequest, credential: Credential) -> str:
        return credential.base_url.rstrip("/") + "/chat/completions"

    def chat_body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        return chat_completions_body(request, request.model, stream)

    def headers(self, credential: Credential) -> dict[str, str]:
        return {"Authorization": f"Bearer {credential.api_key}"} if credential.api_key else {}

    async def _send(self, method: str, url: str, credential: Credential, **kwargs: Any) -> httpx.Response:
        try:
            response = await client_for_credential(self.name, credential).request(
                method, url, headers=self.headers(credential), **kwargs
            )
        except httpx.TimeoutException as exc:
            raise timeout_error(self.label) from exc
        except httpx.HTTPError as exc:
            raise VendorError(
                f"{self.label} is unreachable: {exc}", code="UPSTREAM_UNREACHABLE", retryable=True
            ) from exc
        if response.status_code >= 400:
            raise error_for_status(self.label, response.status_code, error_detail(response))
        return response

    async def _post(self, url: str, body: dict[str, Any], credential: Credential) -> dict[str, Any]:
        response = await self._send("POST", url, credential, json=body)
        try:
            return response.json()
        except ValueError as exc:
            raise VendorError(f"{self.label} sent a body that is not JSON", retryable=True) from exc

    async def chat(self, request: ChatRequest, credential: Credential) -> ChatResult:
        data = await self._post(self.chat_url(request, credential), self.chat_body(request, False), credential)
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (KeyError, IndexError, TypeError) as exc:
            raise VendorError(f"{self.label} sent a reply without choices", retryable=True) from exc
        return ChatResult(
            content=message.get("content") or "",
            finish_reason=choice.get("finish_reason") or "stop",
            usage=_usage(data.get("usage")),
            model=data.get("model") or request.model,
            tool_calls=message.get("tool_calls"),
        )

    async def chat_stream(self, request: ChatRequest, credential: Credential) -> AsyncIterator[ChatDelta]:
        client = client_for_credential(self.name, credential)
        upstream = client.build_request(
            "POST",
            self.chat_url(request, credential),
            json=self.chat_body(request, True),
            headers=self.headers(credential),
        )
        try:
            response = await client.send(upstream, stream=True)
        except httpx.TimeoutException as exc:
            raise timeout_error(self.label) from exc
        except httpx.HTTPError as exc:
            raise VendorError(
                f"{self.label} is unreachable: {exc}", code="UPSTREAM_UNREACHABLE", retryable=True
            ) from exc
        try:
            if response.status_code >= 400:
                await response.aread()
                raise error_for_status(self.label, response.status_code, error_detail(response))
            finished = False
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    finished = True
                    break
                try:
                    event = json.loads(payload)
                except ValueError as exc:
                    raise StreamCut(f"{self.label} sent a malformed stream event", retryable=False) from exc
                usage = _usage(event["usage"]) if event.get("usage") else None
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    yield ChatDelta(text=delta.get("content") or "", finish_reason=choice.get("finish_reason"))
                if usage is not None:
                    yield ChatDelta(usage=usage)
            if not finished:
                raise StreamCut(f"{self.label} ended the stream early", retryable=False)
        except httpx.TimeoutException as exc:
            raise timeout_error(self.label) from exc
        except httpx.HTTPError as exc:
            raise StreamCut(f"{self.label} broke the stream: {exc}") from exc
        finally:
            await response.aclose()

    async def embed(self, model: str, inputs: list[str], dimensions: int | None, credential: Credential) -> EmbedResult:
        body: dict[str, Any] = {"model": model, "input": inputs}
        if dimensions:
            body["dimensions"] = dimensions
        data = await self._post(credential.base_url.rstrip("/") + "/embeddings", body, credential)
        rows = sorted(data.get("data") or [], key=lambda row: row.get("index", 0))
        return EmbedResult(
            embeddings=[row["embedding"] for row in rows],
            usage=_usage(data.get("usage")),
            model=data.get("model") or model,
        )

    async def image(self, model: str, prompt: str, size: str, n: int, credential: Credential) -> list[bytes | str]:
        body = {"model": model, "prompt": prompt, "size": size, "n": n, "response_format": "b64_json"}
        data = await self._post(credential.base_url.rstrip("/") + "/images/generations", body, credential)
        images: list[bytes | str] = []
        for item in data.get("data") or []:
            if item.get("b64_json"):
                images.append(base64.b64decode(item["b64_json"]))
            elif item.get("url"):
                images.append(item["url"])
        if not images:
            raise VendorError(f"{self.label} returned no images", retryable=True)
        return images

    async def tts(self, model: str, text: str, voice: str | None, audio_format: str, credential: Credential) -> Speech:
        body = {"model": model, "input": text, "voice": voice or "alloy", "response_format": audio_format}
        response = await self._send("POST", credential.base_url.rstrip("/") + "/audio/speech", credential, json=body)
        mime = response.headers.get("content-type", f"audio/{audio_format}").split(";")[0]
        # OpenAI does not report the duration; estimate it from speech at about 15 characters a second.
        return Speech(response.content, audio_format, mime, len(text) / 15)

    async def asr(
        self, model: str, audio: bytes, mime: str | None, language: str | None, credential: Credential
    ) -> Transcript:
        data: dict[str, str] = {"model": model, "response_format": "verbose_json"}
        if language:
            data["language"] = language
        extension = (mime or "audio/wav").split("/")[-1].split(";")[0]
        response = await self._send(
            "POST",
            credential.base_url.rstrip("/") + "/audio/transcriptions",
            credential,
            data=data,
            files={"file": (f"audio.{extension}", audio, mime or "application/octet-stream")},
        )
        try:
            body = response.json()
        except ValueError as exc:
            raise VendorError(f"{self.label} sent a transcription that is not JSON", retryable=True) from exc
        return Transcript(
            text=body.get("text", ""),
            language=body.get("language") or language or "",
            duration_seconds=float(body.get("duration") or 0),
            segments=[
                {"start": s.get("start"), "end": s.get("end"), "text": s.get("text")}
                for s in body.get("segments") or []
            ],
        )


class OpenAI(OpenAICompatible):
    name: ClassVar[str] = "openai"
    label: ClassVar[str] = "OpenAI"

    def platform_credential(self) -> Credential | None:
        if settings.OPENAI_API_KEY:
            return Credential(settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL)
        return None
