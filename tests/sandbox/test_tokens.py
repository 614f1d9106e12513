from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken

from gateway.sandbox import tokens
from gateway.sandbox.errors import SandboxInvalidRequest

REPO = Path(__file__).resolve().parents[2]

# The message list of OpenAI's "How to count tokens with tiktoken" cookbook, whose published counts
# (checked against the API) are 129 prompt tokens for gpt-4-0613 (cl100k_base) and 124 for gpt-4o.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_hello_world_is_two_tokens(encoding):
    assert tokens.count_text("hello world", encoding) == 2


def test_known_token_ids():
    assert tokens.encode("hello world", "cl100k_base") == [15339, 1917]
    assert tokens.encode("hello world", "o200k_base") == [24912, 2375]
    # The cookbook's example: "tiktoken is great!" -> 6 tokens in cl100k_base.
    assert tokens.encode("tiktoken is great!", "cl100k_base") == [83, 1609, 5963, 374, 2294, 0]
    assert tokens.get_encoding("cl100k_base").n_vocab == 100277
    assert tokens.get_encoding("o200k_base").n_vocab == 200019


def test_default_encoding_is_o200k():
    assert tokens.get_encoding().name == "o200k_base"
    assert tokens.count_text("") == 0


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_encode_decode_round_trip(encoding):
    text = "Ünïcödé, emoji 🎉, 日本語, code: `x = f(y)\n\treturn x`"
    ids = tokens.encode(text, encoding)
    assert tokens.decode(ids, encoding) == text
    assert tokens.count_text(text, encoding) == len(ids)


def test_special_token_markers_in_user_text_are_plain_text():
    ids = tokens.encode("<|endoftext|>", "cl100k_base")
    assert 100257 not in ids
    assert len(ids) > 1
    assert tokens.decode(ids, "cl100k_base") == "<|endoftext|>"


def test_unknown_encoding_is_rejected():
    with pytest.raises(SandboxInvalidRequest):
        tokens.get_encoding("p50k_base")


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("cl100k_base", 129), ("o200k_base", 124)],
)
def test_count_messages_matches_openai_cookbook(encoding, expected):
    assert tokens.count_messages(COOKBOOK_MESSAGES, encoding=encoding) == expected


def test_count_messages_rules():
    content = "What is the capital of France?"
    n = tokens.count_text(content)
    base = tokens.count_messages([{"role": "user", "content": content}])
    assert base == 3 + tokens.count_text("user") + n + 3
    named = tokens.count_messages([{"role": "user", "name": "bob", "content": content}])
    assert named == base + tokens.count_text("bob") + 1
    # Content parts: text parts count as text, images a flat 85.
    parts = tokens.count_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": content},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ]
    )
    assert parts == base + tokens.TOKENS_PER_IMAGE
    # A null content (assistant tool call) counts nothing for itself.
    assert tokens.count_messages([{"role": "assistant", "content": None}]) == 3 + 1 + 3


def test_count_messages_with_tools_counts_their_json():
    messages = [{"role": "user", "content": "weather in Paris?"}]
    tool_list = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    plain = tokens.count_messages(messages)
    with_tools = tokens.count_messages(messages, tools=tool_list)
    expected = tokens.count_text(
        '[{"type":"function","function":{"name":"get_weather","description":"Current weather for a city",'
        '"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]'
    )
    assert with_tools - plain == expected > 20


def test_count_messages_accepts_a_plain_prompt():
    assert tokens.count_messages("hello world") == 2


def test_truncate():
    text = "The quick brown fox jumps over the lazy dog. " * 5
    cut = tokens.truncate(text, 7)
    assert text.startswith(cut)
    assert tokens.count_text(cut) == 7
    assert tokens.truncate(text, 10_000) == text
    assert tokens.truncate(text, 0) == ""
    with pytest.raises(SandboxInvalidRequest):
        tokens.truncate(text, -1)


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_truncate_never_splits_characters(encoding):
    text = "日本語のテキストと絵文字 🎉🎉🎉 とても長い文章です。" * 3
    for limit in range(1, 30):
        cut = tokens.truncate(text, limit, encoding)
        assert text.startswith(cut)
        assert "\ufffd" not in cut
        assert tokens.count_text(cut, encoding) <= limit


def test_encoding_name_for_model():
    assert tokens.encoding_name_for_model("gpt-4o-mini") == "o200k_base"
    assert tokens.encoding_name_for_model("gpt-4.1") == "o200k_base"
    assert tokens.encoding_name_for_model("o3-mini") == "o200k_base"
    assert tokens.encoding_name_for_model("gpt-4-0613") == "cl100k_base"
    assert tokens.encoding_name_for_model("gpt-4") == "cl100k_base"
    assert tokens.encoding_name_for_model("gpt-3.5-turbo") == "cl100k_base"
    assert tokens.encoding_name_for_model("openai/gpt-3.5-turbo") == "cl100k_base"
    assert tokens.encoding_name_for_model("sandbox-chat") == "o200k_base"


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_same_as_tiktokens_own_encoding(encoding, tmp_path, monkeypatch):
    """tiktoken's own constructor, fed the bundled file through its cache, builds the same encoding."""
    import tiktoken_ext.openai_public as openai_public

    blob_url = f"https://openaipublic.blob.core.windows.net/encodings/{encoding}.tiktoken"
    contents = gzip.decompress((tokens._data_dir() / f"{encoding}.tiktoken.gz").read_bytes())
    (tmp_path / hashlib.sha1(blob_url.encode()).hexdigest()).write_bytes(contents)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    official = getattr(openai_public, encoding)()
    ours = tokens.get_encoding(encoding)
    assert ours._pat_str == official["pat_str"]
    assert ours._special_tokens == official["special_tokens"]
    reference = tiktoken.Encoding(**official)
    assert reference.n_vocab == ours.n_vocab
    sample = "Hello, world! It's 2024 — naïve café; let's count: 1234567 tokens.\n\n  def f(x):\treturn x**2"
    assert reference.encode(sample) == ours.encode(sample)


def test_loads_offline_with_a_cold_cache(tmp_path):
    """In a fresh interpreter, with an empty tiktoken cache and sockets disabled, counting works and
    nothing is written to the cache. The encodings also load lazily (not at import)."""
    cache_dir = tmp_path / "tiktoken-cache"
    cache_dir.mkdir()
    script = """
import socket, sys
def _no_network(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = _no_network
socket.create_connection = _no_network
socket.getaddrinfo = _no_network
from gateway.sandbox import tokens
assert tokens.get_encoding.cache_info().currsize == 0, "encoding loaded at import"
print(tokens.count_text("hello world", "cl100k_base"), tokens.count_text("hello world", "o200k_base"))
"""
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(REPO)}
    env.pop("DATA_GYM_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "2"]
    assert list(cache_dir.iterdir()) == []
