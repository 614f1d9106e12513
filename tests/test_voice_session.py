"""Realtime voice sessions on /ws/voice/: a token opens one, speech is answered turn by turn
(sandbox ASR -> chat -> TTS, each billed like the API), session time is metered per minute and
settled once for the exact time."""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave
from decimal import ROUND_CEILING, Decimal

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from billing import ledger
from billing.models import EntryKind, Hold, HoldState, LedgerEntry, UsageRecord
from console.accounts import create_project, default_project
from gateway.models import CatalogModel
from gateway.sandbox import speech
from infrai.asgi import application
from infrai.lib.money import usd_to_nano
from playground import voice
from tests.factories import bearer, make_account, make_key, signed_in_client

pytestmark = pytest.mark.django_db(transaction=True)

USD = 1_000_000_000
QUESTION = "what is the weather today"
FRAME_BYTES = voice.FRAME_SAMPLES * 2


# --- Helpers ----------------------------------------------------------------------------------


def spoken_pcm16(text: str) -> bytes:
    """`text` said by the sandbox's espeak-ng, as 16 kHz mono PCM16: what a microphone sends."""
    said = speech.synthesize(text, None, 1.0, "wav")
    samples, rate = speech.decode_audio(said.audio)
    mono16k = speech.resample(samples.mean(axis=1), rate, voice.SAMPLE_RATE)
    return (np.clip(mono16k, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    # A quiet room, not digital silence: real microphones always hear a little.
    noise = np.random.default_rng(7).standard_normal(voice.SAMPLE_RATE * ms // 1000) * 0.001
    return (noise * 32767).astype("<i2").tobytes()


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def api_token(account, kind_path: str = "/v1/ai/voice/session", **body) -> dict:
    client = Client()
    response = client.post(kind_path, json.dumps(body), content_type="application/json", **bearer(make_key(account)))
    assert response.status_code == 200, response.content
    return response.json()


def signed(account, *, kind: str = "voice", expires_in: float = 300, project=None) -> str:
    grant = voice.Grant(
        session_id="rt_test",
        account_id=account.public_id,
        project_id=project.public_id if project else None,
        kind=kind,
        model="sandbox-realtime",
        voice=None,
        expires_at=int(time.time() + expires_in),
    )
    return voice.sign_token(grant)


def socket(token: str | None = None, origin: bytes = b"http://testserver") -> WebsocketCommunicator:
    path = voice.WS_PATH + (f"?token={token}" if token else "")
    return WebsocketCommunicator(application, path, headers=[(b"origin", origin), (b"host", b"testserver")])


async def until(ws: WebsocketCommunicator, kind: str, timeout: float = 30) -> list[dict]:
    """JSON events up to and including the first of `kind` (binary frames as {"type": "binary"})."""
    seen: list[dict] = []
    while True:
        raw = await ws.receive_output(timeout=timeout)
        if raw["type"] == "websocket.close":
            seen.append({"type": "closed", "code": raw.get("code")})
            return seen
        if raw.get("bytes") is not None:
            seen.append({"type": "binary", "data": raw["bytes"]})
        else:
            seen.append(json.loads(raw["text"]))
        if seen[-1]["type"] == kind:
            return seen


async def opened(token: str) -> tuple[WebsocketCommunicator, dict]:
    ws = socket(token)
    connected, _ = await ws.connect()
    assert connected
    events = await until(ws, "listening", timeout=10)
    ready = next(e for e in events if e["type"] == "ready")
    return ws, ready


async def closed_with(ws: WebsocketCommunicator) -> tuple[list[dict], int | None]:
    events = await until(ws, "closed", timeout=10)
    return events, events[-1]["code"]


def time_fee_nano(seconds: float) -> int:
    per_minute = CatalogModel.objects.get(model_id="sandbox-realtime").per_minute
    ms = Decimal(str(seconds)) * 1000
    return int((per_minute * USD * ms / 60_000).to_integral_value(rounding=ROUND_CEILING))


def open_holds(account) -> int:
    return Hold.objects.filter(account=account, state=HoldState.OPEN).count()


# --- A voice turn -----------------------------------------------------------------------------


async def test_a_spoken_question_is_transcribed_answered_spoken_back_and_billed_once():
    account = await sync_to_async(make_account)(credit_nano=USD)
    issued = await sync_to_async(api_token)(account, ttl_seconds=120)
    assert issued["ws_url"] == "ws://testserver/ws/voice/"
    ws, ready = await opened(issued["token"])
    assert ready["session_id"] == issued["session_id"] and ready["model"] == "sandbox-realtime"
    assert ready["per_minute_usd"] == "0.06"

    question = await sync_to_async(spoken_pcm16)(QUESTION)
    for frame in frames(silence(300) + question + silence(1000)):
        await ws.send_to(bytes_data=frame)
    events = await until(ws, "turn.cost", timeout=60)
    kinds = [e["type"] for e in events]
    assert kinds.index("thinking") < kinds.index("transcript") < kinds.index("reply") < kinds.index("audio")

    heard = next(e for e in events if e["type"] == "transcript")
    assert heard["role"] == "user"
    assert {"weather", "today"} <= set(heard["text"].split())
    reply = next(e for e in events if e["type"] == "reply")
    assert "weather" in reply["text"].lower() and "sandbox" in reply["text"].lower()  # labelled simulated
    audio_event = next(e for e in events if e["type"] == "audio")
    wav_bytes = next(e for e in events if e["type"] == "binary")["data"]
    assert audio_event["format"] == "wav" and audio_event["bytes"] == len(wav_bytes)
    with wave.open(io.BytesIO(wav_bytes)) as reply_wav:
        assert reply_wav.getnframes() / reply_wav.getframerate() == pytest.approx(
            audio_event["duration_seconds"], abs=0.01
        )
        assert reply_wav.getnframes() / reply_wav.getframerate() > 1
    turn = events[-1]
    assert (await until(ws, "listening"))[-1]["type"] == "listening"

    await ws.send_json_to({"type": "hangup"})
    ended_events, code = await closed_with(ws)
    ended = next(e for e in ended_events if e["type"] == "ended")
    assert code == voice.CLOSE_NORMAL and ended["reason"] == "hangup"

    records = await sync_to_async(lambda: {r.capability: r for r in UsageRecord.objects.filter(account=account)})()
    assert sorted(records) == ["asr", "chat", "realtime", "tts"]  # one each: charged once
    assert usd_to_nano(turn["asr_usd"]) == records["asr"].cost_nano > 0
    assert usd_to_nano(turn["chat_usd"]) == records["chat"].cost_nano > 0
    assert usd_to_nano(turn["tts_usd"]) == records["tts"].cost_nano > 0
    session = records["realtime"]
    assert session.units["seconds"] == ended["seconds"] > 0
    assert session.units["session_id"] == issued["session_id"]
    assert (
        session.cost_nano == usd_to_nano(ended["time_cost_usd"]) == await sync_to_async(time_fee_nano)(ended["seconds"])
    )
    assert usd_to_nano(ended["session_cost_usd"]) == sum(r.cost_nano for r in records.values())
    balance = await sync_to_async(ledger.get_balance)(account)
    assert balance.held_nano == 0 and await sync_to_async(open_holds)(account) == 0
    assert balance.balance_nano == USD - sum(r.cost_nano for r in records.values())
    usage_entries = await sync_to_async(LedgerEntry.objects.filter(account=account, kind=EntryKind.USAGE).count)()
    assert usage_entries == 4


async def test_push_to_talk_ends_the_turn_without_waiting_for_silence():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws, _ = await opened(await sync_to_async(signed)(account))
    for frame in frames(await sync_to_async(spoken_pcm16)("hello there")):
        await ws.send_to(bytes_data=frame)
    await ws.send_json_to({"type": "end_turn"})
    events = await until(ws, "turn.cost", timeout=60)
    assert "hello" in next(e for e in events if e["type"] == "transcript")["text"]
    assert any(e["type"] == "binary" for e in events)
    await ws.disconnect()


async def test_a_quiet_socket_makes_no_turn_and_costs_only_its_time():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws, _ = await opened(await sync_to_async(signed)(account))
    for frame in frames(silence(2000)):
        await ws.send_to(bytes_data=frame)
    await ws.send_json_to({"type": "hangup"})
    events, _ = await closed_with(ws)
    assert "thinking" not in [e["type"] for e in events]
    capabilities = await sync_to_async(lambda: list(UsageRecord.objects.values_list("capability", flat=True)))()
    assert capabilities == ["realtime"]


async def test_the_session_is_billed_to_the_project_the_token_names():
    account = await sync_to_async(make_account)(credit_nano=USD)
    other = await sync_to_async(create_project)(account, "Voice bots")
    ws, _ = await opened(await sync_to_async(signed)(account, project=other))
    await ws.send_json_to({"type": "hangup"})
    await closed_with(ws)
    record = await sync_to_async(UsageRecord.objects.get)(capability="realtime")
    assert record.project_id == other.pk


# --- Tokens -----------------------------------------------------------------------------------


async def refused(token: str | None, first_message: dict | None = None) -> tuple[dict, int | None]:
    ws = socket(token)
    connected, _ = await ws.connect()
    assert connected  # accepted, so the reason can be said before the close
    if first_message is not None:
        await ws.send_json_to(first_message)
    events, code = await closed_with(ws)
    return next(e for e in events if e["type"] == "error")["error"], code


async def test_an_expired_token_is_refused():
    account = await sync_to_async(make_account)(credit_nano=USD)
    error, code = await refused(await sync_to_async(signed)(account, expires_in=-1))
    assert code == voice.CLOSE_EXPIRED and error["code"] == "TOKEN_EXPIRED"


async def test_a_tampered_token_is_refused():
    account = await sync_to_async(make_account)(credit_nano=USD)
    token = await sync_to_async(signed)(account)
    body, signature = token.rsplit(":", 1)
    error, code = await refused(f"{body}:{signature[::-1]}")
    assert code == voice.CLOSE_BAD_TOKEN and error["code"] == "INVALID_TOKEN"
    error, code = await refused("not-a-token")
    assert code == voice.CLOSE_BAD_TOKEN and error["code"] == "INVALID_TOKEN"


async def test_a_token_of_another_kind_or_salt_is_refused():
    account = await sync_to_async(make_account)(credit_nano=USD)
    error, code = await refused(await sync_to_async(signed)(account, kind="pubsub"))
    assert code == voice.CLOSE_WRONG_KIND and error["code"] == "WRONG_TOKEN_KIND"
    from django.core import signing

    other_salt = signing.dumps({"s": "x", "a": account.public_id, "k": "voice", "m": "m", "e": 2**40}, salt="other")
    error, code = await refused(other_salt)
    assert code == voice.CLOSE_BAD_TOKEN and error["code"] == "INVALID_TOKEN"


async def test_a_token_for_an_unknown_account_is_refused():
    grant = voice.Grant("rt_x", "acct_unknown", None, "voice", "sandbox-realtime", None, int(time.time()) + 60)
    error, code = await refused(voice.sign_token(grant))
    assert code == voice.CLOSE_BAD_TOKEN and error["code"] == "INVALID_TOKEN"


async def test_the_token_may_come_in_a_first_start_message():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = socket()
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "start", "token": await sync_to_async(signed)(account)})
    assert "ready" in [e["type"] for e in await until(ws, "listening")]
    await ws.send_json_to({"type": "hangup"})
    await closed_with(ws)


async def test_a_socket_that_never_sends_a_token_is_closed(monkeypatch):
    monkeypatch.setattr(voice, "START_TIMEOUT_SECONDS", 0.2)
    error, code = await refused(None)
    assert code == voice.CLOSE_BAD_TOKEN and error["code"] == "MISSING_TOKEN"


async def test_messages_before_the_start_are_answered_not_fatal():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = socket()
    assert (await ws.connect())[0]
    await ws.send_to(text_data="not json")
    assert (await ws.receive_json_from())["error"]["code"] == "INVALID_JSON"
    await ws.send_json_to({"type": "end_turn"})
    assert (await ws.receive_json_from())["error"]["code"] == "NOT_STARTED"
    await ws.send_json_to({"type": "start", "token": await sync_to_async(signed)(account)})
    await until(ws, "listening")
    await ws.send_json_to({"type": "shout"})
    assert (await ws.receive_json_from())["error"]["field"] == "type"
    await ws.disconnect()


async def test_a_token_serves_one_socket_at_a_time_and_may_reconnect_after():
    account = await sync_to_async(make_account)(credit_nano=USD)
    token = await sync_to_async(signed)(account)
    first, _ = await opened(token)
    error, code = await refused(token)
    assert code == voice.CLOSE_IN_USE and error["code"] == "SESSION_IN_USE"
    await first.send_json_to({"type": "hangup"})
    await closed_with(first)
    again, _ = await opened(token)
    await again.send_json_to({"type": "hangup"})
    await closed_with(again)
    # Each socket is metered on its own: two sessions of time, no hold left.
    assert await sync_to_async(UsageRecord.objects.filter(capability="realtime").count)() == 2
    assert await sync_to_async(open_holds)(account) == 0


async def test_a_socket_from_another_origin_is_refused():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws = socket(await sync_to_async(signed)(account), origin=b"http://evil.example")
    connected, _ = await ws.connect()
    assert not connected
    await ws.disconnect()
    assert await sync_to_async(Hold.objects.count)() == 0


# --- Time and credit --------------------------------------------------------------------------


async def test_hang_up_ends_the_session_and_settles_the_exact_time():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws, _ = await opened(await sync_to_async(signed)(account))
    await asyncio.sleep(1.2)
    await ws.send_json_to({"type": "hangup"})
    events, code = await closed_with(ws)
    ended = next(e for e in events if e["type"] == "ended")
    assert code == voice.CLOSE_NORMAL and ended["reason"] == "hangup"
    assert 1.2 <= ended["seconds"] < 10
    assert ended["calls_cost_usd"] == "0.00"
    fee = await sync_to_async(time_fee_nano)(ended["seconds"])
    assert usd_to_nano(ended["time_cost_usd"]) == usd_to_nano(ended["session_cost_usd"]) == fee
    balance = await sync_to_async(ledger.get_balance)(account)
    assert balance.balance_nano == USD - fee and balance.held_nano == 0


async def test_a_dropped_socket_is_settled_once_too():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws, _ = await opened(await sync_to_async(signed)(account))
    await asyncio.sleep(0.5)
    await ws.disconnect()
    record = await sync_to_async(UsageRecord.objects.get)(capability="realtime")
    assert record.cost_nano == await sync_to_async(time_fee_nano)(record.units["seconds"]) > 0
    balance = await sync_to_async(ledger.get_balance)(account)
    assert balance.balance_nano == USD - record.cost_nano and balance.held_nano == 0


async def test_the_token_expiry_ends_a_running_session():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws, _ = await opened(await sync_to_async(signed)(account, expires_in=4))
    events, code = await closed_with(ws)
    ended = next(e for e in events if e["type"] == "ended")
    assert code == voice.CLOSE_EXPIRED and ended["reason"] == "expired"
    assert 0 < ended["seconds"] < 6
    assert await sync_to_async(open_holds)(account) == 0


async def test_without_a_minute_of_credit_the_session_does_not_start():
    account = await sync_to_async(make_account)(credit_nano=1000)
    error, code = await refused(await sync_to_async(signed)(account))
    assert code == voice.CLOSE_NO_CREDIT
    assert error["status"] == 402 and error["code"] == "INSUFFICIENT_CREDIT"
    assert error["required_usd"] == "0.06" and error["topup_url"] and "return_to" in error["topup_url"]
    assert await sync_to_async(Hold.objects.count)() == 0


async def test_each_minute_is_held_before_it_starts_and_settled_as_one_charge(monkeypatch):
    # Renew at once instead of after 50 s: the first minute's hold plus the second's.
    monkeypatch.setattr(voice, "RENEW_BEFORE_SECONDS", 59.5)
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws, _ = await opened(await sync_to_async(signed)(account))
    await asyncio.sleep(2.5)  # the clock looks once a second
    holds = await sync_to_async(lambda: list(Hold.objects.filter(account=account).order_by("created_at")))()
    assert len(holds) >= 2 and all(h.state == HoldState.OPEN for h in holds)
    await ws.send_json_to({"type": "hangup"})
    events, _ = await closed_with(ws)
    ended = next(e for e in events if e["type"] == "ended")
    states = await sync_to_async(
        lambda: [h.state for h in Hold.objects.filter(account=account).order_by("created_at")]
    )()
    assert states.count(HoldState.SETTLED) == 1 and set(states) == {HoldState.SETTLED, HoldState.RELEASED}
    record = await sync_to_async(UsageRecord.objects.get)(capability="realtime")
    assert record.cost_nano == usd_to_nano(ended["time_cost_usd"])
    balance = await sync_to_async(ledger.get_balance)(account)
    assert balance.balance_nano == USD - record.cost_nano and balance.held_nano == 0


async def test_hanging_up_while_the_next_minute_is_being_held_leaves_no_hold(monkeypatch):
    monkeypatch.setattr(voice, "RENEW_BEFORE_SECONDS", 59.5)
    real_reserve = ledger.areserve
    renewing = asyncio.Event()

    async def renewal_answered_late(account_id, amount_nano, reference, **kwargs):
        hold = await real_reserve(account_id, amount_nano, reference, **kwargs)
        if ":" in reference:  # "<session>:<n>", a renewal
            renewing.set()
            await asyncio.sleep(1)  # SIMULATED: the hold is written, its answer still on the way
        return hold

    monkeypatch.setattr(ledger, "areserve", renewal_answered_late)
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws, _ = await opened(await sync_to_async(signed)(account))
    await asyncio.wait_for(renewing.wait(), timeout=10)
    await ws.send_json_to({"type": "hangup"})
    events, code = await closed_with(ws)
    assert code == voice.CLOSE_NORMAL and any(e["type"] == "ended" for e in events)
    record = await sync_to_async(UsageRecord.objects.get)(capability="realtime")
    balance = await sync_to_async(ledger.get_balance)(account)
    assert await sync_to_async(open_holds)(account) == 0
    assert (balance.held_nano, balance.balance_nano) == (0, USD - record.cost_nano)


async def test_when_the_next_minute_cannot_be_held_the_session_ends_with_a_402(monkeypatch):
    monkeypatch.setattr(voice, "RENEW_BEFORE_SECONDS", 59.5)
    one_minute = usd_to_nano("0.06")
    account = await sync_to_async(make_account)(credit_nano=one_minute + one_minute // 2)
    ws, _ = await opened(await sync_to_async(signed)(account))
    events, code = await closed_with(ws)
    error = next(e for e in events if e["type"] == "error")["error"]
    ended = next(e for e in events if e["type"] == "ended")
    assert code == voice.CLOSE_NO_CREDIT and ended["reason"] == "insufficient_credit"
    assert error["status"] == 402 and error["code"] == "INSUFFICIENT_CREDIT"
    record = await sync_to_async(UsageRecord.objects.get)(capability="realtime")
    assert record.cost_nano == usd_to_nano(ended["time_cost_usd"]) > 0
    balance = await sync_to_async(ledger.get_balance)(account)
    assert balance.held_nano == 0 and balance.balance_nano == one_minute + one_minute // 2 - record.cost_nano


# --- The console's token endpoint and page ----------------------------------------------------


def test_the_console_mints_a_token_for_the_current_project():
    account = make_account(credit_nano=USD)
    client = signed_in_client(account)
    answer = client.post("/playground/voice/token/", "{}", content_type="application/json").json()
    grant = voice.read_token(answer["token"])
    assert grant.account_id == account.public_id and grant.project_id == default_project(account).public_id
    assert grant.kind == "voice" and answer["ws_url"] == "ws://testserver/ws/voice/"
    chosen = client.post("/playground/voice/token/", '{"voice": "nova"}', content_type="application/json").json()
    assert voice.read_token(chosen["token"]).voice == chosen["voice"] == "nova"
    bad = client.post("/playground/voice/token/", '{"ttl_seconds": 5}', content_type="application/json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "ttl_seconds"


def test_the_console_token_402_carries_the_top_up_box_facts():
    client = signed_in_client(make_account("broke@example.com"))
    refused = client.post("/playground/voice/token/", "{}", content_type="application/json")
    error = refused.json()["error"]
    assert refused.status_code == 402 and error["code"] == "INSUFFICIENT_CREDIT"
    assert error["return_to"] == "/playground/voice/" and error["suggested_usd"]


def test_the_console_token_needs_a_sign_in(client):
    assert client.post("/playground/voice/token/", "{}", content_type="application/json").status_code == 302


def test_the_voice_page_shows_start_and_how_to_do_it_from_code():
    client = signed_in_client(make_account(credit_nano=USD))
    page = client.get("/playground/voice/").content.decode()
    assert "data-voice" in page and "Start" in page and "Hang up" in page
    assert "/v1/ai/voice/session" in page and "ws://testserver/ws/voice/" in page


def test_the_api_token_names_the_socket_that_redeems_it(client):
    account = make_account(credit_nano=USD)
    issued = api_token(account, "/v1/ai/realtime/token", voice="en")
    grant = voice.read_token(issued["token"])
    assert issued["ws_url"].endswith("/ws/voice/") and grant.kind == "realtime" and grant.voice == "en"


async def test_hanging_up_mid_turn_ends_at_once_and_leaves_no_hold():
    account = await sync_to_async(make_account)(credit_nano=USD)
    ws, _ = await opened(await sync_to_async(signed)(account))
    for frame in frames(await sync_to_async(spoken_pcm16)(QUESTION) + silence(900)):
        await ws.send_to(bytes_data=frame)
    await until(ws, "thinking")
    asked = time.monotonic()
    await ws.send_json_to({"type": "hangup"})
    events, code = await closed_with(ws)
    # Generous: the sandbox's recogniser and chat engine hold the event loop for a moment each, so
    # how far the turn got before the hang-up was read varies; what it cost must add up either way.
    assert time.monotonic() - asked < 10
    kinds = [e["type"] for e in events]
    assert "binary" not in kinds[kinds.index("ended") :]
    ended = next(e for e in events if e["type"] == "ended")
    assert code == voice.CLOSE_NORMAL and ended["reason"] == "hangup"
    records = await sync_to_async(lambda: list(UsageRecord.objects.filter(account=account)))()
    balance = await sync_to_async(ledger.get_balance)(account)
    assert balance.held_nano == 0 and await sync_to_async(open_holds)(account) == 0
    assert balance.balance_nano == USD - sum(r.cost_nano for r in records)
    assert usd_to_nano(ended["session_cost_usd"]) == sum(r.cost_nano for r in records)


async def test_when_a_turn_cannot_be_paid_the_session_ends_with_a_402_and_its_time_settled():
    one_minute = usd_to_nano("0.06")
    account = await sync_to_async(make_account)(credit_nano=one_minute + 1000)
    ws, _ = await opened(await sync_to_async(signed)(account))
    for frame in frames(await sync_to_async(spoken_pcm16)(QUESTION) + silence(900)):
        await ws.send_to(bytes_data=frame)
    events, code = await closed_with(ws)
    error = next(e for e in events if e["type"] == "error")["error"]
    ended = next(e for e in events if e["type"] == "ended")
    assert error["status"] == 402 and error["code"] == "INSUFFICIENT_CREDIT" and error["topup_url"]
    assert code == voice.CLOSE_NO_CREDIT and ended["reason"] == "insufficient_credit"
    assert "transcript" not in [e["type"] for e in events]
    records = await sync_to_async(lambda: list(UsageRecord.objects.filter(account=account)))()
    assert [r.capability for r in records] == ["realtime"]
    balance = await sync_to_async(ledger.get_balance)(account)
    assert balance.held_nano == 0 and balance.balance_nano == one_minute + 1000 - records[0].cost_nano
