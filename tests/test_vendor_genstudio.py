"""The GenStudio adapter against a SIMULATED GenStudio on loopback (tests/fakes/genstudio_upstream.py):
chat plain and streamed on the default, chip and deployment routes, embeddings, rerank, SD
images through the task API, error mapping, cut streams and timeouts; and one call end to end
through POST /v1/ai/chat priced in CNY."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from decimal import Decimal
from fractions import Fraction
from math import ceil

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from billing import ledger
from billing.models import UsageRecord
from gateway.http import client_for
from gateway.models import CatalogModel
from gateway.vendors import get_vendor
from gateway.vendors.base import ChatDelta, ChatRequest, Credential, StreamCut, Usage, VendorError
from gateway.vendors.genstudio import GenStudio
from infrai.lib.money import usd_to_nano
from tests.factories import bearer, make_account, make_key
from tests.fakes.genstudio_upstream import PNG_1X1, Script, simulated_genstudio

USD = 1_000_000_000
REPLY_WORDS = Script().reply.split(" ")


@pytest.fixture
async def genstudio():
    """A GenStudio adapter with short timeouts and fast polling; the pooled client is closed after."""
    yield GenStudio(timeout=2.0, image_poll_interval=0.01, image_poll_max_interval=0.05, image_timeout=5.0)
    await client_for("genstudio").aclose()


def cred(base_url: str) -> Credential:
    return Credential("sk-genstudio-sim", base_url)


def ask(model: str = "megrez-7b-instruct", **kwargs) -> ChatRequest:
    return ChatRequest(model=model, messages=[{"role": "user", "content": "hi"}], **kwargs)


async def collect(vendor: GenStudio, request: ChatRequest, credential: Credential) -> list[ChatDelta]:
    return [delta async for delta in vendor.chat_stream(request, credential)]


# --- Chat -------------------------------------------------------------------------------------


async def test_a_plain_chat_goes_to_the_openai_route_with_bearer_auth(genstudio):
    with simulated_genstudio() as (base, script):
        result = await genstudio.chat(ask(temperature=0.2, max_tokens=50), cred(base))
    assert result.content == "Hello from the simulated GenStudio."
    assert result.finish_reason == "stop" and result.model == "megrez-7b-instruct"
    assert result.usage == Usage(input_tokens=13, output_tokens=len(REPLY_WORDS))
    [call] = script.requests
    assert call["path"] == "/maas/v1/chat/completions"
    assert call["authorization"] == "Bearer sk-genstudio-sim"
    assert call["body"] == {
        "model": "megrez-7b-instruct",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "max_tokens": 50,
    }


async def test_a_streamed_chat_relays_deltas_one_by_one_then_usage(genstudio):
    # The server pauses after two chunks: those two must arrive before the pause ends.
    with simulated_genstudio(Script(stall_after=2, delay=0.4)) as (base, script):
        started = time.monotonic()
        arrivals: list[tuple[float, ChatDelta]] = []
        async for delta in genstudio.chat_stream(ask(), cred(base)):
            arrivals.append((time.monotonic() - started, delta))
    texts = [d.text for _, d in arrivals if d.text]
    assert texts == [REPLY_WORDS[0]] + [" " + w for w in REPLY_WORDS[1:]]
    text_times = [t for t, d in arrivals if d.text]
    # Relayed as they come: the second chunk is out a whole pause before the third (not held back).
    assert text_times[2] - text_times[1] >= 0.3, text_times
    assert [d.finish_reason for _, d in arrivals if d.finish_reason] == ["stop"]
    assert arrivals[-1][1].usage == Usage(input_tokens=13, output_tokens=len(REPLY_WORDS))
    body = script.requests[0]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_a_model_at_a_chip_uses_the_chip_route(genstudio):
    with simulated_genstudio() as (base, script):
        result = await genstudio.chat(ask("megrez-7b-instruct@nvidia"), cred(base))
        deltas = await collect(genstudio, ask("megrez-7b-instruct@amd"), cred(base))
    assert result.content and "".join(d.text for d in deltas) == result.content
    assert script.paths() == [
        "/maas/megrez-7b-instruct/nvidia/chat/completions",
        "/maas/megrez-7b-instruct/amd/chat/completions",
    ]
    assert [r["body"]["model"] for r in script.requests] == ["megrez-7b-instruct"] * 2


async def test_a_mif_deployment_uses_the_deployment_route(genstudio):
    with simulated_genstudio() as (base, script):
        await genstudio.chat(ask("mif-c7kxdnah6nu5lrpw"), cred(base))
        await collect(genstudio, ask("deployment/mif-c7kxdnah6nu5lrpw"), cred(base))
    assert script.paths() == ["/maas/deployment/mif-c7kxdnah6nu5lrpw/chat/completions"] * 2
    assert script.requests[0]["body"]["model"] == "mif-c7kxdnah6nu5lrpw"


@pytest.mark.parametrize(
    "model",
    [
        "deployment/c7kxdnah6nu5lrpw",
        "deployment/",
        "mif-",
        "mif-../../v1/rerank",
        "mif-abc/def",
        "mif-abc?x=1",
        "mif-abc\n",
    ],
)
async def test_a_bad_deployment_id_is_refused_before_any_request(genstudio, model):
    with simulated_genstudio() as (base, script):
        with pytest.raises(VendorError) as plain:
            await genstudio.chat(ask(model), cred(base))
        with pytest.raises(VendorError) as streamed:
            await collect(genstudio, ask(model), cred(base))
    for caught in (plain.value, streamed.value):
        assert caught.code == "INVALID_MODEL" and caught.status == 400 and not caught.retryable
        assert "mif-" in caught.message
    assert script.requests == []


async def test_a_model_name_that_is_not_a_path_segment_is_refused(genstudio):
    with simulated_genstudio() as (base, script):
        for model in ("../v1/rerank", "megrez@", "megrez@nv/idia", "megrez@nvidia\n", ""):
            with pytest.raises(VendorError) as caught:
                await genstudio.chat(ask(model), cred(base))
            assert caught.value.code == "INVALID_MODEL"
    assert script.requests == []


# --- Embeddings and rerank --------------------------------------------------------------------


async def test_embeddings_come_back_in_input_order_with_usage(genstudio):
    with simulated_genstudio() as (base, script):
        result = await genstudio.embed("bge-m3", ["first", "second", "third"], 6, cred(base))
    assert result.embeddings == [[0.1] * 6, [0.2] * 6, [0.3] * 6]
    assert result.usage == Usage(input_tokens=15) and result.model == "bge-m3"
    [call] = script.requests
    assert call["path"] == "/maas/v1/embeddings"
    assert call["body"] == {"model": "bge-m3", "input": ["first", "second", "third"], "dimensions": 6}


async def test_rerank_returns_indexes_best_first_cut_to_top_n(genstudio):
    documents = ["a", "b", "c", "d"]
    with simulated_genstudio(Script(rerank_scores=[0.1, 0.9, 0.5, 0.7])) as (base, script):
        best_two = await genstudio.rerank("bge-reranker-v2-m3", "which?", documents, 2, cred(base))
        everything, usage = await genstudio.rerank_with_usage(
            "bge-reranker-v2-m3", "which?", documents, None, cred(base)
        )
    assert best_two == [{"index": 1, "relevance_score": 0.9}, {"index": 3, "relevance_score": 0.7}]
    assert [r["index"] for r in everything] == [1, 3, 2, 0]
    assert usage.input_tokens == 5  # the tokens GenStudio reported
    assert script.paths() == ["/maas/v1/rerank"] * 2
    assert script.requests[0]["body"] == {
        "model": "bge-reranker-v2-m3",
        "query": "which?",
        "documents": documents,
        "top_n": 2,
    }
    assert "top_n" not in script.requests[1]["body"]


async def test_rerank_applies_top_n_even_when_the_upstream_ignores_it(genstudio):
    script = Script(rerank_scores=[0.3, 0.2, 0.1], rerank_ignores_top_n=True)
    with simulated_genstudio(script) as (base, _):
        results = await genstudio.rerank("bge-reranker-v2-m3", "q", ["x", "y", "z"], 1, cred(base))
    assert results == [{"index": 0, "relevance_score": 0.3}]


# --- SD images --------------------------------------------------------------------------------


async def test_an_sd_image_is_created_then_polled_until_done(genstudio):
    with simulated_genstudio(Script(task_pending_polls=2)) as (base, script):
        images = await genstudio.image("stable-diffusion-xl", "a red fox", "768x512", 2, cred(base))
    assert images == ["https://genstudio.invalid/sd/sdtask-1/0.png", "https://genstudio.invalid/sd/sdtask-1/1.png"]
    assert script.paths() == ["/api/maas/sd_task_api/create"] + ["/api/maas/sd_task_api/get_result"] * 3
    assert script.requests[0]["body"] == {
        "model": "stable-diffusion-xl",
        "prompt": "a red fox",
        "width": 768,
        "height": 512,
        "n": 2,
    }
    assert all(r["body"] == {"task_id": "sdtask-1"} for r in script.requests[1:])
    assert all(r["authorization"] == "Bearer sk-genstudio-sim" for r in script.requests)


async def test_sd_images_sent_as_base64_come_back_as_bytes(genstudio):
    with simulated_genstudio(Script(task_pending_polls=0, task_images_b64=True)) as (base, _):
        images = await genstudio.image("stable-diffusion-xl", "a red fox", "1024x1024", 1, cred(base))
    assert images == [PNG_1X1]


async def test_a_failed_sd_task_is_a_permanent_error_with_its_reason(genstudio):
    with simulated_genstudio(Script(task_pending_polls=1, task_outcome="failed")) as (base, _):
        with pytest.raises(VendorError) as caught:
            await genstudio.image("stable-diffusion-xl", "something", "1024x1024", 1, cred(base))
    assert caught.value.code == "UPSTREAM_TASK_FAILED" and not caught.value.retryable
    assert "content review" in caught.value.message and "sdtask-1" in caught.value.message


async def test_polling_an_sd_task_is_bounded_in_time():
    vendor = GenStudio(timeout=2.0, image_poll_interval=0.02, image_poll_max_interval=0.05, image_timeout=0.3)
    try:
        with simulated_genstudio(Script(task_pending_polls=10**6)) as (base, script):
            started = time.monotonic()
            with pytest.raises(VendorError) as caught:
                await vendor.image("stable-diffusion-xl", "slow", "1024x1024", 1, cred(base))
            elapsed = time.monotonic() - started
    finally:
        await client_for("genstudio").aclose()
    assert caught.value.code == "UPSTREAM_TIMEOUT" and caught.value.retryable
    assert 0.3 <= elapsed < 1.5
    polls = script.paths().count("/api/maas/sd_task_api/get_result")
    assert 3 <= polls <= 20  # backed off, not a busy loop


async def test_an_sd_create_refused_in_the_envelope_is_permanent_with_the_message(genstudio):
    with simulated_genstudio() as (base, script):
        with pytest.raises(VendorError) as caught:
            await genstudio.image("stable-diffusion-xl", "", "1024x1024", 1, cred(base))
    assert caught.value.code == "UPSTREAM_REJECTED" and not caught.value.retryable
    assert "prompt is required" in caught.value.message and "40001" in caught.value.message
    assert script.paths() == ["/api/maas/sd_task_api/create"]


async def test_an_sd_poll_that_keeps_failing_gives_up_retryably(genstudio):
    with simulated_genstudio(Script(task_status_after_create=503)) as (base, script):
        with pytest.raises(VendorError) as caught:
            await genstudio.image("stable-diffusion-xl", "a fox", "1024x1024", 1, cred(base))
    assert caught.value.retryable and caught.value.code == "UPSTREAM_UNAVAILABLE"
    assert "simulated task service failure" in caught.value.message
    assert script.paths().count("/api/maas/sd_task_api/get_result") == 4


async def test_a_bad_image_size_is_refused_before_any_request(genstudio):
    with simulated_genstudio() as (base, script):
        with pytest.raises(VendorError) as caught:
            await genstudio.image("stable-diffusion-xl", "a fox", "huge", 1, cred(base))
    assert caught.value.code == "INVALID_SIZE" and caught.value.status == 400
    assert script.requests == []


# --- Failures ---------------------------------------------------------------------------------


async def test_429_is_retryable_plain_and_streamed(genstudio):
    with simulated_genstudio(Script(status=429)) as (base, _):
        with pytest.raises(VendorError) as plain:
            await genstudio.chat(ask(), cred(base))
        with pytest.raises(VendorError) as streamed:
            await collect(genstudio, ask(), cred(base))
    for caught in (plain.value, streamed.value):
        assert caught.retryable and caught.code == "UPSTREAM_RATE_LIMITED"
        assert not isinstance(caught, StreamCut)
        assert "simulated GenStudio 429" in caught.message


async def test_400_is_permanent_with_genstudios_message(genstudio):
    body = {
        "error": {
            "message": "Model megrez-9000 does not exist",
            "type": "invalid_request_error",
            "code": "model_not_found",
        }
    }
    with simulated_genstudio(Script(status=400, error_body=body)) as (base, _):
        with pytest.raises(VendorError) as plain:
            await genstudio.chat(ask("megrez-9000"), cred(base))
        with pytest.raises(VendorError) as streamed:
            await collect(genstudio, ask("megrez-9000"), cred(base))
        with pytest.raises(VendorError) as embedded:
            await genstudio.embed("megrez-9000", ["x"], None, cred(base))
    for caught in (plain.value, streamed.value, embedded.value):
        assert not caught.retryable and caught.code == "UPSTREAM_REJECTED"
        assert "Model megrez-9000 does not exist (code model_not_found)" in caught.message


async def test_the_code_and_msg_error_shape_is_read_too(genstudio):
    with simulated_genstudio(Script(status=400, error_body={"code": 10002, "msg": "参数错误: messages"})) as (base, _):
        with pytest.raises(VendorError) as caught:
            await genstudio.chat(ask(), cred(base))
    assert "参数错误: messages (code 10002)" in caught.value.message and not caught.value.retryable


async def test_a_refused_key_is_an_auth_failure(genstudio):
    with simulated_genstudio(Script(status=401)) as (base, _):
        with pytest.raises(VendorError) as caught:
            await genstudio.rerank("bge-reranker-v2-m3", "q", ["d"], None, cred(base))
    assert caught.value.code == "UPSTREAM_AUTH_FAILED" and not caught.value.retryable


async def test_a_500_before_the_stream_starts_is_retryable_not_a_cut(genstudio):
    with simulated_genstudio(Script(status=500)) as (base, _):
        with pytest.raises(VendorError) as caught:
            await collect(genstudio, ask(), cred(base))
    assert caught.value.retryable and caught.value.code == "UPSTREAM_UNAVAILABLE"
    assert not isinstance(caught.value, StreamCut)


async def test_a_500_error_event_mid_stream_is_a_stream_cut_after_the_delivered_deltas(genstudio):
    delivered: list[str] = []
    with simulated_genstudio(Script(error_after=2)) as (base, _):
        with pytest.raises(StreamCut) as caught:
            async for delta in genstudio.chat_stream(ask(), cred(base)):
                delivered.append(delta.text)
    assert delivered == REPLY_WORDS[:1] + [" " + REPLY_WORDS[1]]
    assert "simulated inference failure" in caught.value.message
    assert caught.value.code == "UPSTREAM_STREAM_ERROR" and caught.value.retryable


async def test_a_400_error_event_mid_stream_is_a_permanent_cut(genstudio):
    with simulated_genstudio(Script(error_after=0, error_event_code=400)) as (base, _):
        with pytest.raises(StreamCut) as caught:
            await collect(genstudio, ask(), cred(base))
    assert not caught.value.retryable


async def test_a_stream_that_ends_without_done_is_cut(genstudio):
    delivered: list[str] = []
    with simulated_genstudio(Script(cut_after=3)) as (base, _):
        with pytest.raises(StreamCut) as caught:
            async for delta in genstudio.chat_stream(ask(), cred(base)):
                delivered.append(delta.text)
    assert len(delivered) == 3 and "ended the stream early" in caught.value.message


async def test_a_malformed_stream_event_is_a_cut(genstudio):
    with simulated_genstudio(Script(malformed=True)) as (base, _):
        with pytest.raises(StreamCut) as caught:
            await collect(genstudio, ask(), cred(base))
    assert "malformed" in caught.value.message


async def test_a_slow_answer_is_a_retryable_timeout():
    vendor = GenStudio(timeout=0.2)
    try:
        with simulated_genstudio(Script(delay=1.0)) as (base, _):
            started = time.monotonic()
            with pytest.raises(VendorError) as plain:
                await vendor.chat(ask(), cred(base))
            with pytest.raises(VendorError) as streamed:
                await collect(vendor, ask(), cred(base))
            elapsed = time.monotonic() - started
    finally:
        await client_for("genstudio").aclose()
    for caught in (plain.value, streamed.value):
        assert caught.code == "UPSTREAM_TIMEOUT" and caught.retryable and caught.status == 504
    assert elapsed < 1.5


async def test_a_stream_that_stalls_midway_times_out_retryably():
    vendor = GenStudio(timeout=0.2)
    delivered: list[str] = []
    try:
        with simulated_genstudio(Script(stall_after=2, delay=1.0)) as (base, _):
            with pytest.raises(VendorError) as caught:
                async for delta in vendor.chat_stream(ask(), cred(base)):
                    delivered.append(delta.text)
    finally:
        await client_for("genstudio").aclose()
    assert len(delivered) == 2
    assert caught.value.code == "UPSTREAM_TIMEOUT" and caught.value.retryable


async def test_an_unreachable_host_is_retryable(genstudio):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(VendorError) as caught:
        await genstudio.chat(ask(), cred(f"http://127.0.0.1:{port}"))
    assert caught.value.retryable and caught.value.code == "UPSTREAM_UNREACHABLE"


async def test_closing_the_stream_closes_the_upstream_connection(genstudio):
    with simulated_genstudio(Script(stall_after=1, delay=0.3)) as (base, script):
        stream = genstudio.chat_stream(ask(), cred(base))
        first = await anext(stream)
        await stream.aclose()
        assert first.text == REPLY_WORDS[0]
        # The server, still writing after its pause, finds the connection gone.
        for _ in range(40):
            if script.hung_up:
                break
            await asyncio.sleep(0.05)
    assert script.hung_up


# --- Registry and credentials -----------------------------------------------------------------


async def test_the_byok_test_call_lists_models_and_reports_a_refused_key(genstudio):
    with simulated_genstudio() as (base, script):
        await genstudio.verify_credential(cred(base))
    assert script.requests[0]["path"] == "/maas/v1/models"
    assert script.requests[0]["authorization"] == "Bearer sk-genstudio-sim"
    refused = {"error": {"message": "Invalid API key", "code": "invalid_api_key"}}
    with simulated_genstudio(Script(status=401, error_body=refused)) as (base, _):
        with pytest.raises(VendorError) as caught:
            await genstudio.verify_credential(cred(base))
    assert caught.value.code == "UPSTREAM_AUTH_FAILED" and "Invalid API key" in caught.value.message


async def test_genstudio_is_registered_with_its_capabilities(settings):
    vendor = get_vendor("genstudio")
    assert isinstance(vendor, GenStudio)
    assert vendor.capabilities == {"chat", "embed", "rerank", "image"}
    settings.GENSTUDIO_API_KEY = ""
    assert vendor.platform_credential() is None
    settings.GENSTUDIO_API_KEY, settings.GENSTUDIO_BASE_URL = "sk-platform", "https://cloud.infini-ai.com"
    assert vendor.platform_credential() == Credential("sk-platform", "https://cloud.infini-ai.com")


# --- End to end through /v1/ai/chat -----------------------------------------------------------


async def _post_chat(secret: str, body: dict) -> tuple[int, list | dict]:
    response = await AsyncClient().post(
        "/v1/ai/chat", json.dumps(body), content_type="application/json", headers={"Authorization": f"Bearer {secret}"}
    )
    if not response.streaming:
        return response.status_code, json.loads(response.content)
    events = []
    async for chunk in response.streaming_content:
        for line in chunk.decode().splitlines():
            if line.startswith("data: "):
                payload = line[6:]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return response.status_code, events


def cny_cost_nano(entry: CatalogModel, input_tokens: int, output_tokens: int, cny_per_usd: Decimal) -> int:
    """The catalog's CNY price of this usage in nano-USD, computed exactly and rounded up."""
    cny = Fraction(entry.input_per_mtok) * input_tokens + Fraction(entry.output_per_mtok) * output_tokens
    return ceil(cny / 1_000_000 / Fraction(cny_per_usd) * USD)


@pytest.mark.django_db(transaction=True)
async def test_a_chat_through_the_api_is_served_by_genstudio_and_priced_from_cny(settings):
    account = await sync_to_async(make_account)(credit_nano=USD)
    secret = await sync_to_async(make_key)(account)
    try:
        with simulated_genstudio() as (base, script):
            settings.GENSTUDIO_API_KEY, settings.GENSTUDIO_BASE_URL = "sk-platform-sim", base
            status, body = await _post_chat(secret, {"messages": "hi", "model": "megrez-7b-instruct"})
            assert status == 200, body
            stream_status, events = await _post_chat(
                secret, {"messages": "hi", "model": "megrez-7b-instruct", "stream": True}
            )
    finally:
        await client_for("genstudio").aclose()
    assert body["content"] == "Hello from the simulated GenStudio."
    meta = body["_metadata"]
    assert meta["vendor"] == "genstudio"
    assert body["usage"]["prompt_tokens"] == 13 and body["usage"]["completion_tokens"] == len(REPLY_WORDS)
    assert [r["authorization"] for r in script.requests] == ["Bearer sk-platform-sim"] * 2
    assert [r["body"]["model"] for r in script.requests] == ["megrez-7b-instruct"] * 2

    # Both chips price megrez-7b-instruct; the balanced choice is the cheaper amd pair.
    amd = await CatalogModel.objects.aget(vendor="genstudio", model_id="megrez-7b-instruct", chip="amd")
    assert amd.currency == "CNY"
    expected = cny_cost_nano(amd, 13, len(REPLY_WORDS), settings.CNY_PER_USD)
    assert usd_to_nano(meta["cost_usd"]) == expected
    record = await UsageRecord.objects.aget(request_id=meta["request_id"])
    assert (record.vendor, record.model, record.cost_nano) == ("genstudio", "megrez-7b-instruct", expected)

    assert stream_status == 200 and events[-1] == "[DONE]"
    deltas = [e["delta"] for e in events if isinstance(e, dict) and "delta" in e and e["delta"]]
    assert "".join(deltas) == "Hello from the simulated GenStudio." and len(deltas) == len(REPLY_WORDS)
    final = events[-2]
    assert final["_metadata"]["vendor"] == "genstudio"
    assert usd_to_nano(final["_metadata"]["cost_usd"]) == expected
    balance = await sync_to_async(ledger.get_balance)(account)
    assert balance.held_nano == 0 and balance.balance_nano == USD - 2 * expected


@pytest.mark.django_db(transaction=True)
async def test_the_chip_of_the_priced_catalog_entry_picks_the_chip_route(settings):
    account = await sync_to_async(make_account)(credit_nano=USD)
    secret = await sync_to_async(make_key)(account)
    try:
        with simulated_genstudio() as (base, script):
            settings.GENSTUDIO_API_KEY, settings.GENSTUDIO_BASE_URL = "sk-platform-sim", base
            status, body = await _post_chat(secret, {"messages": "hi", "model": "megrez-7b-instruct"})
    finally:
        await client_for("genstudio").aclose()
    assert status == 200, body
    assert script.paths() == ["/maas/megrez-7b-instruct/amd/chat/completions"]


@pytest.mark.django_db
def test_a_cny_cost_of_a_whole_nano_dollar_is_not_rounded_past_it(settings):
    from gateway import catalog

    nvidia = CatalogModel.objects.get(vendor="genstudio", model_id="megrez-7b-instruct", chip="nvidia")
    # 27 output tokens at 2.00 CNY per million: 0.000054 CNY, exactly $0.0000075 at 7.20 CNY per USD.
    assert cny_cost_nano(nvidia, 0, 27, settings.CNY_PER_USD) == 7500
    assert catalog.token_cost_nano(nvidia, 0, 27) == 7500


@pytest.mark.django_db
def test_an_sd_image_through_the_api_is_billed_per_image_in_cny(client, settings, monkeypatch):
    monkeypatch.setattr(get_vendor("genstudio"), "image_poll_interval", 0.01)
    secret = make_key(make_account(credit_nano=USD))
    with simulated_genstudio(Script(task_pending_polls=1)) as (base, script):
        settings.GENSTUDIO_API_KEY, settings.GENSTUDIO_BASE_URL = "sk-platform-sim", base
        response = client.post(
            "/v1/ai/image",
            json.dumps({"prompt": "a red fox", "model": "stable-diffusion-xl", "size": "512x512", "n": 2}),
            content_type="application/json",
            **bearer(secret),
        )
    assert response.status_code == 200, response.content
    body = response.json()
    assert [i["url"] for i in body["images"]] == [f"https://genstudio.invalid/sd/sdtask-1/{i}.png" for i in (0, 1)]
    assert body["_metadata"]["vendor"] == "genstudio"
    assert script.paths()[0] == "/api/maas/sd_task_api/create"
    entry = CatalogModel.objects.get(vendor="genstudio", model_id="stable-diffusion-xl", capability="image")
    expected = ceil(Fraction(entry.per_image) * 2 / Fraction(settings.CNY_PER_USD) * USD)
    assert usd_to_nano(body["_metadata"]["cost_usd"]) == expected
