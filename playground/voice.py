"""Realtime voice sessions: the token that opens one, and the session it opens on `/ws/voice/`.

A token comes from `POST /v1/ai/realtime/token` or `/v1/ai/voice/session` (a project key), or from
the console's Voice tab (the signed-in user's current project): both call `issue_token`. It is a
bearer credential, signed with Django's signing and short-lived; the socket takes it from the
URL (`/ws/voice/?token=...`) or from a first `{"type": "start", "token": ...}` message.

The client streams 16 kHz mono PCM16 (little-endian) as binary frames. The server detects the
end of each turn (speech, then `TURN_SILENCE_MS` of silence; or `{"type": "end_turn"}` for
push-to-talk), then runs the turn through the same prepared, metered calls as the API:
ASR -> chat (the conversation so far) -> TTS. Audio that arrives while a turn is answered is
dropped (half duplex: the reply must not be heard as the next question).

Server -> client: ready {session_id, expires_at, model, voice, per_minute_usd} · listening ·
thinking · transcript {role: "user", text} · reply {text} · audio {format, mime, bytes,
duration_seconds} followed by one binary frame (the WAV) · turn.cost {asr_usd, chat_usd,
tts_usd, turn_usd, calls_usd} · ended {reason, seconds, time_cost_usd, calls_cost_usd,
session_cost_usd} · error {error: {status, code, message, ...}}.
Client -> server: start {token} · end_turn · hangup · binary audio.

Session time is metered like a call: a hold for the first minute when the session starts, one
more per minute before the covered time runs out (no credit: the session ends with a 402), and
one settlement at the end for the exact time (per_minute x milliseconds, rounded up to a nano),
written once with its usage record. A token serves one socket at a time; once that socket has
closed, the token may open another until it expires (each socket is metered on its own).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.core import signing
from django.core.cache import cache

from billing.models import Hold, UsageRecord
from console.models import Account
from gateway import capabilities, catalog, metering, operations
from gateway.api import ApiError, ApiRequestState, Caller
from gateway.inputs import integer, optional_str
from gateway.routing import Candidate
from infrai.lib.ids import uuid7
from infrai.lib.money import format_usd
from playground import runs

log = logging.getLogger(__name__)

SALT = "infrai.realtime"
KINDS = ("realtime", "voice")
WS_PATH = "/ws/voice/"

SAMPLE_RATE = 16_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
TURN_SILENCE_MS = 700  # this much quiet after speech ends a turn
MIN_SPEECH_MS = 200  # shorter bursts (a click, a cough) are not a turn
PREROLL_MS = 300  # kept from before the speech started: its first syllable
MAX_TURN_MS = 30_000
MIN_SPEECH_RMS = 0.01  # about -40 dBFS
NOISE_FACTOR = 3.5  # speech is this many times louder than the room's noise floor

MAX_HISTORY_TURNS = 12
SYSTEM_PROMPT = "You are a voice assistant. Answer in one or two short sentences, without lists or markup."
REPLY_MAX_TOKENS = 120
START_TIMEOUT_SECONDS = 10
RENEW_BEFORE_SECONDS = 10  # take the next minute's hold this long before the covered time ends

# Close codes (4000-4999 are the application's): the error message before the close says more.
CLOSE_NORMAL = 1000
CLOSE_BAD_TOKEN = 4401
CLOSE_NO_CREDIT = 4402
CLOSE_WRONG_KIND = 4403
CLOSE_IN_USE = 4409
CLOSE_EXPIRED = 4410
CLOSE_ERROR = 4500


class Refused(Exception):
    """A token that cannot open a session, with the close code that says why."""

    def __init__(self, close_code: int, code: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.code = code
        self.message = message
        self.status = status

    def payload(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message}


# --- Tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """What a valid token allows: a session of `kind` on `model`, billed to the account/project."""

    session_id: str
    account_id: str
    project_id: str | None
    kind: str
    model: str
    voice: str | None
    expires_at: int  # epoch seconds


def sign_token(grant: Grant) -> str:
    return signing.dumps(
        {
            "s": grant.session_id,
            "a": grant.account_id,
            "p": grant.project_id,
            "k": grant.kind,
            "m": grant.model,
            "v": grant.voice,
            "e": grant.expires_at,
        },
        salt=SALT,
    )


def read_token(token: Any, now: float | None = None) -> Grant:
    """The grant a token carries, or Refused: bad signature, wrong kind, or expired."""
    if not isinstance(token, str) or not token:
        raise Refused(CLOSE_BAD_TOKEN, "MISSING_TOKEN", "Send the session token: ?token=... or {type: start, token}.")
    try:
        data = signing.loads(token, salt=SALT)
    except signing.BadSignature as exc:
        raise Refused(CLOSE_BAD_TOKEN, "INVALID_TOKEN", "This session token is not valid.") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("s", "a", "k", "m")):
        raise Refused(CLOSE_BAD_TOKEN, "INVALID_TOKEN", "This session token is not valid.")
    if data["k"] not in KINDS:
        raise Refused(
            CLOSE_WRONG_KIND, "WRONG_TOKEN_KIND", "This token is not a realtime or voice session token.", status=403
        )
    expires_at = data.get("e")
    if not isinstance(expires_at, int) or expires_at <= (time.time() if now is None else now):
        raise Refused(CLOSE_EXPIRED, "TOKEN_EXPIRED", "This session token has expired: get a new one.", status=401)
    project_id = data.get("p")
    voice = data.get("v")
    return Grant(
        session_id=data["s"],
        account_id=data["a"],
        project_id=project_id if isinstance(project_id, str) else None,
        kind=data["k"],
        model=data["m"],
        voice=voice if isinstance(voice, str) else None,
        expires_at=expires_at,
    )


def ws_url_for(base_url: str) -> str:
    """The socket that redeems tokens, on the console's own host."""
    if base_url.startswith("https://"):
        return "wss://" + base_url.removeprefix("https://") + WS_PATH
    return "ws://" + base_url.removeprefix("http://") + WS_PATH


@dataclass
class Issued:
    grant: Grant
    token: str
    candidate: Candidate

    def answer(self, base_url: str) -> dict[str, Any]:
        return {
            "session_id": self.grant.session_id,
            "token": self.token,
            "expires_at": datetime.fromtimestamp(self.grant.expires_at, UTC).isoformat(),
            "ws_url": ws_url_for(base_url),
            "ice_servers": [],
            "model": self.grant.model,
            "voice": self.grant.voice,
        }


async def issue_token(
    origin: metering.Origin, caller: Caller, request_id: str, body: dict[str, Any], kind: str, default_ttl: int
) -> Issued:
    """Route the realtime model, check there is a minute of credit, and sign a session token."""
    ttl = integer(body, "ttl_seconds", default_ttl, 10, 3600)
    assert ttl is not None
    voice = optional_str(body, "voice")
    chain = await capabilities.route(caller, "realtime", body)
    candidate = chain[0]
    one_minute = capabilities.per_minute_nano(candidate.entry, 60)
    hold = await metering.hold_or_402(origin, caller, request_id, one_minute, f"{kind} session check")
    await metering.release_call(hold)
    grant = Grant(
        session_id=f"rt_{uuid7().hex}",
        account_id=caller.account.public_id,
        project_id=caller.project.public_id,
        kind=kind,
        model=candidate.model_name,
        voice=voice,
        expires_at=int((datetime.now(UTC) + timedelta(seconds=ttl)).timestamp()),
    )
    return Issued(grant, sign_token(grant), candidate)


def _caller_for_grant(grant: Grant) -> Caller:
    account = Account.objects.filter(public_id=grant.account_id).first()
    if account is None:
        raise Refused(CLOSE_BAD_TOKEN, "INVALID_TOKEN", "This session token's account no longer exists.")
    project = account.projects.filter(public_id=grant.project_id).first() if grant.project_id else None
    if project is None:
        project = runs.current_project(account, None)
    return Caller(key=None, project=project, account=account)


# --- Turn detection -------------------------------------------------------------------------


class TurnDetector:
    """Energy VAD over 16 kHz PCM16: a turn is speech followed by `TURN_SILENCE_MS` of quiet.

    The threshold follows the room: `NOISE_FACTOR` times a running noise floor, never under
    `MIN_SPEECH_RMS`. `level` is the last frame's RMS (0..1) for a meter."""

    def __init__(self) -> None:
        self.pending = b""
        self.preroll: list[bytes] = []
        self.frames: list[bytes] = []
        self.speech_frames = 0
        self.silent_frames = 0
        self.noise_floor = 0.003
        self.level = 0.0

    @property
    def in_speech(self) -> bool:
        return bool(self.frames)

    def feed(self, data: bytes) -> bytes | None:
        """Add audio; the turn's PCM when this audio ended one."""
        self.pending += data
        turn = None
        frame_bytes = FRAME_SAMPLES * 2
        while len(self.pending) >= frame_bytes and turn is None:
            frame, self.pending = self.pending[:frame_bytes], self.pending[frame_bytes:]
            turn = self._frame(frame)
        return turn

    def _frame(self, frame: bytes) -> bytes | None:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float64) / 32768.0
        rms = float(np.sqrt(np.mean(samples * samples)))
        self.level = rms
        speech = rms >= max(MIN_SPEECH_RMS, self.noise_floor * NOISE_FACTOR)
        if not self.frames:
            if speech:
                self.frames = [*self.preroll, frame]
                self.preroll = []
                self.speech_frames, self.silent_frames = 1, 0
            else:
                self.noise_floor = 0.95 * self.noise_floor + 0.05 * rms
                self.preroll = [*self.preroll, frame][-(PREROLL_MS // FRAME_MS) :]
            return None
        self.frames.append(frame)
        if speech:
            self.speech_frames += 1
            self.silent_frames = 0
        else:
            self.silent_frames += 1
        if self.silent_frames * FRAME_MS >= TURN_SILENCE_MS:
            if self.speech_frames * FRAME_MS < MIN_SPEECH_MS:
                self.reset()
                return None
            return self.take()
        if len(self.frames) * FRAME_MS >= MAX_TURN_MS:
            return self.take()
        return None

    def take(self) -> bytes | None:
        """End the turn now (push-to-talk): the audio so far, or None if there was no speech."""
        if self.frames:
            audio = b"".join(self.frames)
        elif len(self.preroll) * FRAME_MS >= MIN_SPEECH_MS:
            audio = b"".join(self.preroll)  # push-to-talk below the threshold: take what was said
        else:
            audio = None
        self.reset()
        return audio

    def reset(self) -> None:
        self.pending = b""
        self.preroll = []
        self.frames = []
        self.speech_frames = self.silent_frames = 0


def wav_of(pcm16: bytes, sample_rate: int = SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm16)
    return buffer.getvalue()


# --- Metering session time ------------------------------------------------------------------


class SessionMeter:
    """The session's time: one hold per started minute, one settlement at the end."""

    def __init__(
        self, origin: metering.Origin, caller: Caller, candidate: Candidate, session_id: str, expires_at: int
    ) -> None:
        self.origin = origin
        self.session_id = session_id
        self.caller = caller
        self.candidate = candidate
        self.expires_at = expires_at
        self.request_id = str(uuid7())  # the usage record's id; the holds are named after it
        self.minute_nano = capabilities.charged(candidate, capabilities.per_minute_nano(candidate.entry, 60))
        self.holds: list[Hold] = []
        self.started = 0.0
        self.stopped: float | None = None
        self.covered_seconds = 0
        self.cost_nano: int | None = None

    def elapsed_ms(self) -> int:
        if not self.started:
            return 0
        return int(((self.stopped or time.monotonic()) - self.started) * 1000)

    def stop(self) -> None:
        """The session's time ends now (settling may take a moment more, not billed)."""
        if self.stopped is None:
            self.stopped = time.monotonic()

    def time_cost_nano(self, elapsed_ms: int) -> int:
        catalog_nano = catalog.to_nano(
            self.candidate.entry.per_minute * Decimal(elapsed_ms) / 60_000, self.candidate.entry
        )
        return capabilities.charged(self.candidate, catalog_nano)

    async def open(self) -> None:
        await self._hold_minute()
        self.started = time.monotonic()

    def renewal_due(self) -> bool:
        return self.elapsed_ms() >= (self.covered_seconds - RENEW_BEFORE_SECONDS) * 1000

    async def _hold_minute(self) -> None:
        reference = self.request_id if not self.holds else f"{self.request_id}:{len(self.holds)}"
        # Lives as long as the token could keep the session open, so no sweep closes it early.
        ttl = timedelta(seconds=max(self.expires_at - time.time(), 0) + 300)
        # A hang-up during the renewal cancels the clock: the minute it was taking goes back.
        hold = await metering.hold_or_402(
            self.origin, self.caller, reference, self.minute_nano, "voice session time", ttl=ttl
        )
        self.holds.append(hold)
        self.covered_seconds += 60

    async def renew(self) -> None:
        await self._hold_minute()

    async def settle(self) -> int:
        """Charge the exact time once (the last hold carries the charge and the usage record)."""
        if self.cost_nano is not None:
            return self.cost_nano
        elapsed = min(self.elapsed_ms(), self.covered_seconds * 1000)
        self.cost_nano = self.time_cost_nano(elapsed) if self.holds else 0
        if not self.holds:
            return 0
        facts = capabilities.facts(
            "realtime", self.candidate, units={"seconds": round(elapsed / 1000, 3), "session_id": self.session_id}
        )
        facts.latency_ms = elapsed
        # The earlier minutes' holds go back first, so the charge never needs more than was held;
        # should the settlement then fail, the last hold expires uncharged (never a double charge).
        for hold in self.holds[:-1]:
            await metering.release_call(hold)
        await metering.settle_call(self.holds[-1], self.caller, self.request_id, self.cost_nano, facts)
        return self.cost_nano


# --- The session ----------------------------------------------------------------------------

SendJson = Callable[[dict[str, Any]], Awaitable[None]]
SendBytes = Callable[[bytes], Awaitable[None]]
Close = Callable[[int], Awaitable[None]]


def _lock_key(session_id: str) -> str:
    return f"voice:live:{session_id}"


@dataclass
class TurnCosts:
    asr_nano: int = 0
    chat_nano: int = 0
    tts_nano: int = 0

    @property
    def total_nano(self) -> int:
        return self.asr_nano + self.chat_nano + self.tts_nano


@dataclass
class VoiceSession:
    """One socket's session: redeem the token, listen, answer turn by turn, end and settle once."""

    base_url: str
    send_json: SendJson
    send_bytes: SendBytes
    close_socket: Close
    grant: Grant | None = None
    caller: Caller | None = None
    meter: SessionMeter | None = None
    detector: TurnDetector = field(default_factory=TurnDetector)
    history: list[dict[str, str]] = field(default_factory=list)
    calls_nano: int = 0
    call_ids: list[str] = field(default_factory=list)
    turn_task: asyncio.Task[None] | None = None
    clock_task: asyncio.Task[None] | None = None
    locked: str | None = None
    ended: bool = False
    socket_open: bool = True

    @property
    def started(self) -> bool:
        return self.meter is not None

    async def send(self, message: dict[str, Any]) -> None:
        if self.socket_open:
            await self.send_json(message)

    async def error(self, payload: dict[str, Any]) -> None:
        await self.send({"type": "error", "error": payload})

    # Opening -------------------------------------------------------------------------------

    async def wait_for_start(self) -> None:
        """A socket that never sends its token is closed."""
        await asyncio.sleep(START_TIMEOUT_SECONDS)
        if not self.started and not self.ended:
            await self.refuse(Refused(CLOSE_BAD_TOKEN, "MISSING_TOKEN", "No session token arrived in time."))

    async def start(self, token: Any) -> None:
        if self.started or self.ended:
            return
        try:
            grant = read_token(token)
            caller = await sync_to_async(_caller_for_grant)(grant)
            if not await cache.aadd(_lock_key(grant.session_id), "1", timeout=grant.expires_at - int(time.time()) + 60):
                raise Refused(CLOSE_IN_USE, "SESSION_IN_USE", "This session is open on another connection.", status=409)
            self.locked = grant.session_id
        except Refused as refused:
            await self.refuse(refused)
            return
        self.grant, self.caller = grant, caller
        try:
            chain = await capabilities.route(caller, "realtime", {"model": grant.model})
            meter = SessionMeter(self.base_url, caller, chain[0], grant.session_id, grant.expires_at)
            await meter.open()
        except ApiError as exc:
            await self.error(runs.error_payload(exc, "voice"))
            await self.finish("insufficient_credit" if exc.status == 402 else "error", _close_code_for(exc))
            return
        self.meter = meter
        self.clock_task = asyncio.create_task(self._clock())
        await self.send(
            {
                "type": "ready",
                "session_id": grant.session_id,
                "expires_at": datetime.fromtimestamp(grant.expires_at, UTC).isoformat(),
                "model": grant.model,
                "voice": grant.voice,
                "per_minute_usd": format_usd(meter.minute_nano),
            }
        )
        await self.send({"type": "listening"})

    async def refuse(self, refused: Refused) -> None:
        await self.error(refused.payload())
        await self.finish("refused", refused.close_code)

    # Messages ------------------------------------------------------------------------------

    async def handle(self, message: Any) -> None:
        if not isinstance(message, dict):
            await self.error({"status": 400, "code": "INVALID_JSON", "message": "Send a JSON object."})
            return
        kind = message.get("type")
        if kind == "start":
            await self.start(message.get("token"))
        elif not self.started:
            await self.error(
                {"status": 400, "code": "NOT_STARTED", "message": "Start the session first: {type: start, token}."}
            )
        elif kind == "end_turn":
            audio = self.detector.take()
            if audio is not None and not self.busy:
                self._answer(audio)
        elif kind == "hangup":
            await self.end("hangup")
        else:
            await self.error(
                {
                    "status": 400,
                    "code": "INVALID_FIELD",
                    "field": "type",
                    "message": "type must be start, end_turn or hangup.",
                }
            )

    @property
    def busy(self) -> bool:
        return self.turn_task is not None and not self.turn_task.done()

    async def audio(self, data: bytes) -> None:
        if not self.started or self.ended or self.busy:
            return  # half duplex: nothing is heard while a reply is on its way
        turn = self.detector.feed(data)
        if turn is not None:
            self._answer(turn)

    def _answer(self, pcm16: bytes) -> None:
        self.turn_task = asyncio.create_task(self._turn(pcm16))

    # A turn --------------------------------------------------------------------------------

    async def _turn(self, pcm16: bytes) -> None:
        assert self.caller is not None and self.grant is not None and self.meter is not None
        await self.send({"type": "thinking"})
        costs = TurnCosts()
        vendor = self.meter.candidate.entry.vendor
        try:
            prepared = await operations.prepare_asr(self.caller.account, {"vendor": vendor}, wav_of(pcm16), "audio/wav")
            heard = await runs.run_prepared(self.base_url, self._state(), prepared)  # type: ignore[arg-type]
            costs.asr_nano = self._charged(heard.cost_nano)
            text = heard.result.text.strip()
            await self.send({"type": "transcript", "role": "user", "text": text})
            if text:
                await self._reply(text, vendor, costs)
        except ApiError as exc:
            await self._report_costs(costs)
            await self.error(runs.error_payload(exc, "voice"))
            if exc.status == 402:
                await self.end("insufficient_credit", CLOSE_NO_CREDIT)
                return
        except Exception:
            log.exception("voice turn failed in session %s", self.grant.session_id)
            await self._report_costs(costs)
            await self.error({"status": 500, "code": "INTERNAL", "message": "This turn failed; say it again."})
        else:
            await self._report_costs(costs)
        self.detector.reset()
        await self.send({"type": "listening"})

    def _state(self) -> ApiRequestState:
        assert self.caller is not None
        state = runs.new_state(self.caller)
        self.call_ids.append(state.request_id)
        return state

    def _charged(self, cost_nano: int) -> int:
        """Count a settled call at once, so a turn cut short still reports what it cost."""
        self.calls_nano += cost_nano
        return cost_nano

    async def _reply(self, text: str, vendor: str, costs: TurnCosts) -> None:
        assert self.caller is not None and self.grant is not None
        self.history.append({"role": "user", "content": text})
        body = {
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, *self.history[-MAX_HISTORY_TURNS:]],
            "vendor": vendor,
            "max_tokens": REPLY_MAX_TOKENS,
        }
        prepared = await operations.prepare_chat(self.caller.account, body)
        answered = await runs.run_prepared(self.base_url, self._state(), prepared)  # type: ignore[arg-type]
        costs.chat_nano = self._charged(answered.cost_nano)
        reply = answered.result.content.strip()
        self.history.append({"role": "assistant", "content": reply})
        await self.send({"type": "reply", "role": "assistant", "text": reply})
        if not reply:
            return
        tts_body = {"input": reply[:4096], "voice": self.grant.voice, "format": "wav", "vendor": vendor}
        prepared = await operations.prepare_tts(self.caller.account, tts_body)
        spoken = await runs.run_prepared(self.base_url, self._state(), prepared)  # type: ignore[arg-type]
        costs.tts_nano = self._charged(spoken.cost_nano)
        speech = spoken.result
        await self.send(
            {
                "type": "audio",
                "format": speech.format,
                "mime": speech.mime_type,
                "bytes": len(speech.audio),
                "duration_seconds": round(speech.duration_seconds, 3),
            }
        )
        if self.socket_open:
            await self.send_bytes(speech.audio)

    async def _report_costs(self, costs: TurnCosts) -> None:
        await self.send(
            {
                "type": "turn.cost",
                "asr_usd": format_usd(costs.asr_nano),
                "chat_usd": format_usd(costs.chat_nano),
                "tts_usd": format_usd(costs.tts_nano),
                "turn_usd": format_usd(costs.total_nano),
                "calls_usd": format_usd(self.calls_nano),
            }
        )

    # Time ----------------------------------------------------------------------------------

    async def _clock(self) -> None:
        """Ends the session when the token expires; takes the next minute's hold in time."""
        assert self.meter is not None and self.grant is not None
        while True:
            remaining = self.grant.expires_at - time.time()
            if remaining <= 0:
                await self.end("expired", CLOSE_EXPIRED)
                return
            if self.meter.renewal_due():
                try:
                    await self.meter.renew()
                except ApiError as exc:
                    await self.error(runs.error_payload(exc, "voice"))
                    await self.end("insufficient_credit", CLOSE_NO_CREDIT)
                    return
            await asyncio.sleep(min(1.0, max(remaining, 0.05)))

    # Ending --------------------------------------------------------------------------------

    async def end(self, reason: str, close_code: int = CLOSE_NORMAL) -> None:
        """Stop listening, settle the session's time once, say what it cost, close."""
        if self.ended:
            return
        self.ended = True
        if self.meter is not None:
            self.meter.stop()
        current = asyncio.current_task()
        others = [t for t in (self.clock_task, self.turn_task) if t is not None and t is not current]
        for task in others:
            task.cancel()
        # Both finish first: a turn's call or a minute's hold in flight is settled or undone.
        await asyncio.gather(*others, return_exceptions=True)
        time_nano = 0
        seconds = 0.0
        if self.meter is not None:
            seconds = min(self.meter.elapsed_ms(), self.meter.covered_seconds * 1000) / 1000
            time_nano = await asyncio.shield(self.meter.settle())
        # What the ledger charged, including a call whose settlement raced the hang-up.
        self.calls_nano = await sync_to_async(_charged_for)(self.call_ids)
        await self._unlock()
        await self.send(
            {
                "type": "ended",
                "reason": reason,
                "seconds": round(seconds, 3),
                "time_cost_usd": format_usd(time_nano),
                "calls_cost_usd": format_usd(self.calls_nano),
                "session_cost_usd": format_usd(time_nano + self.calls_nano),
            }
        )
        await self._close(close_code)

    async def finish(self, reason: str, close_code: int) -> None:
        """End a session that never started: nothing to settle."""
        self.ended = True
        await self._unlock()
        await self._close(close_code)

    async def disconnected(self) -> None:
        """The socket went away: settle as if hung up (nothing more is sent)."""
        self.socket_open = False
        if not self.ended:
            await self.end("disconnected")

    async def _unlock(self) -> None:
        if self.locked is not None:
            await cache.adelete(_lock_key(self.locked))
            self.locked = None

    async def _close(self, code: int) -> None:
        if self.socket_open:
            self.socket_open = False
            await self.close_socket(code)


def _charged_for(request_ids: list[str]) -> int:
    return sum(UsageRecord.objects.filter(request_id__in=request_ids).values_list("cost_nano", flat=True))


def _close_code_for(exc: ApiError) -> int:
    return CLOSE_NO_CREDIT if exc.status == 402 else CLOSE_ERROR


# --- "View code" ----------------------------------------------------------------------------


def code_snippets(base_url: str) -> dict[str, str]:
    """How an API client gets a token and holds a voice session (curl, Python, JavaScript)."""
    key = "$INFRAI_KEY"
    ws_url = ws_url_for(base_url)
    curl = (
        f"curl {base_url}/v1/ai/voice/session \\\n"
        f'  -H "Authorization: Bearer {key}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        "  -d '{\"ttl_seconds\": 300}'\n"
        f'# then open {ws_url}, send {{"type": "start", "token": "<token>"}} and stream 16 kHz mono PCM16 frames'
    )
    python = f'''import asyncio, httpx, json, websockets  # pip install httpx websockets

BASE = "{base_url}"
session = httpx.post(f"{{BASE}}/v1/ai/voice/session", json={{"ttl_seconds": 300}},
                     headers={{"Authorization": "Bearer {key}"}}).json()

async def main() -> None:
    # question.pcm: 16 kHz mono s16le, e.g. ffmpeg -i question.wav -ar 16000 -ac 1 -f s16le question.pcm
    pcm = open("question.pcm", "rb").read()
    async with websockets.connect(session["ws_url"], origin=BASE) as ws:
        await ws.send(json.dumps({{"type": "start", "token": session["token"]}}))  # not in the URL: logs keep URLs
        for i in range(0, len(pcm), 640):  # 20 ms frames
            await ws.send(pcm[i:i + 640])
        await ws.send(json.dumps({{"type": "end_turn"}}))
        async for message in ws:
            if isinstance(message, bytes):
                open("reply.wav", "wb").write(message)
                await ws.send(json.dumps({{"type": "hangup"}}))
                continue
            event = json.loads(message)
            print(event)
            if event["type"] in ("ended", "error"):
                break

asyncio.run(main())'''
    javascript = f'''// On your server: the project key never goes to a browser, only the short-lived token does.
const session = await (await fetch("{base_url}/v1/ai/voice/session", {{
  method: "POST",
  headers: {{ "Authorization": "Bearer {key}", "Content-Type": "application/json" }},
  body: JSON.stringify({{ ttl_seconds: 300 }}),
}})).json();

// In a browser page served by the console (the socket checks the page's origin):
const ws = new WebSocket(session.ws_url);
ws.binaryType = "arraybuffer";
ws.onopen = () => ws.send(JSON.stringify({{ type: "start", token: session.token }}));
ws.onmessage = (event) => {{
  if (typeof event.data !== "string") {{
    new Audio(URL.createObjectURL(new Blob([event.data], {{ type: "audio/wav" }}))).play();
    return;
  }}
  console.log(JSON.parse(event.data)); // ready, transcript, reply, turn.cost, ended...
}};
// Send 16 kHz mono PCM16 frames with ws.send(int16Array.buffer); {{"type": "hangup"}} ends it.'''
    return {"curl": curl, "python": python, "javascript": javascript}
