"""The Cohere rerank adapter against a SIMULATED Cohere v2 API on loopback
(tests/fakes/cohere_upstream.py): ordering, top_n, billed search units, error mapping, timeouts."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from gateway import catalog
from gateway.http import client_for
from gateway.models import CatalogModel
from gateway.vendors import get_vendor
from gateway.vendors.base import ChatRequest, Credential, VendorError
from gateway.vendors.cohere import Cohere
from infrai.lib.money import usd_to_nano
from tests.factories import bearer, make_account, make_key
from tests.fakes.cohere_upstream import Script, simulated_cohere

DOCUMENTS = [
    "Paris is the capital of France.",
    "Berlin is in Germany.",
    "Cheese is made from milk.",
    "France borders Germany and its capital Paris is on the Seine.",
]
QUERY = "What is the capital of France?"


@pytest.fixture
async def cohere():
    yield Cohere(timeout=2.0)
    await client_for("cohere").aclose()


def cred(base_url: str) -> Credential:
    return Credential("co-sim-key", base_url)


async def test_rerank_posts_v2_and_returns_indexes_best_first(cohere):
    with simulated_cohere() as (base, script):
        results = await cohere.rerank("rerank-v3.5", QUERY, DOCUMENTS, None, cred(base))
    assert [r["index"] for r in results] == [0, 3, 1, 2]
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and all(set(r) == {"index", "relevance_score"} for r in results)
    [call] = script.requests
    assert call["path"] == "/v2/rerank" and call["authorization"] == "Bearer co-sim-key"
    assert call["body"] == {"model": "rerank-v3.5", "query": QUERY, "documents": DOCUMENTS}


async def test_top_n_keeps_the_best(cohere):
    with simulated_cohere() as (base, script):
        results = await cohere.rerank("rerank-v3.5", QUERY, DOCUMENTS, 2, cred(base))
    assert [r["index"] for r in results] == [0, 3]
    assert script.requests[0]["body"]["top_n"] == 2


async def test_billed_search_units_are_reported_as_usage(cohere):
    many = [f"document number {i}" for i in range(150)]
    with simulated_cohere() as (base, _):
        _, usage = await cohere.rerank_with_usage("rerank-v3.5", QUERY, many, 3, cred(base))
    assert usage.input_tokens == 2 and usage.output_tokens == 0
    with simulated_cohere(Script(omit_billed_units=True)) as (base, _):
        _, fallback = await cohere.rerank_with_usage("rerank-v3.5", QUERY, many[:120], 3, cred(base))
    assert fallback.input_tokens == 2  # one unit per 100 documents when the reply does not say


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (429, "UPSTREAM_RATE_LIMITED", True),
        (500, "UPSTREAM_UNAVAILABLE", True),
        (503, "UPSTREAM_UNAVAILABLE", True),
        (400, "UPSTREAM_REJECTED", False),
        (422, "UPSTREAM_REJECTED", False),
        (401, "UPSTREAM_AUTH_FAILED", False),
        (498, "UPSTREAM_AUTH_FAILED", False),
    ],
)
async def test_errors_map_to_retryable_or_permanent_with_coheres_message(cohere, status, code, retryable):
    message = f"invalid request: scripted failure {status}"
    with simulated_cohere(Script(status=status, message=message)) as (base, _):
        with pytest.raises(VendorError) as caught:
            await cohere.rerank("rerank-v3.5", QUERY, DOCUMENTS, None, cred(base))
    assert caught.value.code == code and caught.value.retryable is retryable
    assert message in caught.value.message


async def test_a_real_400_from_a_bad_body_carries_the_message(cohere):
    with simulated_cohere() as (base, _):
        with pytest.raises(VendorError) as caught:
            await cohere.rerank("", QUERY, DOCUMENTS, None, cred(base))
    assert not caught.value.retryable and "model is required" in caught.value.message


async def test_a_slow_answer_is_a_retryable_timeout():
    vendor = Cohere(timeout=0.2)
    try:
        with simulated_cohere(Script(delay=1.0)) as (base, _):
            started = time.monotonic()
            with pytest.raises(VendorError) as caught:
                await vendor.rerank("rerank-v3.5", QUERY, DOCUMENTS, None, cred(base))
            elapsed = time.monotonic() - started
    finally:
        await client_for("cohere").aclose()
    assert caught.value.code == "UPSTREAM_TIMEOUT" and caught.value.retryable and elapsed < 1.0


async def test_the_byok_test_call_lists_models_and_reports_a_refused_key(cohere):
    with simulated_cohere() as (base, script):
        await cohere.verify_credential(cred(base))
    assert script.requests[0]["path"] == "/v1/models?page_size=1"
    with simulated_cohere(Script(status=401, message="invalid api token")) as (base, _):
        with pytest.raises(VendorError) as caught:
            await cohere.verify_credential(cred(base))
    assert caught.value.code == "UPSTREAM_AUTH_FAILED" and "invalid api token" in caught.value.message


async def test_cohere_is_registered_for_rerank_only(settings):
    vendor = get_vendor("cohere")
    assert isinstance(vendor, Cohere) and vendor.capabilities == {"rerank"}
    settings.COHERE_API_KEY = ""
    assert vendor.platform_credential() is None
    settings.COHERE_API_KEY, settings.COHERE_BASE_URL = "co-platform", "https://api.cohere.com"
    assert vendor.platform_credential() == Credential("co-platform", "https://api.cohere.com")
    with pytest.raises(VendorError) as caught:
        await vendor.chat(ChatRequest(model="rerank-v3.5", messages=[]), Credential("k", "http://x"))
    assert caught.value.code == "UNSUPPORTED_CAPABILITY"


@pytest.mark.django_db
async def test_the_catalog_prices_rerank_v35_per_search_unit():
    entry = await CatalogModel.objects.aget(vendor="cohere", model_id="rerank-v3.5", capability="rerank")
    assert entry.currency == "USD"
    # $2.00 per 1,000 searches, stored per million search units in input_per_mtok.
    assert entry.input_per_mtok == Decimal("2000")
    cost = await sync_to_async(catalog.token_cost_nano)(entry, 3, 0)
    assert cost == 6_000_000  # three search units: $0.006


# --- End to end through /v1/ai/rerank ---------------------------------------------------------


def _rerank_through_the_api(client, settings) -> tuple[dict, Script]:
    secret = make_key(make_account(credit_nano=1_000_000_000))
    with simulated_cohere() as (base, script):
        settings.COHERE_API_KEY, settings.COHERE_BASE_URL = "co-platform-sim", base
        response = client.post(
            "/v1/ai/rerank",
            json.dumps({"query": QUERY, "documents": DOCUMENTS, "model": "rerank-v3.5", "top_n": 3}),
            content_type="application/json",
            **bearer(secret),
        )
    assert response.status_code == 200, response.content
    return response.json(), script


@pytest.mark.django_db
def test_a_rerank_through_the_api_is_served_by_cohere(client, settings):
    body, script = _rerank_through_the_api(client, settings)
    assert [r["index"] for r in body["results"]] == [0, 3, 1]
    assert body["_metadata"]["vendor"] == "cohere"
    assert [r["authorization"] for r in script.requests] == ["Bearer co-platform-sim"]


@pytest.mark.django_db
def test_a_rerank_through_the_api_is_billed_per_search_unit(client, settings):
    body, _ = _rerank_through_the_api(client, settings)
    assert usd_to_nano(body["_metadata"]["cost_usd"]) == 2_000_000  # one search unit: $0.002
