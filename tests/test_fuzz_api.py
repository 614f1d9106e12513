"""Fuzz /v1 from its own OpenAPI document: schemathesis generates the calls, a real server answers.

The document is read from the running server (/v1/openapi.json). Every operation in it gets a
bounded batch of generated calls, valid ones and then invalid ones, sent with a funded account's
key; every answer must keep the API's promises:

- no 5xx, except what a call asked for (`X-Sandbox-Fail`, answered as documented);
- every 4xx is `{"error": {"code", "message", ...}}` with string code and message;
- every 2xx JSON answer carries `_metadata.request_id`, and an event stream ends with `[DONE]`
  after an event with `_metadata` (or an error); the audio bytes of /v1/audio/speech, a `text`
  transcription and the docs page are not JSON;
- status code, content type, headers and body conform to the document (schemathesis's checks;
  for event streams not the body: see `STREAM_CHECKS`).

Generation is derandomized (a fixed seed per operation), so CI sends the same calls every run.
A problem is reported once per operation and kind, with the shortest request that showed it as a
curl command. Problems whose request carries the trigger of a known, reported bug (`known_bug`)
make the test xfail instead; remove an entry once its bug is fixed. For a deeper local run, scale
the number of calls: `INFRAI_FUZZ_SCALE=5 pytest tests/test_fuzz_api.py` (some minutes).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devtools.stripe_standin.runner import running_standin
from gateway.openapi import example_wav_base64
from tests.factories import make_account, make_key
from tests.live import live_servers

USD = 1_000_000_000
SCALE = float(os.environ.get("INFRAI_FUZZ_SCALE", "1"))
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}
# Speech synthesis and recognition are slow by nature: fewer calls.
FEWER = {"POST /ai/tts": 10, "POST /audio/speech": 10, "POST /ai/asr": 10, "POST /audio/transcriptions": 10}
# 2xx answers that are not JSON by design.
NOT_JSON = {
    "POST /audio/speech": ("audio/",),
    "POST /audio/transcriptions": ("text/plain",),
    "GET /docs": ("text/html",),
}
# What `X-Sandbox-Fail` is documented to turn into (`cut-stream` only affects streams).
INJECTED = {
    "429": (503, "UPSTREAM_RATE_LIMITED"),
    "500": (502, "UPSTREAM_UNAVAILABLE"),
    "503": (502, "UPSTREAM_UNAVAILABLE"),
    "timeout": (504, "UPSTREAM_TIMEOUT"),
}
SCHEMA_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Schemathesis validates each event of a text/event-stream answer against the content's schema;
# in OpenAPI 3.1 that schema describes the whole body (a string), so streams are checked here instead.
STREAM_CHECKS = [status_code_conformance, content_type_conformance, response_headers_conformance]

# The transcription upload declares its file part as `audio/*, application/octet-stream`, which
# schemathesis cannot serialize by itself: send the document's tenth of a second of WAV, or any bytes.
schemathesis.openapi.media_type(
    "audio/wav", st.one_of(st.just(base64.b64decode(example_wav_base64())), st.binary(max_size=512))
)


# (reason, shows_it(label, case, response)) for each known, reported bug; none is known now.
KNOWN_BUGS: list[tuple[str, Callable[[str, Any, Any], bool]]] = []


def known_bug(label: str, case, response) -> str | None:
    """The reported bug a request triggers, if any (each is reproduced in its message)."""
    return next((reason for reason, shows_it in KNOWN_BUGS if shows_it(label, case, response)), None)


@dataclass
class Finding:
    label: str
    kind: str
    detail: str
    curl: str
    count: int = 1

    def __str__(self) -> str:
        return f"{self.label}: {self.kind} (x{self.count})\n    {self.detail[:800]}\n    {self.curl[:1500]}"


def media_type(response) -> str:
    return (response.headers.get("content-type") or [""])[0].split(";")[0].strip().lower()


def promises_broken(label: str, case, response) -> list[tuple[str, str]]:
    """The gateway's own promises about an answer, as (kind, detail) pairs."""
    status, content_type = response.status_code, media_type(response)
    body = None
    if content_type == "application/json":
        try:
            body = json.loads(response.content)
        except ValueError:
            return [(f"{status} JSON content type, body not JSON", repr(response.content[:300]))]
    error = body.get("error") if isinstance(body, dict) else None
    if status >= 500:
        asked = INJECTED.get(str((case.headers or {}).get("X-Sandbox-Fail", "")))
        if asked is None or (status, isinstance(error, dict) and error.get("code")) != asked:
            return [(f"{status} server error", f"{content_type or 'untyped'}: {response.content[:300]!r}")]
    if status >= 400:
        if not isinstance(error, dict):
            return [(f"{status} without a JSON error body", f"{content_type or 'untyped'}: {response.content[:200]!r}")]
        if not (isinstance(error.get("code"), str) and isinstance(error.get("message"), str)):
            return [(f"{status} error without string code and message", repr(error)[:300])]
        return []
    if 200 <= status < 300:
        if content_type == "application/json":
            metadata = body.get("_metadata") if isinstance(body, dict) else None
            if not (isinstance(metadata, dict) and isinstance(metadata.get("request_id"), str)):
                return [(f"{status} JSON without _metadata.request_id", repr(response.content[:300]))]
        elif content_type == "text/event-stream":
            if response.stream_cut_short:
                return [("event stream not finished in time", repr(response.content[-300:]))]
            return stream_broken(response.content)
        elif not content_type.startswith(NOT_JSON.get(label, ("application/json",))):
            return [(f"{status} answer is {content_type or 'untyped'}", repr(response.content[:200]))]
    return []


def stream_broken(content: bytes) -> list[tuple[str, str]]:
    events = [line[len(b"data:") :].strip() for line in content.splitlines() if line.startswith(b"data:")]
    if not events or events[-1] != b"[DONE]":
        return [("event stream without a final [DONE]", repr(content[-300:]))]
    try:
        parsed = [json.loads(event) for event in events[:-1]]
    except ValueError:
        return [("event stream with a non-JSON event", repr(content[:300]))]
    if not parsed or not all(isinstance(event, dict) for event in parsed):
        return [("event stream without JSON object events", repr(content[:300]))]
    if "error" not in parsed[-1] and not any(isinstance(event.get("_metadata"), dict) for event in parsed):
        return [("event stream without _metadata", repr(content[-300:]))]
    return []


def schema_broken(case, response, headers: dict[str, str]) -> list[tuple[str, str]]:
    checks = STREAM_CHECKS if media_type(response) == "text/event-stream" else SCHEMA_CHECKS
    try:
        case.validate_response(response, checks=checks, headers=headers)
    except FailureGroup as group:
        return [(f"{failure.code} {failure.title}", failure.message) for failure in group.exceptions]
    return []


def fuzz(operation, mode: GenerationMode, base_url: str, headers: dict[str, str], found: dict, known: dict) -> None:
    label = f"{operation.method.upper()} {operation.path}"
    examples = min(EXAMPLES[mode], FEWER.get(label, EXAMPLES[mode]))

    @settings(
        max_examples=max(1, round(examples * SCALE)),
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        problems = promises_broken(label, case, response)
        if response.status_code < 500:  # a 5xx is reported above, as what it is
            problems += schema_broken(case, response, headers)
        if not problems:
            return
        if reason := known_bug(label, case, response):
            known[reason] = known.get(reason, 0) + 1
            return
        curl = case.as_curl_command(headers={"Authorization": "Bearer $INFRAI_KEY"})
        for kind, detail in problems:
            seen = found.get((label, kind))
            if seen is None:
                found[(label, kind)] = Finding(label, f"{kind} [{mode.value}]", detail, curl)
            else:
                seen.count += 1
                if len(curl) < len(seen.curl):
                    seen.detail, seen.curl = detail, curl

    try:
        run()
    except Unsatisfiable:
        # Nothing in this operation can be made invalid (e.g. a GET without parameters).
        if mode is GenerationMode.POSITIVE:
            raise


@pytest.mark.django_db(transaction=True)
def test_the_api_keeps_its_documented_promises_under_fuzzing():
    funded = {"Authorization": f"Bearer {make_key(make_account(credit_nano=1000 * USD))}"}
    # Registered vendor credentials change how the account's calls route (to real vendors):
    # the BYOK routes get an account of their own.
    byok = {"Authorization": f"Bearer {make_key(make_account('byok@example.com', credit_nano=USD))}"}
    found: dict[tuple[str, str], Finding] = {}
    known: dict[str, int] = {}
    with (
        running_standin("http://127.0.0.1:9/unused", "whsec_fuzz") as stripe,
        live_servers(1, {"STRIPE_API_BASE": stripe}) as (url,),
    ):
        config = schemathesis.Config()
        config.output.sanitization.enabled = False  # keep `max_tokens` & co. in the curl commands
        schema = schemathesis.openapi.from_url(f"{url}/v1/openapi.json", config=config)
        # Read streams to the end (default: 20 events). Set on the schema's own project config:
        # `from_url` does not take it from `config.projects.get_default()`.
        schema.config.max_stream_events = 100_000
        assert schema.config.max_stream_events_for() == 100_000
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) > 30
        for operation in operations:
            headers = byok if operation.path.startswith("/account/byok") else funded
            for mode in EXAMPLES:
                fuzz(operation, mode, f"{url}/v1", headers, found, known)
    assert not found, f"{len(found)} kinds of problem:\n" + "\n".join(str(finding) for finding in found.values())
    if known:
        pytest.xfail("only known, reported bugs: " + "; ".join(f"{reason} (x{n})" for reason, n in known.items()))
