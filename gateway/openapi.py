"""The OpenAPI 3.1 document of `/v1`, served at /v1/openapi.json and rendered at /v1/docs.

It is written by hand from the views, but every bound, enum and limit it states comes from the
constants the views validate with (imported below), so the document cannot drift from them
silently; tests/test_openapi.py checks that every route in gateway/urls.py is documented with
its methods, that the examples are accepted, and that the required fields really are required.
"""

from __future__ import annotations

import base64
import io
import wave
from typing import Any

from django.conf import settings

from gateway import byok, routing
from gateway.chat import CACHE_STRATEGIES, ROLES
from gateway.idempotency import MAX_KEY_LENGTH
from gateway.inputs import MAX_MEDIA_BYTES
from gateway.vendors import VENDORS
from gateway.vendors.sandbox import HEADER_DIRECTIVES
from gateway.views_account import MAX_LABEL_LENGTH
from gateway.views_cost import DEFAULT_EXPECTED_OUTPUT_TOKENS, MAX_COMPARE_MODELS

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
JSON = "application/json"
SSE = "text/event-stream"

# The bounds the capability views check. They are being moved between modules (views_capabilities,
# operations), so they are stated here; tests/test_openapi.py checks the views refuse what they forbid.
MAX_EMBED_INPUTS = 2048
MAX_IMAGES = 4
SIZE_PATTERN = r"^\d{2,4}x\d{2,4}$"
AUDIO_FORMATS = ("mp3", "wav", "ogg", "pcm", "opus", "flac")
# Literals in the views, repeated here once with their source.
TEMPERATURE_MAX = 2  # gateway.chat.parse_chat_params
MAX_COST_MULTIPLIER = (1, 100)  # gateway.chat.parse_chat_params
DIMENSIONS = (1, 4096)  # embed (gateway/views_capabilities.py, gateway/operations.py)
TTL_SECONDS = (10, 3600)  # realtime and voice session tokens
LIMIT = (1, 200, 50)  # the voices list cursor: low, high, default
MAX_PROMPT_IMAGE = 4000  # run_image
MAX_PROMPT_VISION = 20_000  # ai_vision
MAX_TTS_INPUT = 4096  # run_tts
MAX_RERANK_QUERY = 10_000  # ai_rerank
MAX_RERANK_DOCUMENTS = 1000  # ai_rerank
MAX_EXPECTED_OUTPUT_TOKENS = 1_000_000  # views_cost._parse
UPSCALE_FACTORS = [2, 4]  # ai_upscale
TRANSCRIPTION_FORMATS = ["json", "text", "verbose_json"]  # openai_transcriptions
AUDIO_MIME_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
}

# An 8x8 red PNG: small enough to read in an example, decodable by every image route.
EXAMPLE_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFUlEQVR42mO8IyLCgA0wMeAAg1MCANDoARQXWCREAAAAAElFTkSuQmCC"
)


def example_wav_base64() -> str:
    """A tenth of a second of 8-bit silence at 4 kHz as a WAV file: the shortest the sandbox transcribes."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(4000)
        out.writeframes(b"\x80" * 400)
    return base64.b64encode(buffer.getvalue()).decode()


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


def s(description: str = "", **schema: Any) -> dict[str, Any]:
    """A string schema (or any schema given `type`) with a description."""
    schema.setdefault("type", "string")
    if description:
        schema["description"] = description
    return schema


USD = s(
    "US dollars as an exact decimal string (at least two decimals, up to nine), e.g. `0.00000001`.",
    pattern=r"^-?\d+\.\d{2,9}$",
)


# --- Descriptions ---------------------------------------------------------------------------------

OVERVIEW = """The Infrai gateway API: one key, many AI vendors, one bill.

**Authentication.** Every call except this document and /v1/docs sends a project key:
`Authorization: Bearer ifr_pk_proj_...` (the prefix `ifr_pk_proj_` then 40 letters and digits).
Create keys in the console (Keys page) or with `POST /v1/account/keys`.

**Errors.** Every error is JSON: `{"error": {"code", "message", "field"?, "request_id", ...}}`.
`code` is a stable UPPER_SNAKE_CASE name, `field` names the offending request field when there is
one (e.g. `messages`, `messages[0].role`, `images[1].base64`), `request_id` is the call's id.
Upstream failures add `vendor`; 402 adds `balance_usd`, `available_usd`, `required_usd` and
`topup_url`; 405 adds `allowed`; 409 IDEMPOTENCY_IN_PROGRESS adds `retry_after_seconds`.
Authentication is checked before anything else, so a bad key is always a 401.

**Metadata.** Every JSON answer carries `_metadata`: `cost_usd` (what this call cost, as a decimal
string that reconciles line by line with the bill), `latency_ms`, `vendor` (who actually served
it; `infrai` for free calls answered by the gateway itself), `cache_hit`, `request_id` (UUID v7),
and `byok: true` when your own vendor key served it, `replayed: true` (with `original_request_id`)
when an idempotent retry returned a stored answer. The seeds' table calls this block `metadata`
while their SDK example reads `_metadata`: the API answers with `_metadata` only. Every answer of
an authenticated route, errors included, also has the `X-Request-Id` header.

**Idempotency.** Calls that cost money and are marked so below accept an idempotency key in the
`Idempotency-Key` header or the `idempotency_key` body field (the header wins). A retry with the
same key and the same body inside the window (24 h by default) returns the stored answer with
`_metadata.replayed: true` and `cost_usd: "0.00"`, and is not charged again. The same key with
another body is `422 IDEMPOTENCY_KEY_REUSED`; a retry while the first call still runs is
`409 IDEMPOTENCY_IN_PROGRESS` (retry after `retry_after_seconds`). Without a key, a client request
id (`X-Client-Request-Id` header or `request_id` body field) derives one:
`sha256(account_id + request_id + capability + content_hash)`. Creating a resource
(`POST /v1/account/keys`, `POST /v1/account/byok`) requires an explicit key. A failed call that
cost nothing frees its key, so the retry runs again.

**Credit.** Calls that cost money first hold their worst-case cost. When the available credit is
short the answer is `402 INSUFFICIENT_CREDIT` with `topup_url`; `POST /v1/account/topup` returns a
checkout URL instead.

**Routing and failover.** `model` (and `vendor`) choose who serves a call; otherwise `task` and
`prefer` rank the models your account can use. A retryable upstream failure (429, 5xx, timeout)
fails over to the next model whose worst-case cost is within `max_cost_multiplier` (1.5 by default)
times the primary's; `_metadata.vendor` says who answered.

**Sandbox.** The `sandbox` vendor serves every capability offline and deterministically (models
`sandbox-chat`, `sandbox-chat-mini`, `sandbox-chat-pro`, `sandbox-embed`, `sandbox-image`,
`sandbox-vision`, `sandbox-tts`, `sandbox-asr`, `sandbox-rerank`, `sandbox-upscale`,
`sandbox-realtime`); it is used when asked for by model or `vendor: "sandbox"`, or when no real
vendor is configured, and is always labelled `"vendor": "sandbox"`. It bills at its catalog prices.
Chat failure injection, for testing your error handling: a model suffix `-fail-429`, `-fail-500`
(any three-digit status), `-timeout` or `-cut-stream[-N]` (e.g. `sandbox-chat-fail-429`), or the
header `X-Sandbox-Fail: 429 | 500 | 503 | timeout | cut-stream`. An injected 429 answers
`503 UPSTREAM_RATE_LIMITED`, a 5xx `502 UPSTREAM_UNAVAILABLE`, a timeout `504 UPSTREAM_TIMEOUT`;
`cut-stream` ends a stream with an error event after N deltas (5 by default).

Unknown routes answer `404 NOT_FOUND` (after authentication).
"""

SANDBOX_CHAT_NOTE = (
    "Sandbox failure injection (chat only): `model: sandbox-chat-fail-429` (or `-fail-500`, `-timeout`, "
    "`-cut-stream`, `-cut-stream-N`), or the `X-Sandbox-Fail` header."
)

STREAM_AI_CHAT = """With `stream: true` the answer is `text/event-stream`: one `data: {json}` line per event,
then `data: [DONE]`.

- delta events: `{"delta": "text", "finish_reason": null, "index": 0}`
- the final event: `{"delta": "", "finish_reason": "stop", "index": 0, "usage": {...}, "_metadata": {...}}`
- if the vendor fails mid-stream (after failover is no longer possible): `{"error": {"code", "message", "vendor"}}`,
  then `[DONE]`; only what was delivered is billed.

Validation, routing and the credit hold happen before the stream starts, so those errors are plain
JSON error responses. Streamed calls are not idempotent: a retried stream runs (and bills) again.
Schemas: `AiChatStreamEvent`, `StreamError`."""

STREAM_OPENAI = """With `stream: true` the answer is `text/event-stream` in OpenAI's format: `data: {chunk}`
lines of `chat.completion.chunk` objects (the first delta carries `role: assistant`), a last chunk
with `finish_reason` and `_metadata`, with `stream_options.include_usage: true` one more chunk
with empty `choices` and `usage`, then `data: [DONE]`. A mid-stream vendor failure is sent as
`data: {"error": {"code", "message", "vendor"}}` before `[DONE]`. Streamed calls are not
idempotent. Schemas: `ChatCompletionChunk`, `StreamError`."""


# --- Errors and their responses -------------------------------------------------------------------

AUTH_CODES = ["MISSING_API_KEY", "MALFORMED_AUTHORIZATION", "MALFORMED_API_KEY", "INVALID_API_KEY"]
ROUTING_CODES = ["UNKNOWN_MODEL", "VENDOR_NOT_CONFIGURED", "NO_MODEL_AVAILABLE"]
UPSTREAM_400_CODES = ["INVALID_REQUEST", "UNSUPPORTED_CAPABILITY"]


def error_response(description: str, codes: list[str], schema: str = "Error") -> dict[str, Any]:
    text = description + (" Codes: " + ", ".join(f"`{c}`" for c in codes) + "." if codes else "")
    return {
        "description": text,
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
        "content": {JSON: {"schema": ref(schema)}},
        "x-error-codes": codes,
    }


def bad_request(*extra_codes: str, routed: bool = False, json_body: bool = True) -> dict[str, Any]:
    codes = ["INVALID_JSON"] if json_body else ["INVALID_MULTIPART"]  # a JSON body, or a form upload
    codes += ["MISSING_FIELD", "INVALID_FIELD", *extra_codes]
    if routed:
        codes += ROUTING_CODES + UPSTREAM_400_CODES
    return error_response("The request is invalid; `error.field` names the field.", list(dict.fromkeys(codes)))


def byok_unavailable() -> dict[str, Any]:
    return error_response(
        "Your own (BYOK) credential for a vendor this call needs cannot be read on this server.", ["BYOK_UNAVAILABLE"]
    )


def metered_errors(*, idempotent: bool = True, upstream: bool = True, json_body: bool = True) -> dict[str, Any]:
    """The error responses of a call that routes to a vendor and holds credit (and calls it, if `upstream`)."""
    responses: dict[str, Any] = {
        "400": bad_request(routed=True, json_body=json_body) if upstream else bad_request(*ROUTING_CODES),
        "402": error_response(
            "Not enough credit for this call's worst-case cost; see `topup_url`.",
            ["INSUFFICIENT_CREDIT"],
            "InsufficientCreditError",
        ),
    }
    if idempotent:
        responses["409"] = error_response(
            "An earlier call with this idempotency key is still running; retry after `retry_after_seconds`.",
            ["IDEMPOTENCY_IN_PROGRESS"],
        )
        responses["422"] = error_response(
            "This idempotency key was used with a different body.", ["IDEMPOTENCY_KEY_REUSED"]
        )
    if not upstream:
        responses["503"] = byok_unavailable()
        return responses
    responses["502"] = error_response(
        "The vendor failed, refused the credential or rejected the request (after failover); `error.vendor` says which.",
        ["UPSTREAM_UNAVAILABLE", "UPSTREAM_AUTH_FAILED", "UPSTREAM_REJECTED", "UPSTREAM_ERROR"],
    )
    responses["503"] = error_response(
        "The vendor rate-limited the call (after failover), or your own (BYOK) credential for it cannot be read.",
        ["UPSTREAM_RATE_LIMITED", "BYOK_UNAVAILABLE"],
    )
    responses["504"] = error_response("The vendor did not answer in time (after failover).", ["UPSTREAM_TIMEOUT"])
    return responses


def not_found(field: str) -> dict[str, Any]:
    return error_response(f"Nothing with that id in your account (`error.field` is `{field}`).", ["NOT_FOUND"])


# --- Schemas ------------------------------------------------------------------------------------


def common_routing_properties(capability: str) -> dict[str, Any]:
    return {
        "model": s(
            f"A model id from `GET /v1/models` that serves {capability} (e.g. `sandbox-{capability}`). Without it "
            "the gateway picks the best model your account can use.",
            minLength=1,
        ),
        "vendor": s(
            "Serve only from this vendor.",
            enum=sorted(VENDORS),
        ),
        "prefer": s("How to rank candidate models.", enum=list(routing.PREFERENCES), default="balanced"),
    }


# Capabilities whose views route with `task` too (gateway/operations.py); the others ignore it.
ROUTES_WITH_TASK = ("embed", "image", "tts", "rerank")


def capability_routing_properties(capability: str) -> dict[str, Any]:
    properties = common_routing_properties(capability)
    if capability in ROUTES_WITH_TASK:
        properties["task"] = s(
            "Prefer models tagged for this task, when no `model` or `vendor` is given.",
            enum=list(routing.TASKS),
            default="general",
        )
    return properties


IDEMPOTENCY_PROPERTY = s(
    "Idempotency key (or send the `Idempotency-Key` header, which wins).", minLength=1, maxLength=MAX_KEY_LENGTH
)
REQUEST_ID_PROPERTY = s(
    "Your own request id; without an idempotency key it derives one, so a retry with the same request id and "
    "body is not charged twice (also accepted as the `X-Client-Request-Id` header)."
)


def message_schema() -> dict[str, Any]:
    return obj(
        {
            "role": s(enum=list(ROLES)),
            "content": {
                "description": "Text, or a list of content parts (OpenAI style). May be null only with `tool_calls`.",
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}, {"type": "null"}],
            },
            "tool_calls": {"type": "array", "items": {"type": "object"}, "description": "An assistant's tool calls."},
            "tool_call_id": s("For `role: tool`: the call this answers."),
            "name": s(),
        },
        ["role"],
        description="One chat message. `content` is required unless the message has `tool_calls`.",
        anyOf=[
            {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
            {"required": ["tool_calls"], "properties": {"tool_calls": {"minItems": 1}}},
        ],
    )


def messages_property() -> dict[str, Any]:
    return {
        "description": "The conversation: a string (one user message) or a non-empty list of messages.",
        "oneOf": [
            {"type": "string", "minLength": 1, "pattern": r"\S"},
            {"type": "array", "minItems": 1, "items": ref("Message")},
        ],
    }


def chat_properties() -> dict[str, Any]:
    return {
        "messages": messages_property(),
        "model": s(
            "A chat model id from `GET /v1/models` (e.g. `sandbox-chat`). Without it `task` and `prefer` choose.",
            minLength=1,
        ),
        "vendor": s("Serve only from this vendor.", enum=sorted(VENDORS)),
        "task": s("What the call is for, when no `model` is given.", enum=list(routing.TASKS), default="general"),
        "prefer": s("How to rank candidate models.", enum=list(routing.PREFERENCES), default="balanced"),
        "temperature": {"type": "number", "minimum": 0, "maximum": TEMPERATURE_MAX},
        "max_tokens": {
            "type": "integer",
            "minimum": 1,
            "description": "Most output tokens; at most the chosen model's output limit (else 400 on `max_tokens`).",
        },
        "tools": {"type": "array", "items": {"type": "object"}, "description": "Tool (function) definitions."},
        "response_format": obj(
            {
                "type": s(enum=["text", "json_object", "json_schema"]),
                "json_schema": {"type": "object", "description": "For `type: json_schema`."},
            },
            ["type"],
        ),
        "cache_strategy": s(
            "`vendor`: the vendor's prompt caching (cached input billed at its cached price); `infrai`: an identical "
            "call inside the cache window is answered from the gateway's cache for $0 (`_metadata.cache_hit`); "
            "`none`: neither.",
            enum=list(CACHE_STRATEGIES),
            default="vendor",
        ),
        "batch_mode": {
            "type": "boolean",
            "default": False,
            "description": "Bill at the model's batch price where it has one.",
        },
        "max_cost_multiplier": {
            "type": "number",
            "minimum": MAX_COST_MULTIPLIER[0],
            "maximum": MAX_COST_MULTIPLIER[1],
            "default": 1.5,
            "description": "Failover cost cap: fall over only to models whose worst case is within this multiple "
            "of the primary model's.",
        },
        "stream": {"type": "boolean", "default": False, "description": "Answer with Server-Sent Events."},
        "idempotency_key": IDEMPOTENCY_PROPERTY,
        "request_id": REQUEST_ID_PROPERTY,
    }


def metadata_schema() -> dict[str, Any]:
    return obj(
        {
            "cost_usd": USD,
            "latency_ms": {"type": "integer", "minimum": 0},
            "vendor": s("The vendor that served the call (`infrai` when the gateway answered itself)."),
            "cache_hit": {"type": "boolean"},
            "request_id": s("This call's id, a UUID v7 (also the `X-Request-Id` header).", format="uuid"),
            "byok": {"type": "boolean", "description": "Present and true when your own vendor key served the call."},
            "replayed": {"type": "boolean", "description": "Present and true on an idempotent replay (cost 0)."},
            "original_request_id": s("On a replay: the request id of the call that was charged.", format="uuid"),
        },
        ["cost_usd", "latency_ms", "vendor", "cache_hit", "request_id"],
        description="What every JSON answer carries as `_metadata` (spelled with the underscore).",
    )


def error_schema() -> dict[str, Any]:
    return obj(
        {
            "error": obj(
                {
                    "code": s("A stable UPPER_SNAKE_CASE error name.", pattern=r"^[A-Z][A-Z0-9_]*$"),
                    "message": s("A human explanation, safe to show."),
                    "field": s("The request field at fault, when there is one (e.g. `messages[0].role`)."),
                    "request_id": s(format="uuid"),
                    "vendor": s("Upstream errors: the vendor that failed last."),
                    "allowed": {"type": "array", "items": {"type": "string"}, "description": "Accepted values."},
                    "retry_after_seconds": {"type": "integer"},
                    "byok_id": s("BYOK_UNAVAILABLE: the credential that cannot be read."),
                },
                ["code", "message", "request_id"],
            )
        },
        ["error"],
    )


def insufficient_credit_schema() -> dict[str, Any]:
    return {
        "allOf": [
            ref("Error"),
            obj(
                {
                    "error": obj(
                        {
                            "code": {"const": "INSUFFICIENT_CREDIT"},
                            "balance_usd": USD,
                            "available_usd": USD,
                            "required_usd": USD,
                            "topup_url": s("Where to top up, with a suggested amount.", format="uri"),
                        },
                        ["balance_usd", "available_usd", "required_usd", "topup_url"],
                    )
                }
            ),
        ]
    }


def usage_schema(completion: bool = True) -> dict[str, Any]:
    names = ["prompt_tokens", "completion_tokens", "total_tokens"] if completion else ["prompt_tokens", "total_tokens"]
    return obj({name: {"type": "integer", "minimum": 0} for name in names}, names)


def media_schema(kind: str) -> dict[str, Any]:
    limit = MAX_MEDIA_BYTES // (1024 * 1024)
    return {
        "description": f"{kind}: `{{url}}` (a public http(s) URL, fetched by the gateway), `{{base64, mime?}}`, "
        f"a base64 `data:` URL, or a bare base64 string; at most {limit} MB.",
        "oneOf": [
            obj({"url": s(format="uri")}, ["url"]),
            obj({"base64": s(contentEncoding="base64"), "mime": s(examples=["image/png"])}, ["base64"]),
            s("A URL, a base64 data: URL or bare base64."),
        ],
    }


def list_meta(items: str, item_schema: dict[str, Any]) -> dict[str, Any]:
    return obj(
        {
            items: {"type": "array", "items": item_schema},
            "total_count": {"type": "integer"},
            "next_cursor": s("Pass as `cursor` for the next page; null on the last.", type=["string", "null"]),
            "_metadata": ref("Metadata"),
        },
        [items, "total_count", "next_cursor", "_metadata"],
    )


def schemas() -> dict[str, Any]:
    providers = byok.providers()
    chat_result = obj(
        {
            "content": s("The reply text."),
            "finish_reason": s(examples=["stop", "length", "tool_calls"]),
            "model": s("The model that answered."),
            "usage": ref("Usage"),
            "tool_calls": {"type": "array", "items": {"type": "object"}, "description": "When the model called tools."},
            "_metadata": ref("Metadata"),
        },
        ["content", "finish_reason", "model", "usage", "_metadata"],
    )
    openai_chat = chat_properties()
    openai_chat.update(
        {
            "max_completion_tokens": {
                "type": "integer",
                "minimum": 1,
                "description": "OpenAI's newer name for `max_tokens`; when present it is used instead.",
            },
            "stream_options": obj({"include_usage": {"type": "boolean"}}),
        }
    )
    cost_properties = {
        **{k: v for k, v in chat_properties().items() if k not in ("idempotency_key", "request_id", "stream")},
        "expected_output_tokens": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_EXPECTED_OUTPUT_TOKENS,
            "default": DEFAULT_EXPECTED_OUTPUT_TOKENS,
        },
    }
    estimate = obj(
        {
            "model": s(),
            "vendor": s(),
            "vendor_region": s("The chip or region the price is for, if any.", type=["string", "null"]),
            "available": {"type": "boolean", "description": "Whether your account can use this model now."},
            "prompt_tokens": {"type": "integer"},
            "expected_output_tokens": {"type": "integer"},
            "estimated_cost_usd": USD,
            "breakdown": obj(
                {
                    "input_usd": USD,
                    "cached_input_usd": USD,
                    "output_usd": USD,
                    "total_usd": USD,
                    "price_currency": s(examples=["USD", "CNY"]),
                    "input_per_mtok": s("Price per million input tokens, in price_currency."),
                    "output_per_mtok": s(),
                    "usd_per_currency_unit": s(),
                    "batch_mode": {"type": "boolean"},
                    "cache_strategy": s(enum=list(CACHE_STRATEGIES)),
                    "repeat_with_infrai_cache_usd": {"type": ["string", "null"]},
                }
            ),
            "_metadata": ref("Metadata"),
        },
        ["model", "vendor", "prompt_tokens", "expected_output_tokens", "estimated_cost_usd", "breakdown"],
        description="An estimate computed exactly as the bill is: with the real output length it equals the charge.",
    )
    session_token = obj(
        {
            "session_id": s(),
            "token": s("A signed, short-lived session token."),
            "expires_at": s(format="date-time"),
            "ws_url": s(
                "The voice session's websocket: open it and send `{type: start, token}` first (`ws_url?token=...` "
                "works too, but URLs end up in access logs); "
                "stream 16 kHz mono PCM16 as binary frames; replies arrive as transcript, reply, audio (a binary "
                "WAV frame) and cost events. Browsers must connect from the console's origin."
            ),
            "ice_servers": {"type": "array", "items": {"type": "object"}},
            "model": s(),
            "voice": {"type": ["string", "null"]},
            "_metadata": ref("Metadata"),
        },
        ["session_id", "token", "expires_at", "ws_url", "ice_servers", "model", "_metadata"],
    )
    project_key = obj(
        {
            "id": s(),
            "object": {"const": "project_key"},
            "label": s(),
            "prefix": s("The key's first characters, for recognising it."),
            "project": s(),
            "created_at": s(format="date-time"),
            "last_used_at": {"type": ["string", "null"], "format": "date-time"},
            "revoked_at": {"type": ["string", "null"], "format": "date-time"},
        },
        ["id", "object", "label", "prefix", "project", "created_at", "last_used_at", "revoked_at"],
    )
    credential = obj(
        {
            "id": s(),
            "object": {"const": "byok_credential"},
            "provider": s(enum=providers),
            "alias": s(),
            "fingerprint": s("A short recognisable form of the key (first 3 and last 4 characters and a tag)."),
            "created_at": s(format="date-time"),
            "last_test_at": {"type": ["string", "null"], "format": "date-time"},
            "last_test_ok": {"type": ["boolean", "null"]},
            "last_test_latency_ms": {"type": ["integer", "null"]},
            "last_test_error": {"type": ["string", "null"]},
            "revoked_at": {"type": ["string", "null"], "format": "date-time"},
        },
        ["id", "object", "provider", "alias", "fingerprint", "created_at", "revoked_at"],
        description="A registered vendor credential. The secret is never returned.",
    )
    return {
        "Error": error_schema(),
        "InsufficientCreditError": insufficient_credit_schema(),
        "Metadata": metadata_schema(),
        "Usage": usage_schema(),
        "EmbedUsage": usage_schema(completion=False),
        "Message": message_schema(),
        # Chat
        "ChatRequest": obj(chat_properties(), ["messages"], description=SANDBOX_CHAT_NOTE),
        "ChatResult": chat_result,
        "AiChatStreamEvent": obj(
            {
                "delta": s("The next piece of text (empty in the final event)."),
                "finish_reason": {"type": ["string", "null"]},
                "index": {"type": "integer", "const": 0},
                "usage": ref("Usage"),
                "_metadata": ref("Metadata"),
            },
            ["delta", "finish_reason", "index"],
            description="One `data:` event of a streamed `/v1/ai/chat`; the final one has `usage` and `_metadata`.",
        ),
        "StreamError": obj(
            {"error": obj({"code": s(), "message": s(), "vendor": s()}, ["code", "message"])},
            ["error"],
            description="Sent as a `data:` event when the vendor fails after the stream started.",
        ),
        "ChatCompletionRequest": obj(
            openai_chat,
            ["messages"],
            description="OpenAI Chat Completions, plus the gateway's own fields. Other OpenAI fields are accepted "
            "and ignored. " + SANDBOX_CHAT_NOTE,
        ),
        "ChatCompletion": obj(
            {
                "id": s(examples=["chatcmpl-0190..."]),
                "object": {"const": "chat.completion"},
                "created": {"type": "integer"},
                "model": s(),
                "choices": {
                    "type": "array",
                    "items": obj(
                        {
                            "index": {"type": "integer"},
                            "message": obj(
                                {
                                    "role": {"const": "assistant"},
                                    "content": s(),
                                    "tool_calls": {"type": "array", "items": {"type": "object"}},
                                },
                                ["role", "content"],
                            ),
                            "finish_reason": s(),
                            "logprobs": {"type": "null"},
                        },
                        ["index", "message", "finish_reason"],
                    ),
                },
                "usage": ref("Usage"),
                "_metadata": ref("Metadata"),
            },
            ["id", "object", "created", "model", "choices", "usage", "_metadata"],
        ),
        "ChatCompletionChunk": obj(
            {
                "id": s(),
                "object": {"const": "chat.completion.chunk"},
                "created": {"type": "integer"},
                "model": s(),
                "choices": {
                    "type": "array",
                    "items": obj(
                        {
                            "index": {"type": "integer"},
                            "delta": obj({"role": s(), "content": s()}),
                            "finish_reason": {"type": ["string", "null"]},
                            "logprobs": {"type": "null"},
                        }
                    ),
                },
                "usage": ref("Usage"),
                "_metadata": ref("Metadata"),
            },
            ["id", "object", "created", "model", "choices"],
        ),
        # Embeddings
        "EmbedRequest": obj(
            {
                "input": {
                    "description": f"A string or a list of 1 to {MAX_EMBED_INPUTS} non-empty strings.",
                    "oneOf": [
                        {"type": "string", "minLength": 1},
                        {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_EMBED_INPUTS,
                            "items": {"type": "string", "minLength": 1},
                        },
                    ],
                },
                "dimensions": {"type": "integer", "minimum": DIMENSIONS[0], "maximum": DIMENSIONS[1]},
                **capability_routing_properties("embed"),
                "idempotency_key": IDEMPOTENCY_PROPERTY,
                "request_id": REQUEST_ID_PROPERTY,
            },
            ["input"],
        ),
        "EmbedResult": obj(
            {
                "embeddings": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                "model": s(),
                "usage": ref("EmbedUsage"),
                "_metadata": ref("Metadata"),
            },
            ["embeddings", "model", "usage", "_metadata"],
        ),
        "EmbeddingsRequest": {
            "allOf": [
                ref("EmbedRequest"),
                obj({"encoding_format": s(enum=["float", "base64"], default="float")}),
            ],
            "description": "OpenAI Embeddings, plus the gateway's fields. `base64` is little-endian float32.",
        },
        "EmbeddingList": obj(
            {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": obj(
                        {
                            "object": {"const": "embedding"},
                            "index": {"type": "integer"},
                            "embedding": {
                                "oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]
                            },
                        },
                        ["object", "index", "embedding"],
                    ),
                },
                "model": s(),
                "usage": ref("EmbedUsage"),
                "_metadata": ref("Metadata"),
            },
            ["object", "data", "model", "usage", "_metadata"],
        ),
        # Images
        "ImageRequest": obj(
            {
                "prompt": s(minLength=1, maxLength=MAX_PROMPT_IMAGE),
                "size": s(
                    "Width x height. Each vendor serves its own sizes; the sandbox: 256x256, 512x512, 1024x1024, "
                    "1792x1024, 1024x1792, 1536x1024 and 1024x1536 (others: 400 `INVALID_REQUEST`).",
                    pattern=SIZE_PATTERN,
                    default="1024x1024",
                ),
                "n": {"type": "integer", "minimum": 1, "maximum": MAX_IMAGES, "default": 1},
                "response_format": s("`b64_json` also returns each image as base64 (`b64`)."),
                "b64": {"type": "boolean", "description": "Same as `response_format: b64_json`."},
                **capability_routing_properties("image"),
                "idempotency_key": IDEMPOTENCY_PROPERTY,
                "request_id": REQUEST_ID_PROPERTY,
            },
            ["prompt"],
        ),
        "ImageResult": obj(
            {
                "images": {
                    "type": "array",
                    "items": obj(
                        {
                            "url": s("A signed URL, valid for 24 hours.", format="uri"),
                            "expires_at": s(format="date-time"),
                            "b64": s(contentEncoding="base64"),
                        },
                        ["url"],
                    ),
                },
                "_metadata": ref("Metadata"),
            },
            ["images", "_metadata"],
        ),
        "ImagesGenerationsRequest": {
            "allOf": [
                ref("ImageRequest"),
                obj({"response_format": s(enum=["url", "b64_json"], default="url")}),
            ],
            "description": "OpenAI Images generations, plus the gateway's fields.",
        },
        "ImagesResponse": obj(
            {
                "created": {"type": "integer"},
                "data": {
                    "type": "array",
                    "items": obj({"url": s(format="uri"), "b64_json": s(contentEncoding="base64")}),
                },
                "_metadata": ref("Metadata"),
            },
            ["created", "data", "_metadata"],
        ),
        "UpscaleRequest": obj(
            {
                "image": media_schema("The image"),
                "factor": {"type": "integer", "enum": UPSCALE_FACTORS, "default": 2},
                **capability_routing_properties("upscale"),
                "idempotency_key": IDEMPOTENCY_PROPERTY,
                "request_id": REQUEST_ID_PROPERTY,
            },
            ["image"],
        ),
        "UpscaleResult": obj(
            {
                "image": s("A signed URL of the upscaled PNG, valid for 24 hours.", format="uri"),
                "expires_at": s(format="date-time"),
                "original_size": obj({"width": {"type": "integer"}, "height": {"type": "integer"}}),
                "new_size": obj({"width": {"type": "integer"}, "height": {"type": "integer"}}),
                "_metadata": ref("Metadata"),
            },
            ["image", "original_size", "new_size", "_metadata"],
        ),
        # Vision
        "VisionRequest": obj(
            {
                "prompt": s(minLength=1, maxLength=MAX_PROMPT_VISION),
                "images": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_IMAGES,
                    "items": media_schema("An image"),
                },
                **capability_routing_properties("vision"),
                "idempotency_key": IDEMPOTENCY_PROPERTY,
                "request_id": REQUEST_ID_PROPERTY,
            },
            ["prompt", "images"],
        ),
        # Speech
        "TtsRequest": obj(
            {
                "input": s("The text to speak.", minLength=1, maxLength=MAX_TTS_INPUT),
                "voice": s("A voice id from `GET /v1/ai/tts/voices`, or an OpenAI voice name (alloy, nova...)."),
                "format": s(enum=list(AUDIO_FORMATS), default="mp3"),
                **capability_routing_properties("tts"),
                "idempotency_key": IDEMPOTENCY_PROPERTY,
                "request_id": REQUEST_ID_PROPERTY,
            },
            ["input"],
        ),
        "TtsResult": obj(
            {
                "audio_url": s("A signed URL of the audio file.", format="uri"),
                "format": s(enum=list(AUDIO_FORMATS)),
                "expires_at": s(format="date-time"),
                "duration_seconds": {"type": "number"},
                "_metadata": ref("Metadata"),
            },
            ["audio_url", "format", "expires_at", "duration_seconds", "_metadata"],
        ),
        "SpeechRequest": obj(
            {
                "input": s("The text to speak.", minLength=1, maxLength=MAX_TTS_INPUT),
                "voice": s("A voice id or an OpenAI voice name."),
                "response_format": s(enum=list(AUDIO_FORMATS), default="mp3"),
                **capability_routing_properties("tts"),
            },
            ["input"],
            description="OpenAI Audio speech. (`/v1/ai/tts` calls the format field `format`; here it is "
            "`response_format`, as in OpenAI's API.)",
        ),
        "AsrRequest": obj(
            {
                "audio": media_schema("The audio (WAV, MP3, FLAC, Ogg...)"),
                "language": s("The spoken language, e.g. `en` (the sandbox recognises English only)."),
                **capability_routing_properties("asr"),
                "idempotency_key": IDEMPOTENCY_PROPERTY,
                "request_id": REQUEST_ID_PROPERTY,
            },
            ["audio"],
        ),
        "AsrResult": obj(
            {
                "text": s(),
                "language": s(),
                "duration_seconds": {"type": "number"},
                "segments": {
                    "type": "array",
                    "items": obj(
                        {
                            "id": {"type": "integer"},
                            "start": {"type": "number"},
                            "end": {"type": "number"},
                            "text": s(),
                        }
                    ),
                },
                "_metadata": ref("Metadata"),
            },
            ["text", "language", "duration_seconds", "segments", "_metadata"],
        ),
        "TranscriptionRequest": obj(
            {
                "file": s("The audio file.", contentMediaType="application/octet-stream"),
                "model": s(minLength=1),
                "language": s(),
                "vendor": s(enum=sorted(VENDORS)),
                "response_format": s(enum=TRANSCRIPTION_FORMATS, default="json"),
            },
            ["file"],
        ),
        "Transcription": obj(
            {
                "text": s(),
                "task": {"const": "transcribe"},
                "language": s(),
                "duration": {"type": "number"},
                "segments": {"type": "array", "items": {"type": "object"}},
                "_metadata": ref("Metadata"),
            },
            ["text", "_metadata"],
            description="`json`: text and _metadata; `verbose_json` adds task, language, duration and segments.",
        ),
        "VoiceList": list_meta(
            "voices",
            obj(
                {"id": s(), "name": s(), "language": s(), "gender": {"type": ["string", "null"]}, "vendor": s()},
                ["id", "name", "vendor"],
            ),
        ),
        # Rerank
        "RerankRequest": obj(
            {
                "query": s(minLength=1, maxLength=MAX_RERANK_QUERY),
                "documents": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_RERANK_DOCUMENTS,
                    "items": {
                        "oneOf": [
                            {"type": "string", "minLength": 1},
                            obj({"text": s(minLength=1)}, ["text"]),
                        ]
                    },
                },
                "top_n": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Keep the best N (at most the number of documents).",
                },
                **capability_routing_properties("rerank"),
                "idempotency_key": IDEMPOTENCY_PROPERTY,
                "request_id": REQUEST_ID_PROPERTY,
            },
            ["query", "documents"],
        ),
        "RerankResult": obj(
            {
                "results": {
                    "type": "array",
                    "items": obj(
                        {"index": {"type": "integer"}, "relevance_score": {"type": "number"}},
                        ["index", "relevance_score"],
                    ),
                    "description": "Best first; `index` is the document's position in the request.",
                },
                "model": s(),
                "_metadata": ref("Metadata"),
            },
            ["results", "model", "_metadata"],
        ),
        # Tokens and cost
        "TokensCountRequest": obj(
            {
                "messages": messages_property(),
                "model": s("Count with this model's tokenizer.", minLength=1, default="sandbox-chat"),
                "tools": {"type": "array", "items": {"type": "object"}},
            },
            ["messages"],
        ),
        "TokensCount": obj(
            {"prompt_tokens": {"type": "integer"}, "model": s(), "encoding": s(), "_metadata": ref("Metadata")},
            ["prompt_tokens", "model", "encoding", "_metadata"],
        ),
        "CostEstimateRequest": obj(
            cost_properties,
            ["messages"],
            description="A chat request (validated exactly like `/v1/ai/chat`) and the expected output length.",
        ),
        "CostEstimate": estimate,
        "CostCompareRequest": obj(
            {
                **cost_properties,
                "models": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_COMPARE_MODELS,
                    "items": {"type": "string"},
                    "description": "Chat model ids to compare; without it every chat model your account can use.",
                },
            },
            ["messages"],
        ),
        "CostComparison": obj(
            {"estimates": {"type": "array", "items": ref("CostEstimate")}, "_metadata": ref("Metadata")},
            ["estimates", "_metadata"],
            description="Cheapest first.",
        ),
        # Realtime
        "SessionRequest": obj(
            {
                **capability_routing_properties("realtime"),
                "voice": s(),
                "ttl_seconds": {"type": "integer", "minimum": TTL_SECONDS[0], "maximum": TTL_SECONDS[1]},
            }
        ),
        "SessionToken": session_token,
        # Models
        "ModelList": obj(
            {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": obj(
                        {
                            "id": s(),
                            "object": {"const": "model"},
                            "created": {"type": "integer"},
                            "owned_by": s("The vendor."),
                            "capabilities": {"type": "array", "items": s()},
                        },
                        ["id", "object", "created", "owned_by", "capabilities"],
                    ),
                },
                "_metadata": ref("Metadata"),
            },
            ["object", "data", "_metadata"],
        ),
        # Account
        "Balance": obj(
            {"balance_usd": USD, "held_usd": USD, "available_usd": USD, "_metadata": ref("Metadata")},
            ["balance_usd", "held_usd", "available_usd", "_metadata"],
            description="`available_usd` is the balance less what in-flight calls hold.",
        ),
        "TopupRequest": obj(
            {
                "amount_usd": {
                    "description": f"US dollars, {settings.TOPUP_MIN_USD} to {settings.TOPUP_MAX_USD}, at most two "
                    'decimals: a number or a decimal string (`25`, `"25.50"`).',
                    "oneOf": [
                        {
                            "type": "number",
                            "minimum": float(settings.TOPUP_MIN_USD),
                            "maximum": float(settings.TOPUP_MAX_USD),
                        },
                        {"type": "string", "pattern": r"^\$?\d+(\.\d{1,2})?$"},
                    ],
                }
            },
            ["amount_usd"],
        ),
        "TopupResult": obj(
            {"checkout_url": s("Open it to pay.", format="uri"), "_metadata": ref("Metadata")},
            ["checkout_url", "_metadata"],
        ),
        "ProjectKey": project_key,
        "KeyList": obj(
            {
                "object": {"const": "list"},
                "data": {"type": "array", "items": ref("ProjectKey")},
                "_metadata": ref("Metadata"),
            },
            ["object", "data", "_metadata"],
        ),
        "KeyCreateRequest": obj(
            {
                "label": s("A name for the key.", maxLength=MAX_LABEL_LENGTH, default=""),
                "idempotency_key": s(
                    "Required (or the `Idempotency-Key` header): a retry returns the same key, without its secret.",
                    minLength=1,
                    maxLength=MAX_KEY_LENGTH,
                ),
            },
            ["idempotency_key"],
        ),
        "KeyCreated": {
            "allOf": [
                ref("ProjectKey"),
                obj(
                    {
                        "key": s(
                            "The secret, shown only in this answer; null on a replay.",
                            type=["string", "null"],
                            pattern="^ifr_pk_proj_",
                        ),
                        "replayed": {"type": "boolean"},
                        "message": s("On a replay: why `key` is null."),
                        "_metadata": ref("Metadata"),
                    },
                    ["key", "replayed", "_metadata"],
                ),
            ]
        },
        "ByokCredential": credential,
        "ByokCredentialAnswer": {"allOf": [ref("ByokCredential"), obj({"_metadata": ref("Metadata")})]},
        "ByokList": obj(
            {
                "object": {"const": "list"},
                "data": {"type": "array", "items": ref("ByokCredential")},
                "providers": {"type": "array", "items": s(enum=providers)},
                "_metadata": ref("Metadata"),
            },
            ["object", "data", "providers", "_metadata"],
        ),
        "ByokRegisterRequest": obj(
            {
                "provider": s(enum=providers),
                "alias": s(
                    "Your name for it, unique among your active credentials.",
                    minLength=1,
                    maxLength=byok.MAX_ALIAS_LENGTH,
                ),
                "credentials": obj(
                    {
                        "api_key": s(
                            "The vendor key (write-only).",
                            minLength=1,
                            maxLength=byok.MAX_API_KEY_LENGTH,
                            pattern=r"^\s*[^\s]+\s*$",
                        ),
                        "base_url": s(
                            "The vendor endpoint; required for `openai_compatible`, optional otherwise. A public "
                            "http(s) URL without user, password, query or fragment.",
                            format="uri",
                            maxLength=byok.MAX_BASE_URL_LENGTH,
                        ),
                    },
                    ["api_key"],
                    additionalProperties=False,
                ),
                "idempotency_key": s(
                    "Required (or the `Idempotency-Key` header).", minLength=1, maxLength=MAX_KEY_LENGTH
                ),
            },
            ["provider", "alias", "credentials", "idempotency_key"],
        ),
        "ByokRegistered": {
            "allOf": [
                ref("ByokCredential"),
                obj({"replayed": {"type": "boolean"}, "_metadata": ref("Metadata")}, ["replayed", "_metadata"]),
            ]
        },
        "ByokTestResult": obj(
            {
                "ok": {"type": "boolean"},
                "latency_ms": {"type": "integer"},
                "error": s("Why the test failed (the secret is never included)."),
                "credential": ref("ByokCredential"),
                "_metadata": ref("Metadata"),
            },
            ["ok", "latency_ms", "credential", "_metadata"],
        ),
    }


# --- Operations -----------------------------------------------------------------------------------


def json_body(schema: str, example: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": ref(schema), "example": example}}}


def ok(schema: str, description: str = "OK", status: str = "200") -> dict[str, Any]:
    return {
        status: {
            "description": description,
            "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
            "content": {JSON: {"schema": ref(schema)}},
        }
    }


def operation(
    op_id: str,
    tag: str,
    summary: str,
    description: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "tags": [tag], "summary": summary, "description": description}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    all_responses = dict(responses)
    if public:
        op["security"] = []
    else:
        all_responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
        all_responses["405"] = {"$ref": "#/components/responses/MethodNotAllowed"}
    op["responses"] = dict(sorted(all_responses.items()))
    return op


def p(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


IDEMPOTENT_HEADERS = [p("Idempotency-Key"), p("X-Client-Request-Id")]


def chat_paths() -> dict[str, Any]:
    chat_example = {
        "model": "sandbox-chat",
        "messages": [{"role": "user", "content": "Say hello in five words."}],
        "max_tokens": 64,
    }
    ai_chat_200 = ok("ChatResult", "The reply (or, with `stream: true`, an event stream).")
    ai_chat_200["200"]["content"][SSE] = {
        "schema": {"type": "string", "description": STREAM_AI_CHAT},
        "example": 'data: {"delta": "Hello", "finish_reason": null, "index": 0}\n\n'
        'data: {"delta": "", "finish_reason": "stop", "index": 0, "usage": {...}, "_metadata": {...}}\n\n'
        "data: [DONE]\n\n",
    }
    completions_200 = ok("ChatCompletion", "The completion (or, with `stream: true`, an event stream).")
    completions_200["200"]["content"][SSE] = {
        "schema": {"type": "string", "description": STREAM_OPENAI},
        "example": 'data: {"id": "chatcmpl-...", "object": "chat.completion.chunk", "choices": [{"index": 0, '
        '"delta": {"role": "assistant", "content": "Hello"}, "finish_reason": null}], ...}\n\n'
        "data: [DONE]\n\n",
    }
    chat_params = [*IDEMPOTENT_HEADERS, p("X-Sandbox-Fail")]
    return {
        "/ai/chat": {
            "post": operation(
                "aiChat",
                "Chat",
                "Chat with any model",
                "The gateway's chat call (`ai.chat`): validation, routing with failover within the cost cap, "
                "an optional response cache, and the bill in `_metadata`. `messages` may be a plain string.\n\n"
                + STREAM_AI_CHAT
                + "\n\n"
                + SANDBOX_CHAT_NOTE,
                {**ai_chat_200, **metered_errors()},
                body=json_body("ChatRequest", chat_example),
                parameters=chat_params,
            )
        },
        "/chat/completions": {
            "post": operation(
                "createChatCompletion",
                "OpenAI-compatible",
                "OpenAI Chat Completions",
                "The same flow as `/v1/ai/chat` in OpenAI's shape, so the official `openai` SDK works with "
                "`base_url=<host>/v1`. Accepts `max_tokens` or `max_completion_tokens` (the latter wins).\n\n"
                + STREAM_OPENAI
                + "\n\n"
                + SANDBOX_CHAT_NOTE,
                {**completions_200, **metered_errors()},
                body=json_body("ChatCompletionRequest", chat_example),
                parameters=chat_params,
            )
        },
    }


def capability_paths() -> dict[str, Any]:
    wav = example_wav_base64()
    return {
        "/ai/embed": {
            "post": operation(
                "aiEmbed",
                "Embeddings",
                "Embed text",
                "Unit-length embedding vectors for one or more texts, billed per input token.",
                {**ok("EmbedResult"), **metered_errors()},
                body=json_body(
                    "EmbedRequest", {"model": "sandbox-embed", "input": ["a cat sat", "tax law"], "dimensions": 8}
                ),
                parameters=IDEMPOTENT_HEADERS,
            )
        },
        "/embeddings": {
            "post": operation(
                "createEmbedding",
                "OpenAI-compatible",
                "OpenAI Embeddings",
                "`/v1/ai/embed` in OpenAI's shape (`data[].embedding`, optionally base64 float32).",
                {**ok("EmbeddingList"), **metered_errors()},
                body=json_body(
                    "EmbeddingsRequest", {"model": "sandbox-embed", "input": "hello world", "dimensions": 8}
                ),
                parameters=IDEMPOTENT_HEADERS,
            )
        },
        "/ai/image": {
            "post": operation(
                "aiImage",
                "Images",
                "Generate images",
                "Images from a prompt, returned as signed URLs valid for 24 hours (and base64 on request); "
                "billed per image.",
                {**ok("ImageResult"), **metered_errors()},
                body=json_body(
                    "ImageRequest", {"model": "sandbox-image", "prompt": "a red kite over the sea", "size": "256x256"}
                ),
                parameters=IDEMPOTENT_HEADERS,
            )
        },
        "/images/generations": {
            "post": operation(
                "createImage",
                "OpenAI-compatible",
                "OpenAI Images generations",
                "`/v1/ai/image` in OpenAI's shape.",
                {**ok("ImagesResponse"), **metered_errors()},
                body=json_body(
                    "ImagesGenerationsRequest",
                    {"model": "sandbox-image", "prompt": "a red kite over the sea", "size": "256x256", "n": 1},
                ),
                parameters=IDEMPOTENT_HEADERS,
            )
        },
        "/ai/image/upscale": {
            "post": operation(
                "aiImageUpscale",
                "Images",
                "Upscale an image",
                "Enlarge an image 2x or 4x; the result is a signed PNG URL. Billed per image.",
                {**ok("UpscaleResult"), **metered_errors()},
                body=json_body(
                    "UpscaleRequest", {"model": "sandbox-upscale", "image": EXAMPLE_PNG_BASE64, "factor": 2}
                ),
                parameters=IDEMPOTENT_HEADERS,
            )
        },
        "/ai/vision": {
            "post": operation(
                "aiVision",
                "Vision",
                "Ask about images",
                f"A prompt about 1 to {MAX_IMAGES} images; answers like `/v1/ai/chat` (a ChatResult). Billed per token, "
                "images counted as input tokens.",
                {**ok("ChatResult"), **metered_errors()},
                body=json_body(
                    "VisionRequest",
                    {
                        "model": "sandbox-vision",
                        "prompt": "What colour is this?",
                        "images": [{"base64": EXAMPLE_PNG_BASE64, "mime": "image/png"}],
                    },
                ),
                parameters=IDEMPOTENT_HEADERS,
            )
        },
        "/ai/tts": {
            "post": operation(
                "aiTts",
                "Speech",
                "Text to speech",
                "Speech audio for a text, returned as a signed URL. Billed per thousand characters.",
                {**ok("TtsResult"), **metered_errors()},
                body=json_body(
                    "TtsRequest",
                    {"model": "sandbox-tts", "input": "Hello from Infrai.", "voice": "alloy", "format": "wav"},
                ),
                parameters=IDEMPOTENT_HEADERS,
            )
        },
        "/audio/speech": {
            "post": operation(
                "createSpeech",
                "OpenAI-compatible",
                "OpenAI Audio speech",
                "The audio bytes themselves (OpenAI's shape). There is no JSON body to carry `_metadata`, so the cost "
                "and vendor come as the headers `X-Infrai-Cost-Usd` and `X-Infrai-Vendor`. Idempotency keys are not "
                "used on this route.",
                {
                    "200": {
                        "description": "The audio, in the asked format.",
                        "headers": {
                            "X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"},
                            "X-Infrai-Cost-Usd": {"description": "What the call cost, in USD.", "schema": USD},
                            "X-Infrai-Vendor": {"description": "The vendor that served it.", "schema": s()},
                        },
                        "content": {
                            mime: {"schema": {"type": "string", "contentMediaType": mime}}
                            for mime in dict.fromkeys(AUDIO_MIME_TYPES[f] for f in AUDIO_FORMATS)
                        },
                    },
                    **metered_errors(idempotent=False),
                },
                body=json_body(
                    "SpeechRequest",
                    {"model": "sandbox-tts", "input": "Hello from Infrai.", "voice": "alloy", "response_format": "wav"},
                ),
            )
        },
        "/ai/asr": {
            "post": operation(
                "aiAsr",
                "Speech",
                "Speech to text",
                "A transcript with timed segments. Billed per minute of audio.",
                {**ok("AsrResult"), **metered_errors()},
                body=json_body(
                    "AsrRequest",
                    {"model": "sandbox-asr", "audio": {"base64": wav, "mime": "audio/wav"}, "language": "en"},
                ),
                parameters=IDEMPOTENT_HEADERS,
            )
        },
        "/audio/transcriptions": {
            "post": operation(
                "createTranscription",
                "OpenAI-compatible",
                "OpenAI Audio transcriptions",
                "OpenAI's multipart upload (`file` plus form fields). `response_format: text` answers `text/plain` "
                "(without metadata). Idempotency keys are not used on this route.",
                {
                    "200": {
                        "description": "The transcript.",
                        "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
                        "content": {
                            JSON: {"schema": ref("Transcription")},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    **metered_errors(idempotent=False, json_body=False),
                },
                body={
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": ref("TranscriptionRequest"),
                            "encoding": {"file": {"contentType": "audio/*, application/octet-stream"}},
                        }
                    },
                },
            )
        },
        "/ai/tts/voices": {
            "get": operation(
                "aiTtsVoices",
                "Speech",
                "List voices",
                "The voices of every text-to-speech vendor your account can use. Free.",
                {
                    **ok("VoiceList"),
                    "400": error_response("`limit` or `cursor` is invalid (`error.field`).", ["INVALID_FIELD"]),
                    "503": byok_unavailable(),
                },
                parameters=[p("limit"), p("cursor")],
            )
        },
        "/ai/rerank": {
            "post": operation(
                "aiRerank",
                "Rerank",
                "Rerank documents",
                "Each document's original index and relevance score for the query, best first. Billed per token.",
                {**ok("RerankResult"), **metered_errors()},
                body=json_body(
                    "RerankRequest",
                    {
                        "model": "sandbox-rerank",
                        "query": "how do cats sleep",
                        "documents": ["Cats sleep up to 16 hours a day.", "Tax returns are due in April."],
                        "top_n": 2,
                    },
                ),
                parameters=IDEMPOTENT_HEADERS,
            )
        },
        "/ai/tokens/count": {
            "post": operation(
                "aiTokensCount",
                "Tokens and cost",
                "Count prompt tokens",
                "The prompt tokens of messages (and tools) with the model's tokenizer. Free.",
                {**ok("TokensCount"), "400": bad_request()},
                body=json_body(
                    "TokensCountRequest",
                    {"model": "sandbox-chat", "messages": [{"role": "user", "content": "How many tokens is this?"}]},
                ),
            )
        },
        "/ai/cost/estimate": {
            "post": operation(
                "aiCostEstimate",
                "Tokens and cost",
                "Estimate a chat call's cost",
                "What a chat call would cost, computed exactly as the bill is. Free.",
                {**ok("CostEstimate"), "400": bad_request(*ROUTING_CODES), "503": byok_unavailable()},
                body=json_body(
                    "CostEstimateRequest",
                    {
                        "model": "sandbox-chat",
                        "messages": [{"role": "user", "content": "Summarise this page."}],
                        "expected_output_tokens": 200,
                    },
                ),
            )
        },
        "/ai/cost/compare": {
            "post": operation(
                "aiCostCompare",
                "Tokens and cost",
                "Compare a chat call's cost across models",
                "The estimate for each model, cheapest first. Free.",
                {**ok("CostComparison"), "400": bad_request("UNKNOWN_MODEL"), "503": byok_unavailable()},
                body=json_body(
                    "CostCompareRequest",
                    {
                        "models": ["sandbox-chat", "sandbox-chat-mini", "sandbox-chat-pro"],
                        "messages": [{"role": "user", "content": "Summarise this page."}],
                        "expected_output_tokens": 200,
                    },
                ),
            )
        },
        "/ai/realtime/token": {
            "post": operation(
                "aiRealtimeToken",
                "Realtime",
                "Start a realtime (WebRTC) session",
                "A short-lived session token for a realtime voice session (`ttl_seconds` default 600). Needs at least "
                "a minute of credit to start; the session's time is metered as it runs.",
                {**ok("SessionToken"), **metered_errors(idempotent=False, upstream=False)},
                body=json_body(
                    "SessionRequest",
                    {"model": "sandbox-realtime", "voice": "alloy", "ttl_seconds": 300},
                    required=False,
                ),
            )
        },
        "/ai/voice/session": {
            "post": operation(
                "aiVoiceSession",
                "Realtime",
                "Start a voice conversation session",
                "A short-lived token (`ttl_seconds` default 60) for a realtime voice/multimodal conversation "
                "(e.g. OpenAI Realtime); not a pub/sub credential. Needs at least a minute of credit.",
                {**ok("SessionToken"), **metered_errors(idempotent=False, upstream=False)},
                body=json_body("SessionRequest", {"model": "sandbox-realtime", "voice": "alloy"}, required=False),
            )
        },
        "/models": {
            "get": operation(
                "listModels",
                "OpenAI-compatible",
                "List models",
                "Every enabled model in the catalog with the capabilities it serves (OpenAI's shape). Free.",
                ok("ModelList"),
            )
        },
    }


def account_paths() -> dict[str, Any]:
    key_created = ok("KeyCreated", "The new key with its secret (shown once), or the replay of an earlier call.", "201")
    return {
        "/account/balance": {
            "get": operation(
                "accountBalance",
                "Account",
                "Balance",
                "The account's balance, held and available credit.",
                ok("Balance"),
            )
        },
        "/account/topup": {
            "post": operation(
                "accountTopup",
                "Account",
                "Start a top-up",
                "A Stripe Checkout URL for the amount; credit arrives once the payment completes.",
                {
                    **ok("TopupResult"),
                    "400": bad_request(),
                    "503": error_response("Payments are not available right now.", ["PAYMENTS_UNAVAILABLE"]),
                },
                body=json_body("TopupRequest", {"amount_usd": "25"}),
            )
        },
        "/account/keys": {
            "get": operation(
                "listKeys",
                "Keys",
                "List keys",
                "The keys of the calling key's project (secrets are never shown).",
                ok("KeyList"),
            ),
            "post": operation(
                "createKey",
                "Keys",
                "Create a key",
                "A new key in the calling key's project. The secret is in this answer only; a retry with the same "
                "idempotency key returns the same key with `key: null` and `replayed: true`.",
                {
                    **key_created,
                    "400": bad_request("IDEMPOTENCY_KEY_REQUIRED"),
                    "422": error_response(
                        "This idempotency key was used with a different body.", ["IDEMPOTENCY_KEY_REUSED"]
                    ),
                },
                body=json_body("KeyCreateRequest", {"label": "ci", "idempotency_key": "create-ci-key-1"}),
                parameters=[p("Idempotency-Key")],
            ),
        },
        "/account/keys/{key_id}": {
            "parameters": [p("key_id")],
            "get": operation(
                "getKey",
                "Keys",
                "Get a key",
                "One key of your account.",
                {**ok("ProjectKey"), "404": not_found("key_id")},
            ),
            "delete": operation(
                "revokeKey",
                "Keys",
                "Revoke a key",
                "Revokes the key at once (idempotent); answers the key with `revoked_at` set.",
                {**ok("ProjectKey"), "404": not_found("key_id")},
            ),
        },
    }


def byok_paths() -> dict[str, Any]:
    providers = ", ".join(f"`{name}`" for name in byok.providers())
    return {
        "/account/byok": {
            "get": operation(
                "listByok",
                "BYOK",
                "List your vendor credentials",
                "Your registered credentials (fingerprints only) and the providers you can register for. Revoked ones "
                "only with `include_revoked=true`.",
                ok("ByokList"),
                parameters=[p("include_revoked")],
            ),
            "post": operation(
                "registerByok",
                "BYOK",
                "Register a vendor credential",
                f"Bring your own key for a vendor ({providers}); calls for that vendor then use it instead of the "
                "shared pool (`_metadata.byok: true`). The secret is write-only: answers carry only its fingerprint. "
                "A retry with the same idempotency key and body returns the same credential with `replayed: true`.",
                {
                    **ok("ByokRegistered", "The credential (new, or the replay of an earlier call).", "201"),
                    "400": bad_request("IDEMPOTENCY_KEY_REQUIRED"),
                    "409": error_response("You already have an active credential with this alias.", ["ALIAS_TAKEN"]),
                    "422": error_response(
                        "This idempotency key was used with a different body.", ["IDEMPOTENCY_KEY_REUSED"]
                    ),
                },
                body=json_body(
                    "ByokRegisterRequest",
                    {
                        "provider": "openai",
                        "alias": "my-openai",
                        "credentials": {"api_key": "sk-your-own-openai-key"},
                        "idempotency_key": "register-my-openai-1",
                    },
                ),
                parameters=[p("Idempotency-Key")],
            ),
        },
        "/account/byok/{byok_id}": {
            "parameters": [p("byok_id")],
            "get": operation(
                "getByok",
                "BYOK",
                "Get a vendor credential",
                "One credential (fingerprint only).",
                {**ok("ByokCredentialAnswer"), "404": not_found("id")},
            ),
            "delete": operation(
                "deleteByok",
                "BYOK",
                "Revoke a vendor credential",
                "Same as `POST /v1/account/byok/{byok_id}/revoke`: the secret is erased and calls go back to the "
                "shared pool. Idempotent.",
                {**ok("ByokCredentialAnswer"), "404": not_found("id")},
            ),
        },
        "/account/byok/{byok_id}/test": {
            "parameters": [p("byok_id")],
            "post": operation(
                "testByok",
                "BYOK",
                "Test a vendor credential",
                "Makes a cheap call to the vendor with the credential and records the result. A failed test is a "
                "200 with `ok: false` and `error`.",
                {
                    **ok("ByokTestResult"),
                    "404": not_found("id"),
                    "409": error_response("The credential is revoked.", ["BYOK_REVOKED"]),
                },
            ),
        },
        "/account/byok/{byok_id}/revoke": {
            "parameters": [p("byok_id")],
            "post": operation(
                "revokeByok",
                "BYOK",
                "Revoke a vendor credential",
                "The secret is erased and calls go back to the shared pool. Idempotent.",
                {**ok("ByokCredentialAnswer"), "404": not_found("id")},
            ),
        },
    }


def docs_paths() -> dict[str, Any]:
    return {
        "/openapi.json": {
            "get": operation(
                "openapiDocument",
                "Documentation",
                "This OpenAPI document",
                "The OpenAPI 3.1 description of `/v1`. Public: no key needed.",
                {"200": {"description": "The document.", "content": {JSON: {"schema": {"type": "object"}}}}},
                public=True,
            )
        },
        "/docs": {
            "get": operation(
                "apiDocs",
                "Documentation",
                "Readable API docs",
                "This document rendered as HTML. Public: no key needed.",
                {"200": {"description": "The docs page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
                public=True,
            )
        },
    }


def components() -> dict[str, Any]:
    return {
        "securitySchemes": {
            "projectKey": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "ifr_pk_proj_<40 letters and digits>",
                "description": "A project key: `Authorization: Bearer ifr_pk_proj_...`.",
            }
        },
        "headers": {
            "X-Request-Id": {"description": "The call's request id (UUID v7).", "schema": s(format="uuid")},
        },
        "parameters": {
            "Idempotency-Key": {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Idempotency key; wins over the `idempotency_key` body field.",
                "schema": s(minLength=1, maxLength=MAX_KEY_LENGTH),
            },
            "X-Client-Request-Id": {
                "name": "X-Client-Request-Id",
                "in": "header",
                "required": False,
                "description": "Your request id: without an idempotency key it derives one (same as the `request_id` "
                "body field).",
                "schema": s(),
            },
            "X-Sandbox-Fail": {
                "name": "X-Sandbox-Fail",
                "in": "header",
                "required": False,
                "description": "Sandbox failure injection for chat served by the sandbox vendor: `429` answers 503 "
                "UPSTREAM_RATE_LIMITED, `500`/`503` 502 UPSTREAM_UNAVAILABLE, `timeout` 504 UPSTREAM_TIMEOUT, "
                "`cut-stream` ends a stream with an error event. Ignored by real vendors.",
                "schema": s(enum=list(HEADER_DIRECTIVES)),
            },
            "limit": {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": LIMIT[0], "maximum": LIMIT[1], "default": LIMIT[2]},
            },
            "cursor": {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "The `next_cursor` of the previous page.",
                "schema": s(),
            },
            "include_revoked": {
                "name": "include_revoked",
                "in": "query",
                "required": False,
                "description": "`true` (or `1`, `yes`) to list revoked credentials too.",
                "schema": s(enum=["true", "false", "1", "0", "yes", "no"], default="false"),
            },
            "key_id": {
                "name": "key_id",
                "in": "path",
                "required": True,
                "description": "A key's `id`.",
                "schema": s(),
            },
            "byok_id": {
                "name": "byok_id",
                "in": "path",
                "required": True,
                "description": "A credential's `id`.",
                "schema": s(),
            },
        },
        "responses": {
            "Unauthorized": error_response(
                "The project key is missing, malformed, unknown or revoked (checked before anything else).", AUTH_CODES
            ),
            "MethodNotAllowed": error_response(
                "This route does not take that method; `error.allowed` lists the ones it takes.", ["METHOD_NOT_ALLOWED"]
            ),
        },
        "schemas": schemas(),
    }


TAGS = [
    ("Chat", "Chat with any model, with failover and metering."),
    ("Embeddings", "Text embeddings."),
    ("Images", "Image generation and upscaling."),
    ("Vision", "Questions about images."),
    ("Speech", "Text to speech and speech to text."),
    ("Rerank", "Relevance ranking."),
    ("Tokens and cost", "Free: token counts and cost estimates."),
    ("Realtime", "Short-lived tokens for realtime voice sessions."),
    ("OpenAI-compatible", "OpenAI-shaped routes for the official `openai` SDK with `base_url=<host>/v1`."),
    ("Account", "Balance and top-up."),
    ("Keys", "Project keys."),
    ("BYOK", "Bring your own vendor keys."),
    ("Documentation", "This document and the docs page."),
]


def build_document(server_url: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a server whose `/v1` base is `server_url`."""
    paths: dict[str, Any] = {}
    for group in (chat_paths(), capability_paths(), account_paths(), byok_paths(), docs_paths()):
        paths.update(group)
    document = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Infrai API",
            "version": API_VERSION,
            "summary": "One key for many AI vendors: chat, embeddings, images, vision, speech, rerank, with one bill.",
            "description": OVERVIEW,
        },
        "servers": [{"url": server_url, "description": "This server's /v1 API."}],
        "security": [{"projectKey": []}],
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": paths,
        "components": components(),
    }
    # Each job app documents its own routes (imported here: they import this module).
    from batches.openapi import extend as add_the_batch_api
    from videos.openapi import extend as add_the_video_api

    add_the_video_api(document)
    add_the_batch_api(document)
    return document
