"""The OpenAI adapter against a SIMULATED OpenAI server on loopback (tests/fakes/openai_upstream.py)."""

from __future__ import annotations

import pytest

from gateway.vendors.base import ChatRequest, Credential, StreamCut, VendorError
from gateway.vendors.openai_compatible import OpenAI
from tests.fakes.openai_upstream import SIMULATED_PNG, Script, simulated_upstream

pytestmark = pytest.mark.django_db

REQUEST = ChatRequest(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=20)


async def test_chat_maps_content_usage_and_sends_the_key():
    with simulated_upstream(Script(reply="Hi there friend")) as (url, script):
        result = await OpenAI().chat(REQUEST, Credential("sk-user", url))
    assert result.content == "Hi there friend" and result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (11, 3)
    assert script.auth_headers == ["Bearer sk-user"]
    assert script.requests[0]["body"]["max_tokens"] == 20


async def test_a_stream_relays_each_delta_and_the_usage():
    with simulated_upstream(Script(reply="one two three")) as (url, _):
        deltas = [d async for d in OpenAI().chat_stream(REQUEST, Credential("k", url))]
    assert [d.text for d in deltas if d.text] == ["one", " two", " three"]
    assert [d.usage.output_tokens for d in deltas if d.usage] == [3]


async def test_a_cut_stream_and_a_malformed_event_are_stream_errors():
    with simulated_upstream(Script(reply="a b c d", cut_after=2)) as (url, _):
        received = []
        with pytest.raises(StreamCut):
            async for delta in OpenAI().chat_stream(REQUEST, Credential("k", url)):
                received.append(delta.text)
    assert received == ["a", " b"]
    with simulated_upstream(Script(reply="a b c", malformed=True)) as (url, _), pytest.raises(StreamCut):
        async for _ in OpenAI().chat_stream(REQUEST, Credential("k", url)):
            pass


@pytest.mark.parametrize(
    ("status", "retryable", "code"),
    [
        (429, True, "UPSTREAM_RATE_LIMITED"),
        (500, True, "UPSTREAM_UNAVAILABLE"),
        (400, False, "UPSTREAM_REJECTED"),
        (401, False, "UPSTREAM_AUTH_FAILED"),
    ],
)
async def test_errors_map_to_retryable_or_permanent_with_the_vendors_reason(status, retryable, code):
    with simulated_upstream(Script(status=status)) as (url, _), pytest.raises(VendorError) as failed:
        await OpenAI().chat(REQUEST, Credential("k", url))
    assert failed.value.retryable is retryable and failed.value.code == code
    assert f"simulated {status}" in failed.value.message


async def test_a_stream_that_fails_before_starting_is_an_upstream_error():
    with simulated_upstream(Script(status=503)) as (url, _), pytest.raises(VendorError) as failed:
        async for _ in OpenAI().chat_stream(REQUEST, Credential("k", url)):
            pass
    assert failed.value.retryable


async def test_an_unreachable_vendor_is_retryable():
    with pytest.raises(VendorError) as failed:
        await OpenAI().chat(REQUEST, Credential("k", "http://127.0.0.1:9/v1"))
    assert failed.value.retryable and failed.value.code in ("UPSTREAM_UNREACHABLE", "UPSTREAM_TIMEOUT")


async def test_embeddings_images_speech_and_transcription():
    with simulated_upstream(Script(reply="hello there")) as (url, script):
        vendor, credential = OpenAI(), Credential("k", url)
        embedded = await vendor.embed("text-embedding-3-small", ["a", "b"], 4, credential)
        assert [len(v) for v in embedded.embeddings] == [4, 4] and embedded.usage.input_tokens == 6
        images = await vendor.image("dall-e-3", "a cat", "1024x1024", 2, credential)
        assert images == [SIMULATED_PNG, SIMULATED_PNG]
        speech = await vendor.tts("tts-1", "hello", "alloy", "mp3", credential)
        assert speech.audio.startswith(b"ID3") and speech.mime_type == "audio/mpeg"
        transcript = await vendor.asr("whisper-1", b"RIFF....", "audio/wav", None, credential)
        assert transcript.text == "hello there" and transcript.duration_seconds == 2.5
    paths = [r["path"] for r in script.requests]
    assert paths == ["/v1/embeddings", "/v1/images/generations", "/v1/audio/speech", "/v1/audio/transcriptions"]
