"""GenStudio (Infini-AI, 无问芯穹): chat, embeddings, rerank and SD images over its HTTP API.

Routes (seed 004; the base URL is the host, `https://cloud.infini-ai.com` by default):

- chat: OpenAI Chat Completions at `{base}/maas/v1/chat/completions`, streamed as SSE;
- the same model on a chosen chip (GenStudio's "M×N" model-and-chip serving) at
  `{base}/maas/{model_id}/{chip}/chat/completions`;
- a user's own deployment at `{base}/maas/deployment/{mif-id}/chat/completions`;
- embeddings at `{base}/maas/v1/embeddings`, rerank at `{base}/maas/v1/rerank`;
- SD images through the task API: `{base}/api/maas/sd_task_api/create`, then `/get_result`.

**How a chip is chosen: it is part of the model name.** The model name the router sends
(`Candidate.model_name`) is `model_id@chip` for a chip route, e.g. `megrez-7b-instruct@nvidia`
-> `/maas/megrez-7b-instruct/nvidia/chat/completions` with `"model": "megrez-7b-instruct"` in the
body. A name without `@` uses the default route. A name that starts with `mif-` (or
`deployment/mif-...`) is a user's deployment; anything else after `deployment/`, or a `mif-` id
with characters other than letters and digits, is refused before any request is made. The
catalog entry's `chip` reaches the adapter only when routing builds that name from it.

The seed gives routes, auth and pricing but no body shapes beyond "OpenAI Chat Completions".
Assumed here, and spoken by the simulated server in tests/fakes/genstudio_upstream.py:

- errors on the `/maas` routes: OpenAI's `{"error": {"message", "type", "code"}}`; the parser
  also reads `{"error": "..."}`, `{"message": ...}`, `{"msg": ...}` and `{"detail": ...}`;
- a stream that fails after it started sends `data: {"error": {...}}` (as vLLM-based
  OpenAI-compatible servers do): that is a `StreamCut`, retryable when its code is 429 or 5xx;
- rerank: `{model, query, documents, top_n}` -> `{results: [{index, relevance_score}], usage}`;
- the SD task API answers in an envelope `{"code": 0, "msg": "...", "data": {...}}` where a
  non-zero `code` is an error; `create` takes `{model, prompt, width, height, n}` and returns
  `data.task_id`; `get_result` takes `{task_id}` and returns `data.status` (pending, running,
  success, failed) with `data.images` (URLs, or objects with `url` or base64 `b64_json`).

Failures: 429, 408, 5xx, timeouts and unreachable hosts are retryable; other 4xx are permanent
and carry GenStudio's own message. Closing a stream's generator closes the upstream response.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
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
    StreamCut,
    Usage,
    Vendor,
    VendorError,
    error_for_status,
    timeout_error,
)
from gateway.vendors.openai_compatible import chat_completions_body

DEPLOYMENT_ID = re.compile(r"mif-[A-Za-z0-9]+")
PATH_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SIZE = re.compile(r"(\d{2,5})[x*](\d{2,5})")
TASK_DONE = frozenset({"success", "succeeded", "successful", "done", "completed", "finished"})
TASK_FAILED = frozenset({"failed", "failure", "error", "cancelled", "canceled"})


def parse_usage(raw: dict[str, Any] | None) -> Usage:
    raw = raw or {}
    details = raw.get("prompt_tokens_details") or {}
    prompt = raw.get("prompt_tokens")
    if prompt is None:
        prompt = raw.get("total_tokens")
    return Usage(
        input_tokens=int(prompt or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_input_tokens=int(details.get("cached_tokens") or 0),
    )


def error_message(body: Any) -> str | None:
    """GenStudio's message in any of the error shapes it may send, with its code when it has one."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    source = error if isinstance(error, dict) else body
    if isinstance(error, str) and error:
        return error[:300]
    message = next(
        (source[key] for key in ("message", "msg", "detail") if isinstance(source.get(key), str) and source[key]),
        None,
    )
    code = source.get("code")
    if message is None:
        return f"error code {code}" if code not in (None, "", 0, "0") else None
    if code not in (None, "", 0, "0", 200, "200") and str(code) not in message:
        message = f"{message} (code {code})"
    return message[:300]


def response_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    return error_message(body) or str(body)[:300]


def image_size(size: str) -> tuple[int, int]:
    match = SIZE.fullmatch(size.strip().lower()) if isinstance(size, str) else None
    if not match:
        raise VendorError(f"size must look like 1024x1024, not {size!r}", status=400, code="INVALID_SIZE")
    return int(match.group(1)), int(match.group(2))


class GenStudio(Vendor):
    name: ClassVar[str] = "genstudio"
    label: ClassVar[str] = "GenStudio"
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "embed", "rerank", "image"})

    def __init__(
        self,
        *,
        timeout: httpx.Timeout | float | None = None,
        image_poll_interval: float = 1.0,
        image_poll_max_interval: float = 5.0,
        image_timeout: float = 180.0,
    ) -> None:
        """`timeout` overrides the pooled client's timeouts per request; image polling stops after
        `image_timeout` seconds, polling every `image_poll_interval` seconds, backing off to the max."""
        self.timeout = timeout
        self.image_poll_interval = image_poll_interval
        self.image_poll_max_interval = image_poll_max_interval
        self.image_timeout = image_timeout

    def platform_credential(self) -> Credential | None:
        if settings.GENSTUDIO_API_KEY:
            return Credential(settings.GENSTUDIO_API_KEY, settings.GENSTUDIO_BASE_URL)
        return None

    # --- Routes and bodies ------------------------------------------------------------------

    def chat_target(self, model: str, credential: Credential) -> tuple[str, str]:
        """(URL, model for the body) of a model name: default route, chip route or deployment."""
        base = credential.base_url.rstrip("/")
        name = model
        if name.startswith("deployment/") or name.startswith("mif-"):
            deployment = name.removeprefix("deployment/")
            if not DEPLOYMENT_ID.fullmatch(deployment):
                raise VendorError(
                    f"{self.label} deployment ids start with mif- followed by letters and digits, not {deployment!r}",
                    status=400,
                    code="INVALID_MODEL",
                )
            return f"{base}/maas/deployment/{deployment}/chat/completions", deployment
        model_id, at, chip = name.partition("@")
        if not PATH_PART.fullmatch(model_id) or (at and not PATH_PART.fullmatch(chip)):
            raise VendorError(
                f"{self.label} model names are model_id or model_id@chip, not {model!r}",
                status=400,
                code="INVALID_MODEL",
            )
        if at:
            return f"{base}/maas/{model_id}/{chip}/chat/completions", model_id
        return f"{base}/maas/v1/chat/completions", model_id

    def chat_body(self, request: ChatRequest, model: str, stream: bool) -> dict[str, Any]:
        return chat_completions_body(request, model, stream)

    def headers(self, credential: Credential) -> dict[str, str]:
        return {"Authorization": f"Bearer {credential.api_key}"} if credential.api_key else {}

    # --- HTTP -------------------------------------------------------------------------------

    def _timeout_kwargs(self) -> dict[str, Any]:
        return {"timeout": self.timeout} if self.timeout is not None else {}

    def _transport_error(self, exc: httpx.HTTPError) -> VendorError:
        if isinstance(exc, httpx.TimeoutException):
            return timeout_error(self.label)
        return VendorError(f"{self.label} is unreachable: {exc}", code="UPSTREAM_UNREACHABLE", retryable=True)

    async def _post(self, url: str, body: dict[str, Any], credential: Credential) -> dict[str, Any]:
        try:
            response = await client_for_credential(self.name, credential).post(
                url, json=body, headers=self.headers(credential), **self._timeout_kwargs()
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            raise error_for_status(self.label, response.status_code, response_detail(response))
        try:
            data = response.json()
        except ValueError as exc:
            raise VendorError(f"{self.label} sent a body that is not JSON", retryable=True) from exc
        if not isinstance(data, dict):
            raise VendorError(f"{self.label} sent a body that is not a JSON object", retryable=True)
        return data

    async def _task_call(self, url: str, body: dict[str, Any], credential: Credential) -> dict[str, Any]:
        """A task-API call: the envelope's non-zero `code` is an error even under HTTP 200."""
        data = await self._post(url, body, credential)
        code = data.get("code")
        if code not in (None, 0, "0", 200, "200"):
            status = int(code) if isinstance(code, int) and 400 <= code <= 599 else 400
            raise error_for_status(self.label, status, error_message(data) or f"error code {code}")
        payload = data.get("data")
        return payload if isinstance(payload, dict) else data

    async def verify_credential(self, credential: Credential) -> None:
        """The BYOK test call: list models (`GET {base}/maas/v1/models`); raises VendorError on failure."""
        url = credential.base_url.rstrip("/") + "/maas/v1/models"
        try:
            response = await client_for_credential(self.name, credential).get(
                url, headers=self.headers(credential), **self._timeout_kwargs()
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            raise error_for_status(self.label, response.status_code, response_detail(response))

    # --- Chat -------------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, credential: Credential) -> ChatResult:
        url, model = self.chat_target(request.model, credential)
        data = await self._post(url, self.chat_body(request, model, False), credential)
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise VendorError(f"{self.label} sent a reply without choices", retryable=True) from exc
        return ChatResult(
            content=message.get("content") or "",
            finish_reason=choice.get("finish_reason") or "stop",
            usage=parse_usage(data.get("usage")),
            model=data.get("model") or model,
            tool_calls=message.get("tool_calls"),
        )

    async def chat_stream(self, request: ChatRequest, credential: Credential) -> AsyncIterator[ChatDelta]:
        url, model = self.chat_target(request.model, credential)
        client = client_for_credential(self.name, credential)
        upstream = client.build_request(
            "POST",
            url,
            json=self.chat_body(request, model, True),
            headers=self.headers(credential),
            **self._timeout_kwargs(),
        )
        try:
            response = await client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        try:
            if response.status_code >= 400:
                await response.aread()
                raise error_for_status(self.label, response.status_code, response_detail(response))
            finished = False
            event_name = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event_name = line[6:].strip()
                    continue
                if not line.startswith("data:"):
                    if not line:
                        event_name = ""
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    finished = True
                    break
                try:
                    event = json.loads(payload)
                except ValueError as exc:
                    raise StreamCut(f"{self.label} sent a malformed stream event") from exc
                if not isinstance(event, dict):
                    raise StreamCut(f"{self.label} sent a malformed stream event")
                if event_name == "error" or event.get("error"):
                    raise self._stream_error(event)
                usage = parse_usage(event["usage"]) if event.get("usage") else None
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    yield ChatDelta(text=delta.get("content") or "", finish_reason=choice.get("finish_reason"))
                if usage is not None:
                    yield ChatDelta(usage=usage)
            if not finished:
                raise StreamCut(f"{self.label} ended the stream early")
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.TimeoutException):
                raise timeout_error(self.label) from exc
            raise StreamCut(f"{self.label} broke the stream: {exc}") from exc
        finally:
            await response.aclose()

    def _stream_error(self, event: dict[str, Any]) -> StreamCut:
        error = event.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        try:
            status = int(code) if code is not None else 500
        except (TypeError, ValueError):
            status = 500
        message = error_message(event) or "an error event"
        return StreamCut(
            f"{self.label} failed mid-stream: {message}",
            code="UPSTREAM_STREAM_ERROR",
            retryable=status == 429 or status >= 500,
        )

    # --- Embeddings and rerank --------------------------------------------------------------

    async def embed(self, model: str, inputs: list[str], dimensions: int | None, credential: Credential) -> EmbedResult:
        body: dict[str, Any] = {"model": model, "input": inputs}
        if dimensions:
            body["dimensions"] = dimensions
        data = await self._post(credential.base_url.rstrip("/") + "/maas/v1/embeddings", body, credential)
        rows = data.get("data")
        if not isinstance(rows, list) or len(rows) != len(inputs):
            raise VendorError(
                f"{self.label} sent {len(rows or [])} embeddings for {len(inputs)} inputs", retryable=True
            )
        rows = sorted(rows, key=lambda row: row.get("index", 0))
        return EmbedResult(
            embeddings=[row["embedding"] for row in rows],
            usage=parse_usage(data.get("usage")),
            model=data.get("model") or model,
        )

    async def rerank_with_usage(
        self, model: str, query: str, documents: list[str], top_n: int | None, credential: Credential
    ) -> tuple[list[dict[str, Any]], Usage]:
        """Rerank, with the tokens GenStudio reports (usage.total_tokens) as input tokens."""
        body: dict[str, Any] = {"model": model, "query": query, "documents": documents}
        if top_n is not None:
            body["top_n"] = top_n
        data = await self._post(credential.base_url.rstrip("/") + "/maas/v1/rerank", body, credential)
        return ranked(self.label, data.get("results"), len(documents), top_n), parse_usage(data.get("usage"))

    async def rerank(
        self, model: str, query: str, documents: list[str], top_n: int | None, credential: Credential
    ) -> list[dict[str, Any]]:
        results, _ = await self.rerank_with_usage(model, query, documents, top_n, credential)
        return results

    # --- SD images --------------------------------------------------------------------------

    async def image(self, model: str, prompt: str, size: str, n: int, credential: Credential) -> list[bytes | str]:
        """Create an SD task, then poll get_result until it is done, failed, or `image_timeout` passes."""
        width, height = image_size(size)
        base = credential.base_url.rstrip("/") + "/api/maas/sd_task_api"
        created = await self._task_call(
            f"{base}/create",
            {"model": model, "prompt": prompt, "width": width, "height": height, "n": n},
            credential,
        )
        task_id = created.get("task_id") or created.get("id")
        if not task_id:
            raise VendorError(f"{self.label} created an image task without an id", retryable=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.image_timeout
        interval = self.image_poll_interval
        transient_failures = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise VendorError(
                    f"{self.label} image task {task_id} did not finish within {self.image_timeout:g}s",
                    status=504,
                    code="UPSTREAM_TIMEOUT",
                    retryable=True,
                )
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * 1.5, self.image_poll_max_interval)
            try:
                result = await self._task_call(f"{base}/get_result", {"task_id": task_id}, credential)
            except VendorError as exc:
                transient_failures += 1
                if not exc.retryable or transient_failures > 3:
                    raise
                continue
            transient_failures = 0
            status = str(result.get("status") or result.get("state") or "").lower()
            if status in TASK_FAILED:
                reason = error_message(result) or result.get("error") or status
                raise VendorError(
                    f"{self.label} image task {task_id} failed: {reason}", code="UPSTREAM_TASK_FAILED", retryable=False
                )
            if status in TASK_DONE:
                images = task_images(self.label, result)
                if not images:
                    raise VendorError(f"{self.label} image task {task_id} finished without images", retryable=True)
                return images


def ranked(label: str, results: Any, count: int, top_n: int | None) -> list[dict[str, Any]]:
    """[{index, relevance_score}] best first, at most top_n, every index one of the documents."""
    if not isinstance(results, list):
        raise VendorError(f"{label} sent a rerank reply without results", retryable=True)
    rows: list[dict[str, Any]] = []
    for row in results:
        try:
            index = int(row["index"])
            score = float(row["relevance_score"])
        except (KeyError, TypeError, ValueError) as exc:
            raise VendorError(f"{label} sent a malformed rerank result", retryable=True) from exc
        if not 0 <= index < count:
            raise VendorError(f"{label} ranked document {index} of {count}", retryable=True)
        rows.append({"index": index, "relevance_score": score})
    rows.sort(key=lambda row: (-row["relevance_score"], row["index"]))
    return rows[:top_n] if top_n is not None else rows


def task_images(label: str, result: dict[str, Any]) -> list[bytes | str]:
    raw = result.get("images") or result.get("image_urls") or result.get("urls") or []
    images: list[bytes | str] = []
    for item in raw if isinstance(raw, list) else [raw]:
        if isinstance(item, str):
            images.append(item)
            continue
        if not isinstance(item, dict):
            continue
        if item.get("url"):
            images.append(str(item["url"]))
            continue
        encoded = item.get("b64_json") or item.get("base64")
        if encoded:
            try:
                images.append(base64.b64decode(encoded, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise VendorError(f"{label} sent an image that is not base64", retryable=True) from exc
    return images
