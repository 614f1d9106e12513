"""The playground: chat and compare over the websocket, the plain-POST fallbacks, image,
upscale and vision, the cost compare view, "View code" and the 402 experience."""

from __future__ import annotations

import asyncio
import io
import json
import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from PIL import Image

from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from console.accounts import create_project, default_project
from gateway.sandbox import tokens
from infrai.asgi import application
from infrai.lib.money import usd_to_nano
from playground import snippets
from tests.factories import bearer, make_account, make_key, signed_in_client

USD = 1_000_000_000
LONG_PROMPT = "Write a long essay about rivers and the sea."


# --- Websocket helpers ------------------------------------------------------------------------


def _session_cookie(account, project=None) -> str:
    client = Client()
    client.force_login(account.owner)
    if project is not None:
        session = client.session
        session["project"] = project.public_id
        session.save()
    return client.cookies["sessionid"].value


async def _socket(account=None, origin: bytes = b"http://testserver", project=None) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"testserver")]
    if account is not None:
        cookie = await sync_to_async(_session_cookie)(account, project)
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/playground/", headers=headers)


async def _connected(account, project=None) -> WebsocketCommunicator:
    ws = await _socket(account, project=project)
    connected, _ = await ws.connect()
    assert connected
    assert (await ws.receive_json_from())["type"] == "hello"
    return ws


async def _until_finals(ws: WebsocketCommunicator, lanes: int = 1, timeout: float = 10) -> list[dict]:
    """Every message of a run until `lanes` final (or error-without-final) messages came."""
    received: list[dict] = []
    done: set[int | None] = set()
    while len(done) < lanes:
        message = await ws.receive_json_from(timeout=timeout)
        received.append(message)
        if message["type"] == "final":
            done.add(message["lane"])
        elif message["type"] == "error" and message.get("lane") is None:
            break
        elif message["type"] == "error" and message["error"].get("status") != 502:
            done.add(message["lane"])
    return received


def _chat(run: str = "r1", **fields) -> dict:
    return {
        "type": "chat",
        "run": run,
        "messages": [{"role": "user", "content": fields.pop("prompt", "Tell me about rivers.")}],
        "model": "sandbox-chat",
        "temperature": 0.7,
        "max_tokens": 80,
        **fields,
    }


# --- Chat over the websocket ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_reply_streams_as_deltas_then_a_final_with_cost_tokens_vendor_and_request_id():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = await _connected(account)
    await ws.send_json_to(_chat(system="Answer briefly."))
    messages = await _until_finals(ws)
    await ws.disconnect()

    start, *deltas, final = messages
    assert start["type"] == "start" and start["run"] == "r1" and start["lane"] == 0
    assert len(deltas) > 1 and all(m["type"] == "delta" for m in deltas)
    assert final["type"] == "final" and final["finish_reason"] in ("stop", "length")
    assert final["vendor"] == "sandbox" and final["request_id"] == start["request_id"]
    assert final["usage"]["completion_tokens"] == tokens.count_text("".join(d["text"] for d in deltas))
    assert final["latency_ms"] >= 0

    record = await sync_to_async(UsageRecord.objects.get)(request_id=final["request_id"])
    project = await sync_to_async(default_project)(account)
    assert record.key_id is None and record.project_id == project.pk and record.account_id == account.pk
    assert record.cost_nano == usd_to_nano(final["cost_usd"]) > 0
    assert record.output_tokens == final["usage"]["completion_tokens"]
    balance = await sync_to_async(ledger.get_balance)(account)
    assert balance.held_nano == 0 and balance.balance_nano == USD - record.cost_nano


@pytest.mark.django_db(transaction=True)
async def test_the_start_message_carries_the_same_request_as_code():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = await _connected(account)
    await ws.send_json_to(_chat(system="Be brief."))
    start = (await _until_finals(ws))[0]
    await ws.disconnect()
    code = start["code"]
    assert "curl -N http://testserver/v1/chat/completions" in code["curl"]
    assert 'base_url="http://testserver/v1"' in code["python"] and 'api_key="$INFRAI_KEY"' in code["python"]
    assert "Bearer $INFRAI_KEY" in code["javascript"] and "http://testserver/v1/chat/completions" in code["javascript"]
    sent = json.loads(re.search(r"-d '(.*)'$", code["curl"], re.S).group(1))  # type: ignore[union-attr]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["model"] == "sandbox-chat" and sent["stream"] is True and sent["temperature"] == 0.7


@pytest.mark.django_db(transaction=True)
async def test_a_multi_turn_history_is_sent_with_each_turn(settings):
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = await _connected(account)
    history = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    await ws.send_json_to({**_chat(), "messages": history})
    final = (await _until_finals(ws))[-1]
    await ws.disconnect()
    record = await sync_to_async(UsageRecord.objects.get)(request_id=final["request_id"])
    assert record.input_tokens == tokens.count_messages(history)


@pytest.mark.django_db(transaction=True)
async def test_stop_mid_stream_ends_with_a_cancelled_final_and_settles_what_was_delivered(settings):
    settings.SANDBOX_TOKENS_PER_SECOND = 40
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = await _connected(account)
    await ws.send_json_to(_chat(prompt=LONG_PROMPT, max_tokens=1000))
    assert (await ws.receive_json_from())["type"] == "start"
    delivered = [(await ws.receive_json_from(timeout=5))["text"] for _ in range(4)]
    await ws.send_json_to({"type": "stop", "run": "r1"})
    rest = await _until_finals(ws)
    await ws.disconnect()

    delivered += [m["text"] for m in rest if m["type"] == "delta"]
    final = rest[-1]
    assert final["type"] == "final" and final["finish_reason"] == "cancelled"
    record = await sync_to_async(UsageRecord.objects.get)(request_id=final["request_id"])
    assert record.status == "cancelled" and record.key_id is None
    # Billed for what was produced before the stop landed: what the page got, or a token more.
    assert tokens.count_text("".join(delivered)) <= record.output_tokens <= tokens.count_text("".join(delivered)) + 2
    assert record.output_tokens < 1000
    assert final["cost_usd"] == format_usd_of(record.cost_nano)
    assert final["usage"]["completion_tokens"] == record.output_tokens
    hold = await sync_to_async(Hold.objects.get)(account=account)
    assert hold.state == HoldState.SETTLED
    balance = await sync_to_async(ledger.get_balance)(account)
    assert balance.held_nano == 0 and balance.balance_nano == USD - record.cost_nano


def format_usd_of(nano: int) -> str:
    from infrai.lib.money import format_usd

    return format_usd(nano)


@pytest.mark.django_db(transaction=True)
async def test_stop_before_the_stream_starts_gives_the_hold_back(monkeypatch):
    from gateway import chat

    real_open = chat.open_stream
    held = asyncio.Event()

    async def slow_open(*args, **kwargs):
        stream = await real_open(*args, **kwargs)
        held.set()
        await asyncio.sleep(0.3)  # Stop lands here: the hold exists, no token has been asked for
        return stream

    monkeypatch.setattr(chat, "open_stream", slow_open)
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = await _connected(account)
    await ws.send_json_to(_chat())
    assert (await ws.receive_json_from())["type"] == "start"
    await asyncio.wait_for(held.wait(), 5)
    await ws.send_json_to({"type": "stop", "run": "r1"})
    final = (await _until_finals(ws))[-1]
    await ws.disconnect()
    assert final["finish_reason"] == "cancelled" and final["cost_usd"] == "0.00"
    assert (await sync_to_async(Hold.objects.get)(account=account)).state == HoldState.RELEASED
    assert not await sync_to_async(UsageRecord.objects.exists)()
    assert (await sync_to_async(ledger.get_balance)(account)).available_nano == USD


@pytest.mark.django_db(transaction=True)
async def test_closing_the_socket_mid_stream_settles_the_hold(settings):
    settings.SANDBOX_TOKENS_PER_SECOND = 40
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = await _connected(account)
    await ws.send_json_to(_chat(prompt=LONG_PROMPT, max_tokens=1000))
    for _ in range(3):
        await ws.receive_json_from(timeout=5)
    await ws.disconnect()
    record = await sync_to_async(UsageRecord.objects.get)(account=account)
    assert record.status == "cancelled" and 0 < record.output_tokens < 1000
    assert (await sync_to_async(Hold.objects.get)(account=account)).state == HoldState.SETTLED


@pytest.mark.django_db(transaction=True)
async def test_compare_streams_two_models_at_once(settings):
    settings.SANDBOX_TOKENS_PER_SECOND = 200
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = await _connected(account)
    await ws.send_json_to(
        {
            "type": "compare",
            "run": "c1",
            "models": ["sandbox-chat", "sandbox-chat-mini"],
            "messages": [{"role": "user", "content": LONG_PROMPT}],
            "max_tokens": 60,
        }
    )
    messages = await _until_finals(ws, lanes=2)
    await ws.disconnect()

    starts = {m["lane"]: m for m in messages if m["type"] == "start"}
    assert starts[0]["model"] == "sandbox-chat" and starts[1]["model"] == "sandbox-chat-mini"
    first_delta = {
        lane: next(i for i, m in enumerate(messages) if m["type"] == "delta" and m["lane"] == lane) for lane in (0, 1)
    }
    finals = {m["lane"]: (i, m) for i, m in enumerate(messages) if m["type"] == "final"}
    # Both columns were streaming before either finished.
    assert max(first_delta.values()) < min(i for i, _ in finals.values())
    assert finals[0][1]["model"] == "sandbox-chat" and finals[1][1]["model"] == "sandbox-chat-mini"
    for _, final in finals.values():
        assert final["vendor"] == "sandbox" and final["cost_usd"] and final["latency_ms"] >= 0
    records = await sync_to_async(
        lambda: sorted(UsageRecord.objects.filter(account=account).values_list("model", flat=True))
    )()
    assert records == ["sandbox-chat", "sandbox-chat-mini"]


@pytest.mark.django_db(transaction=True)
async def test_a_run_without_credit_gets_a_402_with_the_shortfall_and_a_top_up_link_back_here():
    account = await sync_to_async(make_account)()
    ws = await _connected(account)
    await ws.send_json_to(_chat())
    messages = await _until_finals(ws)
    await ws.disconnect()
    error = messages[-1]
    assert error["type"] == "error" and error["run"] == "r1" and error["lane"] == 0
    body = error["error"]
    assert body["status"] == 402 and body["code"] == "INSUFFICIENT_CREDIT"
    assert body["available_usd"] == "0.00" and body["required_usd"] == body["shortfall_usd"]
    link = urlsplit(body["topup_url"])
    assert link.path == "/billing/" and link.fragment == "topup"
    assert parse_qs(link.query) == {"amount_usd": [body["suggested_usd"]], "return_to": ["/playground/"]}
    assert not await sync_to_async(UsageRecord.objects.exists)()


@pytest.mark.django_db(transaction=True)
async def test_a_compare_402_links_back_to_compare():
    account = await sync_to_async(make_account)()
    ws = await _connected(account)
    await ws.send_json_to(
        {
            "type": "compare",
            "run": "c1",
            "models": ["sandbox-chat", "sandbox-chat-pro"],
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    messages = await _until_finals(ws, lanes=2)
    await ws.disconnect()
    errors = [m for m in messages if m["type"] == "error"]
    assert len(errors) == 2
    assert all(
        parse_qs(urlsplit(e["error"]["topup_url"]).query)["return_to"] == ["/playground/compare/"] for e in errors
    )


@pytest.mark.django_db(transaction=True)
async def test_a_socket_without_a_session_is_refused():
    ws = await _socket(None)
    connected, code = await ws.connect()
    assert not connected or code == 4401
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_socket_from_another_origin_is_refused():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = await _socket(account, origin=b"http://evil.example")
    connected, _ = await ws.connect()
    assert not connected
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("message", "field", "lane"),
    [
        (_chat(model="no-such-model"), "model", 0),
        (_chat(temperature=5), "temperature", None),
        (_chat(max_tokens=0), "max_tokens", None),
        (_chat(task="poetry", model=None), "task", 0),
        ({**_chat(), "messages": "not a list"}, "messages", None),
        ({**_chat(), "run": ""}, "run", None),
        ({"type": "dance", "run": "r1"}, "type", None),
        ({**_chat(), "type": "compare", "models": ["sandbox-chat"]}, "models", None),
        ({**_chat(), "type": "compare", "models": ["sandbox-chat", "sandbox-chat"]}, "models", None),
    ],
)
async def test_bad_input_is_an_error_naming_the_field_and_the_socket_carries_on(message, field, lane):
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = await _connected(account)
    await ws.send_json_to(message)
    received = await _until_finals(ws)
    error = received[-1]
    assert error["type"] == "error" and error["error"]["field"] == field and error["lane"] == lane
    assert error["error"]["status"] == 400 and error["error"]["message"]

    await ws.send_json_to(_chat(run="after"))
    assert (await _until_finals(ws))[-1]["type"] == "final"
    await ws.disconnect()
    assert await sync_to_async(UsageRecord.objects.count)() == 1


@pytest.mark.django_db(transaction=True)
async def test_a_frame_that_is_not_json_is_answered_not_fatal():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = await _connected(account)
    await ws.send_to(text_data="{oops")
    assert (await ws.receive_json_from())["error"]["code"] == "INVALID_JSON"
    await ws.send_json_to(_chat())
    assert (await _until_finals(ws))[-1]["type"] == "final"
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_runs_are_billed_to_the_project_selected_in_the_console():
    account = await sync_to_async(make_account)(credit_nano=USD)
    other = await sync_to_async(create_project)(account, "Side project")
    ws = await _connected(account, project=other)
    await ws.send_json_to(_chat())
    final = (await _until_finals(ws))[-1]
    await ws.disconnect()
    record = await sync_to_async(UsageRecord.objects.get)(request_id=final["request_id"])
    assert record.project_id == other.pk and record.key_id is None


@pytest.mark.django_db(transaction=True)
async def test_auto_routing_by_task_and_prefer_streams_too():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = await _connected(account)
    await ws.send_json_to(_chat(model="", task="coding", prefer="cheapest"))
    final = (await _until_finals(ws))[-1]
    await ws.disconnect()
    assert final["type"] == "final" and final["model"] == "sandbox-chat-mini"


@pytest.mark.django_db(transaction=True)
async def test_the_account_events_socket_still_works():
    account = await sync_to_async(make_account)()
    cookie = await sync_to_async(_session_cookie)(account)
    ws = WebsocketCommunicator(
        application,
        "/ws/events/",
        headers=[
            (b"origin", b"http://testserver"),
            (b"host", b"testserver"),
            (b"cookie", f"sessionid={cookie}".encode()),
        ],
    )
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["event"] == "hello"
    await ws.disconnect()


# --- Pages ------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/playground/", ['name="prompt"', 'name="model"', 'name="temperature"', 'name="max_tokens"', 'name="system"']),
        ("/playground/compare/", ['name="models"', 'value="sandbox-chat" checked', "Run"]),
        ("/playground/image/", ['name="size"', 'value="256x256"', 'type="file"', "Generate"]),
        ("/playground/cost/", ['name="expected_output_tokens"', 'name="batch_mode"', 'name="cache_strategy"']),
    ],
)
def test_each_page_shows_its_form(path, expected):
    client = signed_in_client(make_account())
    response = client.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    for needle in expected:
        assert needle in html, needle
    assert "playground/playground.css" in html and 'aria-current="page"' in html


@pytest.mark.django_db
def test_the_playground_needs_a_sign_in(client):
    response = client.get("/playground/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.post("/playground/chat/", {}).status_code == 302


@pytest.mark.django_db
def test_the_chat_page_offers_only_models_the_account_can_use():
    html = signed_in_client(make_account()).get("/playground/").content.decode()
    assert 'value="sandbox-chat"' in html
    assert 'value="gpt-4o"' not in html  # no OpenAI credential on this server


# --- Chat without the socket ------------------------------------------------------------------


def _post_json(client, path, body):
    return client.post(path, json.dumps(body), content_type="application/json")


@pytest.mark.django_db
def test_the_plain_post_answers_the_whole_reply_billed_like_the_stream():
    account = make_account(credit_nano=USD)
    client = signed_in_client(account)
    body = _post_json(client, "/playground/chat/", _chat()).json()
    assert body["content"] and body["_metadata"]["vendor"] == "sandbox"
    assert body["code"]["python"].startswith("from openai import OpenAI")
    record = UsageRecord.objects.get(request_id=body["_metadata"]["request_id"])
    assert record.key_id is None and record.cost_nano == usd_to_nano(body["_metadata"]["cost_usd"])
    assert record.output_tokens == body["usage"]["completion_tokens"]


@pytest.mark.django_db
def test_the_plain_post_402_carries_the_top_up_link():
    client = signed_in_client(make_account())
    response = _post_json(client, "/playground/chat/", _chat())
    assert response.status_code == 402
    error = response.json()["error"]
    assert "return_to=%2Fplayground%2F" in error["topup_url"] and error["required_usd"]


@pytest.mark.django_db
def test_the_plain_post_names_a_bad_field():
    client = signed_in_client(make_account(credit_nano=USD))
    response = _post_json(client, "/playground/chat/", _chat(temperature=5))
    assert response.status_code == 400 and response.json()["error"]["field"] == "temperature"


@pytest.mark.django_db
def test_chat_works_as_a_plain_form_without_javascript():
    client = signed_in_client(make_account(credit_nano=USD))
    response = client.post(
        "/playground/chat/",
        {"prompt": "Hello there", "model": "sandbox-chat", "temperature": "0.5", "max_tokens": "40", "history": "[]"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Hello there" in html and 'data-testid="run-meta"' in html and "View code" in html
    history = json.loads(unescape(re.search(r'name="history" value="([^"]*)"', html).group(1)))  # type: ignore[union-attr]
    assert [t["role"] for t in history] == ["user", "assistant"]

    again = client.post(
        "/playground/chat/", {"prompt": "And again", "model": "sandbox-chat", "history": json.dumps(history)}
    )
    assert again.status_code == 200
    assert (
        UsageRecord.objects.order_by("-created_at").first().input_tokens
        > UsageRecord.objects.order_by("created_at").first().input_tokens
    )


@pytest.mark.django_db
def test_the_plain_form_shows_a_402_with_the_top_up_button():
    client = signed_in_client(make_account())
    response = client.post("/playground/chat/", {"prompt": "Hello", "model": "sandbox-chat"})
    assert response.status_code == 402
    html = response.content.decode()
    assert 'data-testid="topup"' in html and "return_to=%2Fplayground%2F" in html
    assert "Hello" in html  # the prompt is not lost


@pytest.mark.django_db
def test_compare_without_the_socket_answers_every_column():
    account = make_account(credit_nano=USD)
    client = signed_in_client(account)
    message = {**_chat(), "models": ["sandbox-chat", "sandbox-chat-mini"]}
    columns = _post_json(client, "/playground/compare/run/", message).json()["columns"]
    assert [c["model"] for c in columns] == ["sandbox-chat", "sandbox-chat-mini"]
    assert all(c["_metadata"]["cost_usd"] for c in columns)
    form = client.post(
        "/playground/compare/run/", {"prompt": "hi", "models": ["sandbox-chat", "sandbox-chat-pro"], "max_tokens": "20"}
    )
    assert form.status_code == 200 and form.content.decode().count('data-testid="compare-column"') == 2


# --- Image, upscale, vision -------------------------------------------------------------------


def _png(size=(40, 30), color=(220, 20, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_urls(html: str) -> list[str]:
    return re.findall(r'<img src="(http://testserver/files/[^"]+)"', html)


def _fetch_png(client, url: str) -> Image.Image:
    response = client.get(url.split("testserver", 1)[1])
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    return Image.open(io.BytesIO(b"".join(response.streaming_content)))


@pytest.mark.django_db
def test_images_are_generated_billed_and_shown_as_a_gallery():
    account = make_account(credit_nano=USD)
    client = signed_in_client(account)
    response = client.post(
        "/playground/image/generate/",
        {"prompt": "a lighthouse at dusk", "size": "256x256", "n": "2"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html  # the partial, for htmx
    urls = _image_urls(html)
    assert len(urls) == 2 and _fetch_png(client, urls[0]).size == (256, 256)
    assert html.count("Upscale ×2") == 2 and html.count("Upscale ×4") == 2
    record = UsageRecord.objects.get(account=account)
    assert record.capability == "image" and record.key_id is None and record.units == {"images": 2, "size": "256x256"}
    assert record.cost_nano == usd_to_nano("0.004")  # 2 × $0.002, the catalog's sandbox-image price
    assert "client.images.generate(" in unescape(html) and 'size="256x256"' in unescape(html)


@pytest.mark.django_db
def test_image_without_javascript_renders_the_whole_page():
    client = signed_in_client(make_account(credit_nano=USD))
    response = client.post("/playground/image/generate/", {"prompt": "a tree", "size": "256x256", "n": "1"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" in html and len(_image_urls(html)) == 1


@pytest.mark.django_db
def test_a_bad_image_size_names_the_field():
    client = signed_in_client(make_account(credit_nano=USD))
    response = client.post("/playground/image/generate/", {"prompt": "a tree", "size": "huge"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "<code>size</code>" in response.content.decode()
    page = client.post("/playground/image/generate/", {"prompt": "", "size": "256x256"})
    assert page.status_code == 400 and "<code>prompt</code>" in page.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("factor", [2, 4])
def test_a_generated_image_can_be_upscaled(factor):
    account = make_account(credit_nano=USD)
    client = signed_in_client(account)
    html = client.post("/playground/image/generate/", {"prompt": "a boat", "size": "256x256"}, HTTP_HX_REQUEST="true")
    url = _image_urls(html.content.decode())[0]
    response = client.post("/playground/image/upscale/", {"image": url, "factor": str(factor)}, HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert response.status_code == 200 and f"{256 * factor}×{256 * factor}" in page
    assert _fetch_png(client, _image_urls(page)[0]).size == (256 * factor, 256 * factor)
    record = UsageRecord.objects.get(account=account, capability="upscale")
    assert record.cost_nano == usd_to_nano("0.001") and record.units == {"images": 1, "factor": factor}
    assert "/v1/ai/image/upscale" in page


@pytest.mark.django_db
def test_nobody_upscales_another_accounts_image():
    alice = signed_in_client(make_account("alice@example.com", credit_nano=USD))
    html = alice.post("/playground/image/generate/", {"prompt": "a boat", "size": "256x256"}, HTTP_HX_REQUEST="true")
    url = _image_urls(html.content.decode())[0]
    bob_account = make_account("bob@example.com", credit_nano=USD)
    bob = signed_in_client(bob_account)
    response = bob.post("/playground/image/upscale/", {"image": url, "factor": "2"}, HTTP_HX_REQUEST="true")
    assert "<code>image</code>" in response.content.decode()
    assert not UsageRecord.objects.filter(account=bob_account).exists()


@pytest.mark.django_db
def test_vision_answers_about_an_uploaded_image_and_bills_it():
    account = make_account(credit_nano=USD)
    client = signed_in_client(account)
    upload = io.BytesIO(_png())
    upload.name = "red.png"
    response = client.post(
        "/playground/image/vision/", {"prompt": "What colour is this?", "image": upload}, HTTP_HX_REQUEST="true"
    )
    html = unescape(response.content.decode())
    assert response.status_code == 200 and "red" in html.lower()
    record = UsageRecord.objects.get(account=account)
    assert record.capability == "vision" and record.key_id is None
    assert record.input_tokens == tokens.count_text("What colour is this?") + 85
    assert "/v1/ai/vision" in html and "red.png" in html


@pytest.mark.django_db
def test_vision_without_a_file_names_the_field():
    client = signed_in_client(make_account(credit_nano=USD))
    response = client.post("/playground/image/vision/", {"prompt": "What is it?"}, HTTP_HX_REQUEST="true")
    assert "<code>image</code>" in response.content.decode()


@pytest.mark.django_db
def test_an_image_run_without_credit_shows_the_top_up_button_back_to_the_image_page():
    client = signed_in_client(make_account())
    response = client.post(
        "/playground/image/generate/", {"prompt": "a tree", "size": "256x256"}, HTTP_HX_REQUEST="true"
    )
    html = unescape(response.content.decode())
    assert 'data-testid="topup"' in html and "Top up $5" in html
    assert "return_to=%2Fplayground%2Fimage%2F" in html and "$0.002" in html
    full = client.post("/playground/image/generate/", {"prompt": "a tree", "size": "256x256"})
    assert full.status_code == 402


# --- Cost compare -----------------------------------------------------------------------------


def _estimates(html: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-model="([^"]+)"[^>]*data-estimate="([^"]+)"', html))


@pytest.mark.django_db
@pytest.mark.parametrize("batch_mode", [False, True])
def test_the_cost_view_shows_the_same_numbers_as_the_api(batch_mode):
    account = make_account(credit_nano=USD)
    client = signed_in_client(account)
    prompt = "Summarise the history of the printing press in three paragraphs."
    form = {"prompt": prompt, "expected_output_tokens": "300", "cache_strategy": "vendor"}
    if batch_mode:
        form["batch_mode"] = "on"
    html = client.post("/playground/cost/compare/", form, HTTP_HX_REQUEST="true").content.decode()
    api = (
        Client()
        .post(
            "/v1/ai/cost/compare",
            json.dumps({"messages": prompt, "expected_output_tokens": 300, "batch_mode": batch_mode}),
            content_type="application/json",
            **bearer(make_key(account)),
        )
        .json()
    )
    assert _estimates(html) == {e["model"]: e["estimated_cost_usd"] for e in api["estimates"]}
    assert 'data-testid="cost-table"' in html and 'data-testid="cost-chart"' in html
    assert html.count('class="pg-bar"') == len(api["estimates"])


@pytest.mark.django_db
def test_the_cost_view_takes_chosen_models_and_a_whole_conversation():
    account = make_account(credit_nano=USD)
    client = signed_in_client(account)
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    html = client.post(
        "/playground/cost/compare/",
        {
            "messages_json": json.dumps(conversation),
            "models": ["sandbox-chat-pro", "sandbox-chat"],
            "expected_output_tokens": "50",
        },
        HTTP_HX_REQUEST="true",
    ).content.decode()
    api = (
        Client()
        .post(
            "/v1/ai/cost/compare",
            json.dumps(
                {"messages": conversation, "models": ["sandbox-chat-pro", "sandbox-chat"], "expected_output_tokens": 50}
            ),
            content_type="application/json",
            **bearer(make_key(account)),
        )
        .json()
    )
    assert list(_estimates(html).items()) == [(e["model"], e["estimated_cost_usd"]) for e in api["estimates"]]
    assert f'data-prompt="{tokens.count_messages(conversation)}"' in html


@pytest.mark.django_db
def test_run_for_real_puts_the_actual_cost_and_latency_beside_the_estimate():
    account = make_account(credit_nano=USD)
    client = signed_in_client(account)
    form = {
        "prompt": "Say hello.",
        "models": ["sandbox-chat", "sandbox-chat-mini"],
        "expected_output_tokens": "40",
        "action": "run",
        "run": ["sandbox-chat-mini"],
    }
    html = client.post("/playground/cost/compare/", form, HTTP_HX_REQUEST="true").content.decode()
    record = UsageRecord.objects.get(account=account)
    assert record.model == "sandbox-chat-mini" and record.key_id is None
    row = re.search(r'<tr data-model="sandbox-chat-mini"[^>]*>', html).group(0)  # type: ignore[union-attr]
    assert f'data-actual="{format_usd_of(record.cost_nano)}"' in row and "data-latency=" in row
    assert 'data-testid="actual"' in html and "pg-bar-actual" in html
    assert html.count('data-testid="actual"') == 1  # only the ticked model ran


@pytest.mark.django_db
def test_run_for_real_needs_a_ticked_model():
    client = signed_in_client(make_account(credit_nano=USD))
    html = client.post(
        "/playground/cost/compare/", {"prompt": "Hi", "action": "run"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "<code>run</code>" in html and not UsageRecord.objects.exists()


@pytest.mark.django_db
def test_the_cost_view_names_a_bad_field():
    client = signed_in_client(make_account())
    html = client.post(
        "/playground/cost/compare/", {"prompt": "", "expected_output_tokens": "300"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "<code>messages</code>" in html


# --- View code --------------------------------------------------------------------------------


def test_every_python_snippet_is_valid_python():
    base = "https://console.example"
    chat_body = {"model": "m", "messages": [{"role": "user", "content": "a \"quoted\" 'text'\nline"}], "stream": True}
    cases = [
        snippets.chat(base, chat_body),
        snippets.chat(base, {**chat_body, "stream": False}),
        snippets.chat(
            base, {"task": "coding", "prefer": "cheapest", "messages": chat_body["messages"], "stream": True}
        ),
        snippets.image(base, {"prompt": "x", "size": "256x256", "n": 2, "model": "sandbox-image"}),
        snippets.upscale(base, {"image": "https://console.example/files/abc", "factor": 2}),
        snippets.vision(base, "What's $HOME `here`?", "my photo.png", "image/png"),
    ]
    for code in cases:
        compile(code["python"], "<snippet>", "exec")
        assert f"{base}/v1" in code["python"] and "$INFRAI_KEY" in code["curl"] and "$INFRAI_KEY" in code["javascript"]


def test_the_curl_snippet_quotes_the_body_for_the_shell():
    body = {"model": "m", "messages": [{"role": "user", "content": "it's"}], "stream": False}
    curl = snippets.chat("http://h", body)["curl"]
    assert "'\\''" in curl
    import shlex

    argv = shlex.split(curl.replace("\\\n", " "))
    assert json.loads(argv[argv.index("-d") + 1]) == body


def test_the_vision_snippet_keeps_the_shell_from_expanding_the_prompt():
    curl = snippets.vision("http://h", "cost in $USD?", "a.png", "image/png")["curl"]
    assert "\\$USD" in curl and '"base64": "$IMAGE"' in curl


async def test_lane_tasks_are_not_left_running_after_close():
    from playground.sessions import PlaygroundSession

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    session = PlaygroundSession(caller=None, base_url="http://x", send=send)  # type: ignore[arg-type]
    blocker = asyncio.get_running_loop().create_future()
    from playground.sessions import Lane

    lane = Lane("r", 0, asyncio.create_task(asyncio.wait_for(blocker, 10)))
    session.lanes.append(lane)
    await session.close()
    assert lane.task is not None and lane.task.cancelled() and session.closed
