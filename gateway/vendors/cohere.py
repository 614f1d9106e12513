"""Cohere rerank (API v2): `POST {base}/v2/rerank`, Bearer auth; capability "rerank".

Request `{model, query, documents, top_n}`; reply `{id, results: [{index, relevance_score}],
meta: {billed_units: {search_units}}}`. Cohere bills per search unit (one query with up to 100
documents), so `rerank_with_usage` reports the billed search units as `Usage.input_tokens`; the
catalog entry's `input_per_mtok` is the price per million search units, so the usual token
formula prices a call exactly.

Errors are `{"id": ..., "message": ...}`. 429 and 5xx (and timeouts) are retryable; 498 (Cohere's
"invalid token") is treated as 401; other 4xx are permanent and carry Cohere's message.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
from django.conf import settings

from gateway.http import client_for_credential
from gateway.vendors.base import Credential, Usage, Vendor, VendorError, error_for_status, timeout_error
from gateway.vendors.genstudio import ranked


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return body["message"][:300]
    return str(body)[:300]


class Cohere(Vendor):
    name: ClassVar[str] = "cohere"
    label: ClassVar[str] = "Cohere"
    capabilities: ClassVar[frozenset[str]] = frozenset({"rerank"})

    def __init__(self, *, timeout: httpx.Timeout | float | None = None) -> None:
        """`timeout` overrides the pooled client's timeouts per request."""
        self.timeout = timeout

    def platform_credential(self) -> Credential | None:
        if settings.COHERE_API_KEY:
            return Credential(settings.COHERE_API_KEY, settings.COHERE_BASE_URL)
        return None

    async def verify_credential(self, credential: Credential) -> None:
        """The BYOK test call: `GET {base}/v1/models?page_size=1`; raises VendorError on failure."""
        await self._call("GET", credential.base_url.rstrip("/") + "/v1/models?page_size=1", None, credential)

    async def _call(self, method: str, url: str, body: dict[str, Any] | None, credential: Credential) -> dict[str, Any]:
        extra: dict[str, Any] = {"timeout": self.timeout} if self.timeout is not None else {}
        if body is not None:
            extra["json"] = body
        headers = {"Authorization": f"Bearer {credential.api_key}", "Accept": "application/json"}
        try:
            response = await client_for_credential(self.name, credential).request(method, url, headers=headers, **extra)
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.TimeoutException):
                raise timeout_error(self.label) from exc
            raise VendorError(
                f"{self.label} is unreachable: {exc}", code="UPSTREAM_UNREACHABLE", retryable=True
            ) from exc
        if response.status_code >= 400:
            status = 401 if response.status_code == 498 else response.status_code
            raise error_for_status(self.label, status, _detail(response))
        try:
            data = response.json()
        except ValueError as exc:
            raise VendorError(f"{self.label} sent a body that is not JSON", retryable=True) from exc
        if not isinstance(data, dict):
            raise VendorError(f"{self.label} sent a body that is not a JSON object", retryable=True)
        return data

    async def rerank_with_usage(
        self, model: str, query: str, documents: list[str], top_n: int | None, credential: Credential
    ) -> tuple[list[dict[str, Any]], Usage]:
        """Rerank, with the billed search units as `Usage.input_tokens`."""
        body: dict[str, Any] = {"model": model, "query": query, "documents": documents}
        if top_n is not None:
            body["top_n"] = top_n
        data = await self._call("POST", credential.base_url.rstrip("/") + "/v2/rerank", body, credential)
        billed = ((data.get("meta") or {}).get("billed_units") or {}).get("search_units")
        try:
            search_units = int(billed)
        except (TypeError, ValueError):
            # No billed units in the reply: Cohere's rule, one unit per query and 100 documents.
            search_units = max(1, -(-len(documents) // 100))
        return ranked(self.label, data.get("results"), len(documents), top_n), Usage(input_tokens=search_units)

    async def rerank(
        self, model: str, query: str, documents: list[str], top_n: int | None, credential: Credential
    ) -> list[dict[str, Any]]:
        results, _ = await self.rerank_with_usage(model, query, documents, top_n, credential)
        return results
