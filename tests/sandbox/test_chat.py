from __future__ import annotations

import asyncio
import json
import time

import pytest

from gateway.sandbox import chat, tokens
from gateway.sandbox.errors import SandboxClientError, SandboxInvalidRequest

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "How does photosynthesis turn sunlight into chemical energy?"},
]


def test_reply_is_deterministic_and_prompt_dependent():
    first = chat.generate_reply(QUESTION)
    again = chat.generate_reply(QUESTION)
    other = chat.generate_reply([{"role": "user", "content": "Why do volcanoes erupt lava?"}])
    assert first == again
    assert first.text != other.text
    assert "photosynthesis" in first.text
    assert "sunlight" in first.text
    assert "volcanoes" in other.text
    assert first.finish_reason == "stop"
    assert first.model == chat.DEFAULT_MODEL


def test_reply_uses_the_last_user_message_and_keeps_its_casing():
    result = chat.generate_reply(
        [
            {"role": "user", "content": "Tell me about bananas."},
            {"role": "assistant", "content": "Bananas are yellow."},
            {"role": "user", "content": "What about Django and PostgreSQL?"},
        ]
    )
    assert "Django" in result.text
    assert "PostgreSQL" in result.text
    assert "bananas" not in result.text.lower()


def test_content_parts_and_greetings():
    parts = chat.generate_reply(
        [{"role": "user", "content": [{"type": "text", "text": "Explain quantum entanglement"}]}]
    )
    assert "quantum" in parts.text
    assert "Hello" in chat.generate_reply("hello").text


def test_usage_counts_use_the_real_tokenizer():
    result = chat.generate_reply(QUESTION)
    assert result.usage.prompt_tokens == tokens.count_messages(QUESTION)
    assert result.usage.completion_tokens == tokens.count_text(result.text)
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.usage.as_dict()["total_tokens"] == result.usage.total_tokens


def test_tools_count_in_the_prompt_tokens():
    tool_list = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    with_tools = chat.generate_reply(QUESTION, tools=tool_list)
    assert with_tools.usage.prompt_tokens == tokens.count_messages(QUESTION, tools=tool_list)
    assert with_tools.usage.prompt_tokens > chat.generate_reply(QUESTION).usage.prompt_tokens


def test_max_tokens_truncates_with_finish_reason_length():
    full = chat.generate_reply(QUESTION)
    cut = chat.generate_reply(QUESTION, max_tokens=5)
    assert cut.finish_reason == "length"
    assert cut.usage.completion_tokens == 5 == tokens.count_text(cut.text)
    assert full.text.startswith(cut.text)
    roomy = chat.generate_reply(QUESTION, max_tokens=full.usage.completion_tokens)
    assert roomy.finish_reason == "stop"
    assert roomy.text == full.text
    with pytest.raises(SandboxInvalidRequest):
        chat.generate_reply(QUESTION, max_tokens=0)


def test_json_object_mode_emits_valid_json():
    result = chat.generate_reply(QUESTION, response_format={"type": "json_object"})
    data = json.loads(result.text)
    assert isinstance(data, dict)
    assert "photosynthesis" in data["keywords"]
    assert data["is_question"] is True
    assert "photosynthesis" in data["answer"]


def test_json_schema_mode_emits_an_instance_of_the_schema():
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "topics": {"type": "array", "items": {"type": "string"}},
            "confidence": {"type": "number", "minimum": 0.5, "maximum": 1.0},
            "count": {"type": "integer"},
            "verified": {"type": "boolean"},
            "mood": {"enum": ["calm", "busy"]},
            "source": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/source"}]},
        },
        "required": ["answer", "topics", "confidence", "count", "verified", "mood", "source"],
        "$defs": {"source": {"type": "object", "properties": {"name": {"type": "string"}}}},
    }
    result = chat.generate_reply(
        QUESTION, response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
    )
    data = json.loads(result.text)
    assert set(data) == set(schema["properties"])
    assert isinstance(data["answer"], str) and "photosynthesis" in data["answer"]
    assert data["topics"] and all(isinstance(t, str) for t in data["topics"])
    assert data["confidence"] == 1.0  # len(keywords) clamped into [0.5, 1.0]
    assert isinstance(data["count"], int)
    assert data["verified"] is True
    assert data["mood"] == "calm"
    assert isinstance(data["source"]["name"], str)


def test_unknown_response_format_is_rejected():
    with pytest.raises(SandboxInvalidRequest):
        chat.generate_reply(QUESTION, response_format={"type": "xml"})


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("sandbox-chat", chat.Directive()),
        ("sandbox-fail-429", chat.Directive(kind="fail", status=429)),
        ("sandbox-chat-fail-503", chat.Directive(kind="fail", status=503)),
        ("sandbox-timeout", chat.Directive(kind="timeout")),
        ("sandbox-cut-stream", chat.Directive(kind="cut_stream", cut_after=chat.DEFAULT_CUT_AFTER)),
        ("sandbox-chat-cut-stream-12", chat.Directive(kind="cut_stream", cut_after=12)),
        ("sandbox-failover", chat.Directive()),
        ("sandbox-timeouts", chat.Directive()),
    ],
)
def test_parse_directive(model, expected):
    assert chat.parse_directive(model) == expected


def test_injected_failures_raise_typed_errors():
    with pytest.raises(chat.SandboxRateLimited) as rate_limited:
        chat.generate_reply(QUESTION, model="sandbox-fail-429")
    assert rate_limited.value.status == 429
    with pytest.raises(chat.SandboxServerError) as server_error:
        chat.generate_reply(QUESTION, model="sandbox-fail-500")
    assert server_error.value.status == 500
    with pytest.raises(SandboxClientError) as client_error:
        chat.generate_reply(QUESTION, model="sandbox-fail-404")
    assert client_error.value.status == 404
    with pytest.raises(chat.SandboxTimeout):
        chat.generate_reply(QUESTION, model="sandbox-timeout")
    with pytest.raises(SandboxInvalidRequest):
        chat.parse_directive("sandbox-fail-200")
    # A cut stream only affects streaming.
    assert chat.generate_reply(QUESTION, model="sandbox-cut-stream").finish_reason == "stop"


async def _collect(stream):
    return [chunk async for chunk in stream]


async def test_stream_yields_the_same_text_then_usage():
    full = chat.generate_reply(QUESTION)
    chunks = await _collect(chat.stream_reply(QUESTION, tokens_per_second=None))
    *deltas, last = chunks
    assert "".join(c.delta for c in deltas) == full.text
    assert all(c.delta and c.finish_reason is None and c.usage is None for c in deltas)
    assert len(deltas) == full.usage.completion_tokens  # one token per delta for ASCII text
    assert last.delta == ""
    assert last.finish_reason == "stop"
    assert last.usage == full.usage


async def test_stream_keeps_multibyte_characters_whole():
    chunks = await _collect(chat.stream_reply("日本の首都はどこですか？🎌", tokens_per_second=None))
    assert all("\ufffd" not in c.delta for c in chunks)
    text = "".join(c.delta for c in chunks)
    assert text == chat.generate_reply("日本の首都はどこですか？🎌").text


async def test_stream_honours_max_tokens():
    chunks = await _collect(chat.stream_reply(QUESTION, max_tokens=4, tokens_per_second=None))
    assert len(chunks) == 5
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 4


async def test_stream_is_paced_at_the_configured_rate():
    n = 20
    started = time.monotonic()
    chunks = await _collect(chat.stream_reply(QUESTION, max_tokens=n, tokens_per_second=100))
    elapsed = time.monotonic() - started
    assert len(chunks) == n + 1
    # n deltas at 100/s: the last one goes out (n-1)/100 s after the first.
    assert elapsed >= (n - 1) / 100 * 0.95
    assert elapsed < 2.0


async def test_stream_cut_raises_after_n_deltas():
    received = []
    with pytest.raises(chat.SandboxStreamCut) as cut:
        async for chunk in chat.stream_reply(QUESTION, model="sandbox-cut-stream-3", tokens_per_second=None):
            received.append(chunk.delta)
    assert len(received) == 3
    assert cut.value.deltas_sent == 3
    assert cut.value.partial_text == "".join(received)


async def test_stream_cut_longer_than_the_reply_still_never_finishes():
    received = []
    with pytest.raises(chat.SandboxStreamCut):
        async for chunk in chat.stream_reply("hi", model="sandbox-cut-stream-1000", tokens_per_second=None):
            received.append(chunk)
    assert received and all(c.finish_reason is None for c in received)


async def test_stream_failures_raise_before_the_first_delta():
    for model, error in (
        ("sandbox-fail-429", chat.SandboxRateLimited),
        ("sandbox-fail-502", chat.SandboxServerError),
        ("sandbox-timeout", chat.SandboxTimeout),
    ):
        received = []
        with pytest.raises(error):
            async for chunk in chat.stream_reply(QUESTION, model=model):
                received.append(chunk)
        assert received == []


async def test_stream_timeout_waits_first():
    started = time.monotonic()
    with pytest.raises(chat.SandboxTimeout):
        await _collect(chat.stream_reply(QUESTION, model="sandbox-timeout", timeout_after=0.2))
    assert time.monotonic() - started >= 0.19


async def test_stream_can_be_cancelled():
    async def consume():
        return await _collect(chat.stream_reply(QUESTION, tokens_per_second=5))

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_json_schema_constraints_are_respected():
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 5},
            "codes": {"type": "array", "items": {"type": "string", "maxLength": 2}, "maxItems": 1},
            "score": {"type": "integer", "minimum": 10, "maximum": 20},
            "ratio": {"type": "number", "maximum": 0.5},
            "summary": {"type": "string", "maxLength": 12},
            "id": {"type": "string", "minLength": 40},
        },
    }
    result = chat.generate_reply(
        QUESTION, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    )
    data = json.loads(result.text)
    assert len(data["tags"]) == 5
    assert len(data["codes"]) == 1 and len(data["codes"][0]) <= 2
    assert data["score"] == 10
    assert data["ratio"] == 0.5
    assert len(data["summary"]) == 12
    assert len(data["id"]) >= 40


def test_json_schema_requires_a_schema():
    with pytest.raises(SandboxInvalidRequest):
        chat.generate_reply(QUESTION, response_format={"type": "json_schema", "json_schema": {"name": "x"}})
