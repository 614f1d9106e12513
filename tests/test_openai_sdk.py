"""The official `openai` SDK, unchanged, against the running server (daphne subprocess)."""

from __future__ import annotations

import openai
import pytest

from billing.models import UsageRecord
from tests.factories import make_account, make_key
from tests.live import live_servers

USD = 1_000_000_000


@pytest.fixture
def sdk():
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    with live_servers(1) as (url,):
        yield openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0), account


@pytest.mark.django_db(transaction=True)
def test_the_openai_sdk_chats_streams_and_embeds(sdk):
    client, account = sdk
    reply = client.chat.completions.create(
        model="sandbox-chat", messages=[{"role": "user", "content": "Name a colour."}]
    )
    assert reply.choices[0].message.content and reply.usage.total_tokens > 0
    assert reply.model_extra["_metadata"]["vendor"] == "sandbox"

    stream = client.chat.completions.create(
        model="sandbox-chat",
        messages=[{"role": "user", "content": "Count to five."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) > 10 and chunks[-1].usage.completion_tokens > 0

    embedded = client.embeddings.create(model="sandbox-embed", input=["one", "two"], dimensions=16)
    assert [len(d.embedding) for d in embedded.data] == [16, 16]

    models = {m.id for m in client.models.list()}
    assert "sandbox-chat" in models
    assert UsageRecord.objects.filter(account=account).count() == 3


@pytest.mark.django_db(transaction=True)
def test_the_openai_sdk_sees_402_as_an_api_error_with_the_top_up_link():
    secret = make_key(make_account("broke@example.com"))
    with live_servers(1) as (url,):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="sandbox-chat", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 402
    assert refused.value.body["code"] == "INSUFFICIENT_CREDIT" and "/billing/" in refused.value.body["topup_url"]
