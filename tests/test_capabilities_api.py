"""Every synchronous /v1/ai capability through the sandbox vendor (offline, labelled "sandbox")."""

from __future__ import annotations

import base64
import io
import json
import math
import time

import pytest
import time_machine
from PIL import Image

from billing import ledger
from billing.models import UsageRecord
from gateway.sandbox import tokens
from infrai.lib.money import usd_to_nano
from tests.factories import bearer, make_account, make_key

pytestmark = pytest.mark.django_db
USD = 1_000_000_000


@pytest.fixture
def funded():
    account = make_account(credit_nano=USD)
    return account, make_key(account)


def post(client, path, body, secret):
    return client.post(path, json.dumps(body), content_type="application/json", **bearer(secret))


def fetch(client, url: str):
    path = url.split("testserver", 1)[1]
    return client.get(path)


def png_b64(color=(220, 20, 20), size=(40, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def billed(account, body) -> int:
    record = UsageRecord.objects.get(request_id=body["_metadata"]["request_id"])
    assert record.cost_nano == usd_to_nano(body["_metadata"]["cost_usd"])
    return record.cost_nano


def test_embed_returns_normalised_vectors_of_the_asked_dimensions(client, funded):
    account, secret = funded
    body = post(
        client, "/v1/ai/embed", {"input": ["a cat sat", "a cat sat down", "tax law"], "dimensions": 64}, secret
    ).json()
    vectors = body["embeddings"]
    assert [len(v) for v in vectors] == [64, 64, 64]
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-9 for v in vectors)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    assert body["_metadata"]["vendor"] == "sandbox" and billed(account, body) > 0


def test_a_tiny_embedding_is_billed_exactly_not_rounded_to_zero(client, funded):
    account, secret = funded
    body = post(client, "/v1/ai/embed", {"input": "hi"}, secret).json()
    assert body["usage"]["prompt_tokens"] == 1
    assert body["_metadata"]["cost_usd"] == "0.00000001"  # 1 token at $0.01 per million
    assert ledger.get_balance(account).balance_nano == USD - 10


def test_openai_embeddings_answer_floats_or_base64(client, funded):
    _, secret = funded
    floats = post(
        client, "/v1/embeddings", {"input": "hello", "model": "sandbox-embed", "dimensions": 8}, secret
    ).json()
    b64 = post(
        client,
        "/v1/embeddings",
        {"input": "hello", "model": "sandbox-embed", "dimensions": 8, "encoding_format": "base64"},
        secret,
    ).json()
    import struct

    decoded = list(struct.unpack("<8f", base64.b64decode(b64["data"][0]["embedding"])))
    assert floats["object"] == "list" and floats["data"][0]["object"] == "embedding"
    assert decoded == pytest.approx(floats["data"][0]["embedding"], rel=1e-6)


def test_image_renders_real_pngs_served_from_signed_urls(client, funded):
    account, secret = funded
    body = post(client, "/v1/ai/image", {"prompt": "a lighthouse at dusk", "size": "256x256", "n": 2}, secret).json()
    assert len(body["images"]) == 2
    image = fetch(client, body["images"][0]["url"])
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(b"".join(image.streaming_content))).size == (256, 256)
    assert billed(account, body) == 2 * usd_to_nano("0.002")


def test_signed_file_urls_refuse_tampering_and_expire(client, funded):
    _, secret = funded
    url = post(client, "/v1/ai/image", {"prompt": "x", "size": "256x256"}, secret).json()["images"][0]["url"]
    assert fetch(client, url[:-3] + "abc").status_code == 404
    with time_machine.travel(time.time() + 25 * 3600):
        expired = fetch(client, url)
    assert expired.status_code == 404 and expired.json()["error"]["code"] == "LINK_EXPIRED"


def test_openai_images_route_answers_data_with_b64(client, funded):
    _, secret = funded
    body = post(
        client, "/v1/images/generations", {"prompt": "a tree", "size": "256x256", "response_format": "b64_json"}, secret
    ).json()
    png = base64.b64decode(body["data"][0]["b64_json"])
    assert Image.open(io.BytesIO(png)).size == (256, 256)


def test_vision_reports_real_facts_about_the_image(client, funded):
    account, secret = funded
    body = post(
        client,
        "/v1/ai/vision",
        {"prompt": "What colour is this?", "images": [{"base64": png_b64(), "mime": "image/png"}]},
        secret,
    ).json()
    assert "red" in body["content"].lower() and "40" in body["content"] and "30" in body["content"]
    assert body["usage"]["prompt_tokens"] == tokens.count_text("What colour is this?") + 85
    assert billed(account, body) > 0


def test_tts_audio_is_stored_and_asr_recognises_it(client, funded):
    account, secret = funded
    spoken = post(client, "/v1/ai/tts", {"input": "one two three four five", "format": "wav"}, secret).json()
    assert spoken["format"] == "wav" and spoken["duration_seconds"] > 0.3
    audio = fetch(client, spoken["audio_url"])
    wav = b"".join(audio.streaming_content)
    assert wav[:4] == b"RIFF" and audio["Content-Type"] in ("audio/wav", "audio/x-wav")
    assert billed(account, spoken) == usd_to_nano("0.000345")  # 23 characters at $0.015 per thousand

    heard = post(
        client, "/v1/ai/asr", {"audio": {"base64": base64.b64encode(wav).decode(), "mime": "audio/wav"}}, secret
    ).json()
    # pocketsphinx on espeak's voice: digits come through, so the words must be recognised.
    assert {"three", "four", "five"} <= set(heard["text"].lower().split()) and heard["language"].startswith("en")
    assert billed(account, heard) > 0


def test_openai_speech_route_answers_audio_bytes(client, funded):
    _, secret = funded
    response = post(
        client, "/v1/audio/speech", {"model": "sandbox-tts", "input": "testing", "response_format": "wav"}, secret
    )
    assert response.status_code == 200 and response.content[:4] == b"RIFF"


def test_rerank_orders_documents_best_first(client, funded):
    account, secret = funded
    docs = ["The stock market fell.", "Cats purr when happy.", "A cat is a small feline."]
    body = post(client, "/v1/ai/rerank", {"query": "what do cats do", "documents": docs, "top_n": 2}, secret).json()
    assert [r["index"] for r in body["results"]][0] in (1, 2)
    assert len(body["results"]) == 2 and body["results"][0]["relevance_score"] >= body["results"][1]["relevance_score"]
    assert billed(account, body) > 0


def test_upscale_doubles_or_quadruples_the_size(client, funded):
    _, secret = funded
    body = post(client, "/v1/ai/image/upscale", {"image": png_b64(size=(20, 10)), "factor": 4}, secret).json()
    assert body["original_size"] == {"width": 20, "height": 10} and body["new_size"] == {"width": 80, "height": 40}
    image = fetch(client, body["image"])
    assert Image.open(io.BytesIO(b"".join(image.streaming_content))).size == (80, 40)
    bad = post(client, "/v1/ai/image/upscale", {"image": png_b64(), "factor": 3}, secret)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "factor"


def test_voices_are_paginated_by_cursor(client, funded):
    _, secret = funded
    first = client.get("/v1/ai/tts/voices?limit=5", **bearer(secret)).json()
    assert len(first["voices"]) == 5 and first["total_count"] > 5 and first["next_cursor"]
    second = client.get(f"/v1/ai/tts/voices?limit=5&cursor={first['next_cursor']}", **bearer(secret)).json()
    assert {v["id"] for v in first["voices"]}.isdisjoint({v["id"] for v in second["voices"]})
    assert client.get("/v1/ai/tts/voices?cursor=garbage!", **bearer(secret)).json()["error"]["field"] == "cursor"


def test_token_count_matches_the_chat_bill(client, funded):
    _, secret = funded
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three rivers."}]
    counted = post(client, "/v1/ai/tokens/count", {"messages": messages}, secret).json()["prompt_tokens"]
    chat = post(client, "/v1/ai/chat", {"messages": messages}, secret).json()
    assert counted == chat["usage"]["prompt_tokens"] > 0


def test_a_cost_estimate_with_the_real_output_length_equals_the_bill(client, funded):
    account, secret = funded
    messages = "Explain tides in one paragraph."
    chat = post(client, "/v1/ai/chat", {"messages": messages, "model": "sandbox-chat-pro"}, secret).json()
    estimate = post(
        client,
        "/v1/ai/cost/estimate",
        {
            "messages": messages,
            "model": "sandbox-chat-pro",
            "expected_output_tokens": chat["usage"]["completion_tokens"],
        },
        secret,
    ).json()
    assert estimate["prompt_tokens"] == chat["usage"]["prompt_tokens"]
    assert estimate["estimated_cost_usd"] == chat["_metadata"]["cost_usd"]
    assert estimate["breakdown"]["total_usd"] == chat["_metadata"]["cost_usd"]


def test_cost_compare_lists_models_cheapest_first(client, funded):
    _, secret = funded
    body = post(
        client,
        "/v1/ai/cost/compare",
        {"messages": "hi", "models": ["sandbox-chat-pro", "gpt-4o-mini", "sandbox-chat-mini"]},
        secret,
    ).json()
    costs = [usd_to_nano(e["estimated_cost_usd"]) for e in body["estimates"]]
    assert costs == sorted(costs) and len(costs) == 3
    assert {e["model"]: e["available"] for e in body["estimates"]}["gpt-4o-mini"] is False
    unknown = post(client, "/v1/ai/cost/compare", {"messages": "hi", "models": ["sandbox-chat", "nope"]}, secret)
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "models[1]"


def test_a_cny_priced_model_is_estimated_in_usd_at_the_exchange_rate(client, funded, settings):
    _, secret = funded
    settings.CNY_PER_USD = __import__("decimal").Decimal("8")
    body = post(
        client,
        "/v1/ai/cost/estimate",
        {"messages": "hi", "model": "megrez-7b-instruct", "expected_output_tokens": 1000},
        secret,
    ).json()
    # 1000 output tokens at CNY 2.00 (nvidia chip) or 1.60 (amd) per million, / 8 CNY per USD, + the prompt.
    assert body["vendor"] == "genstudio" and body["breakdown"]["price_currency"] == "CNY"
    assert usd_to_nano(body["breakdown"]["output_usd"]) in (250_000, 200_000)


def test_realtime_and_voice_tokens_expire_and_need_credit(client, funded):
    _, secret = funded
    token = post(client, "/v1/ai/realtime/token", {"ttl_seconds": 120}, secret).json()
    assert token["session_id"].startswith("rt_") and token["token"] and token["ice_servers"] == []
    voice = post(client, "/v1/ai/voice/session", {"voice": "en"}, secret).json()
    assert voice["session_id"] != token["session_id"] and voice["voice"] == "en"
    assert post(client, "/v1/ai/realtime/token", {"ttl_seconds": 0}, secret).json()["error"]["field"] == "ttl_seconds"
    broke = make_key(make_account("broke@example.com"))
    refused = post(client, "/v1/ai/realtime/token", {}, broke)
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "INSUFFICIENT_CREDIT"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/ai/embed", {}, "input"),
        ("/v1/ai/embed", {"input": ["ok", ""]}, "input[1]"),
        ("/v1/ai/embed", {"input": "x", "dimensions": 0}, "dimensions"),
        ("/v1/ai/image", {"prompt": "x", "size": "huge"}, "size"),
        ("/v1/ai/image", {"prompt": "x", "n": 9}, "n"),
        ("/v1/ai/image", {}, "prompt"),
        ("/v1/ai/vision", {"prompt": "x"}, "images"),
        ("/v1/ai/vision", {"prompt": "x", "images": [{"base64": "%%%"}]}, "images[0].base64"),
        ("/v1/ai/vision", {"prompt": "x", "images": [{"url": "http://127.0.0.1:1/x.png"}]}, "images[0].url"),
        ("/v1/ai/tts", {"input": "x", "format": "aiff"}, "format"),
        ("/v1/ai/asr", {}, "audio"),
        ("/v1/ai/rerank", {"query": "x", "documents": []}, "documents"),
        ("/v1/ai/rerank", {"query": "x", "documents": ["a"], "top_n": 5}, "top_n"),
        ("/v1/ai/image/upscale", {}, "image"),
        ("/v1/ai/tokens/count", {}, "messages"),
        ("/v1/ai/cost/estimate", {"messages": "x", "expected_output_tokens": -1}, "expected_output_tokens"),
        ("/v1/ai/cost/estimate", {"messages": "x", "model": "nope"}, "model"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(client, funded, path, body, field):
    _, secret = funded
    response = post(client, path, body, secret)
    assert 400 <= response.status_code < 500, response.content
    assert response.json()["error"]["field"] == field


def test_non_text_garbage_as_audio_is_a_clear_4xx(client, funded):
    account, secret = funded
    response = post(client, "/v1/ai/asr", {"audio": {"base64": base64.b64encode(b"not audio at all").decode()}}, secret)
    assert response.status_code == 400 and response.json()["error"]["message"]
    assert ledger.get_balance(account).held_nano == 0 and not UsageRecord.objects.exists()
