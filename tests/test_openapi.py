"""/v1/openapi.json and /v1/docs: a valid OpenAPI 3.1 document that matches the routes, the
validation and the answers of the real views, and a public HTML page rendered from it."""

from __future__ import annotations

import base64
import json
import re

import pytest
from django.test import AsyncClient
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from gateway import views_account
from gateway.openapi import build_document
from gateway.views_docs import Schemas
from tests.factories import bearer, make_account, make_key

pytestmark = pytest.mark.django_db

SERVER = "http://testserver/v1"
DOCS_ROUTES = {"openapi_json", "docs"}
CATCH_ALLS = {views_account.not_found}
METHODS = ("get", "post", "put", "patch", "delete")
DOCUMENT = build_document(SERVER)


def conforms(document: dict, schema: dict, instance: object) -> None:
    """Raise unless `instance` matches `schema` (with the document's components for $refs)."""
    root = {**schema, "components": document["components"]}
    OAS31Validator(root, format_checker=OAS31Validator.FORMAT_CHECKER).validate(instance)


def operations(document: dict = DOCUMENT) -> list[tuple[str, str, dict]]:
    return [
        (path, method, item[method]) for path, item in document["paths"].items() for method in METHODS if method in item
    ]


def json_example_operations() -> list[tuple[str, str, dict]]:
    return [
        (path, method, op)
        for path, method, op in operations()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]


def ids(cases: list[tuple[str, str, dict]]) -> list[str]:
    return [f"{method.upper()} {path}" for path, method, _ in cases]


def response_schema(document: dict, path: str, method: str, status: int, media: str = "application/json") -> dict:
    response = document["paths"][path][method]["responses"][str(status)]
    response = Schemas(document).resolve(response)
    return response["content"][media]["schema"]


@pytest.fixture
def funded():
    account = make_account(credit_nano=10**9)
    return account, make_key(account)


def post_json(client, path: str, body: object, secret: str, **headers):
    return client.post("/v1" + path, json.dumps(body), content_type="application/json", **bearer(secret), **headers)


# --- The document -----------------------------------------------------------------------------


def test_the_document_is_public_and_valid_openapi_3_1(client):
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    document = response.json()
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"].startswith("3.1.")
    assert document["servers"][0]["url"] == SERVER
    assert document["components"]["securitySchemes"]["projectKey"] == {
        **document["components"]["securitySchemes"]["projectKey"],
        "type": "http",
        "scheme": "bearer",
    }
    assert document["security"] == [{"projectKey": []}]
    for name in ("Error", "Metadata", "ChatRequest", "ChatResult", "AiChatStreamEvent", "EmbedRequest", "Usage"):
        assert name in document["components"]["schemas"]


def test_the_base_url_is_the_one_the_client_used(client, settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "api.example.com"]
    document = client.get("/v1/openapi.json", HTTP_HOST="api.example.com", secure=True).json()
    assert document["servers"][0]["url"] == "https://api.example.com/v1"


def test_a_bad_authorization_header_does_not_matter_to_the_public_routes(client):
    for path in ("/v1/openapi.json", "/v1/docs"):
        assert client.get(path, HTTP_AUTHORIZATION="Bearer nonsense").status_code == 200
        assert client.post(path).status_code == 405


def _gateway_patterns() -> list[URLPattern]:
    resolver = get_resolver()
    gateway = next(p for p in resolver.url_patterns if isinstance(p, URLResolver) and p.namespace == "gateway")
    return [p for p in gateway.url_patterns if isinstance(p, URLPattern)]


def _openapi_path(pattern: URLPattern) -> str:
    route = str(pattern.pattern)
    if isinstance(pattern.pattern, RegexPattern):
        route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route.strip("^$"))
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def served_routes() -> list[tuple[str, URLPattern]]:
    return [
        (_openapi_path(p), p) for p in _gateway_patterns() if p.callback not in CATCH_ALLS and p.name not in DOCS_ROUTES
    ]


def allowed_methods(client, path: str, secret: str) -> set[str]:
    """Ask the route itself: /v1 views answer an unsupported method with 405 and `error.allowed`."""
    url = "/v1" + re.sub(r"\{\w+\}", "x", path)
    response = client.generic("OPTIONS", url, **bearer(secret))
    assert response.status_code == 405, f"{url}: OPTIONS answered {response.status_code}"
    if response.get("Allow"):
        return {m.strip().lower() for m in response["Allow"].split(",")} - {"options", "head"}
    return {m.lower() for m in response.json()["error"]["allowed"]}


def test_every_route_is_documented_with_exactly_its_methods(client):
    secret = make_key(make_account())
    routes = served_routes()
    assert len(routes) >= 28
    for path, pattern in routes:
        assert path in DOCUMENT["paths"], f"{pattern.name} (/v1{path}) is served but not in the OpenAPI document"
        documented = {m for m in METHODS if m in DOCUMENT["paths"][path]}
        assert documented == allowed_methods(client, path, secret), f"/v1{path}: methods differ from the view's"


def test_the_document_has_no_route_the_server_does_not_serve():
    served = {path for path, _ in served_routes()} | {"/openapi.json", "/docs"}
    assert set(DOCUMENT["paths"]) == served


def test_path_parameters_are_declared_for_every_templated_path():
    for path, item in DOCUMENT["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        schemas = Schemas(DOCUMENT)
        for method in METHODS:
            if method not in item:
                continue
            params = [schemas.resolve(p) for p in item.get("parameters", []) + item[method].get("parameters", [])]
            assert {p["name"] for p in params if p["in"] == "path"} == names, path


def test_every_operation_except_the_docs_needs_the_key_and_documents_its_errors():
    for path, method, op in operations():
        if path in ("/openapi.json", "/docs"):
            assert op["security"] == []
            continue
        assert "security" not in op, f"{method} {path} would override the global bearer security"
        assert {"401", "405"} <= set(op["responses"])
        assert any(code.startswith("2") for code in op["responses"])


def test_an_unauthenticated_call_answers_the_documented_error(client):
    response = client.post("/v1/ai/chat", "{}", content_type="application/json")
    assert response.status_code == 401
    body = response.json()
    conforms(DOCUMENT, response_schema(DOCUMENT, "/ai/chat", "post", 401), body)
    assert body["error"]["code"] in DOCUMENT["components"]["responses"]["Unauthorized"]["x-error-codes"]
    assert response["X-Request-Id"] == body["error"]["request_id"]


def test_every_example_matches_its_own_request_schema():
    for _path, _method, op in json_example_operations():
        content = op["requestBody"]["content"]["application/json"]
        conforms(DOCUMENT, content["schema"], content["example"])


def test_the_schemas_state_the_real_bounds():
    schemas = Schemas(DOCUMENT)
    chat = schemas.merged(DOCUMENT["components"]["schemas"]["ChatRequest"])["properties"]
    assert (chat["temperature"]["minimum"], chat["temperature"]["maximum"]) == (0, 2)
    assert chat["max_tokens"]["minimum"] == 1
    assert chat["prefer"]["enum"] == ["balanced", "cheapest", "smartest"]
    assert chat["task"]["enum"] == ["general", "reasoning", "coding", "long_context"]
    assert chat["cache_strategy"]["enum"] == ["vendor", "infrai", "none"]
    components = DOCUMENT["components"]["schemas"]
    n = components["ImageRequest"]["properties"]["n"]
    assert (n["minimum"], n["maximum"]) == (1, 4)
    assert components["UpscaleRequest"]["properties"]["factor"]["enum"] == [2, 4]
    dims = components["EmbedRequest"]["properties"]["dimensions"]
    assert (dims["minimum"], dims["maximum"]) == (1, 4096)
    ttl = components["SessionRequest"]["properties"]["ttl_seconds"]
    assert (ttl["minimum"], ttl["maximum"]) == (10, 3600)
    limit = DOCUMENT["components"]["parameters"]["limit"]["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 200)
    assert components["TtsRequest"]["properties"]["format"]["enum"] == ["mp3", "wav", "ogg", "pcm", "opus", "flac"]


# --- The bounds are the views' bounds ------------------------------------------------------------

OUT_OF_BOUNDS = [
    ("/ai/chat", {"messages": "hi", "temperature": 2.5}, "temperature"),
    ("/ai/chat", {"messages": "hi", "max_tokens": 0}, "max_tokens"),
    ("/ai/chat", {"messages": "hi", "prefer": "fastest"}, "prefer"),
    ("/ai/chat", {"messages": "hi", "task": "poetry"}, "task"),
    ("/ai/chat", {"messages": "hi", "cache_strategy": "disk"}, "cache_strategy"),
    ("/ai/chat", {"messages": "hi", "max_cost_multiplier": 0.5}, "max_cost_multiplier"),
    ("/ai/chat", {"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ("/ai/image", {"prompt": "x", "n": 5}, "n"),
    ("/ai/image", {"prompt": "x", "size": "big"}, "size"),
    ("/ai/image/upscale", {"image": "aGk=", "factor": 3}, "factor"),
    ("/ai/embed", {"input": "x", "dimensions": 4097}, "dimensions"),
    ("/ai/tts", {"input": "x", "format": "aiff"}, "format"),
    ("/ai/realtime/token", {"ttl_seconds": 5}, "ttl_seconds"),
    ("/embeddings", {"input": "x", "encoding_format": "hex"}, "encoding_format"),
    ("/ai/embed", {"input": "x", "task": "poetry"}, "task"),
    ("/ai/rerank", {"query": "q", "documents": ["d"], "task": "poetry"}, "task"),
    ("/ai/embed", {"input": ["x"] * 2049}, "input"),
    ("/ai/image", {"prompt": "x" * 4001}, "prompt"),
    ("/ai/vision", {"prompt": "x", "images": [{"url": "https://example.com/a.png"}] * 5}, "images"),
    ("/ai/tts", {"input": "x" * 4097}, "input"),
    ("/ai/asr", {"audio": {"nothing": 1}}, "audio"),
    ("/ai/rerank", {"query": "q", "documents": ["d"] * 1001}, "documents"),
    ("/ai/chat", {"messages": "hi", "response_format": {"type": "xml"}}, "response_format"),
    ("/ai/chat", {"messages": "hi", "vendor": "acme"}, "vendor"),
    ("/chat/completions", {"messages": "hi", "max_completion_tokens": 0}, "max_completion_tokens"),
    ("/ai/cost/estimate", {"messages": "hi", "expected_output_tokens": 1_000_001}, "expected_output_tokens"),
    ("/ai/cost/compare", {"messages": "hi", "models": ["sandbox-chat"] * 51}, "models"),
    ("/account/keys", {"label": "x" * 81, "idempotency_key": "k1"}, "label"),
    (
        "/account/byok",
        {"provider": "acme", "alias": "a", "credentials": {"api_key": "k" * 30}, "idempotency_key": "k1"},
        "provider",
    ),
]

# The limits themselves are accepted: (route, changes to its documented example).
AT_THE_LIMITS = [
    ("/ai/chat", {"temperature": 0, "max_cost_multiplier": 100}),
    ("/ai/chat", {"temperature": 2, "max_cost_multiplier": 1, "cache_strategy": "none", "prefer": "smartest"}),
    ("/ai/embed", {"dimensions": 4096}),
    ("/ai/embed", {"dimensions": 1}),
    ("/ai/image", {"n": 4, "size": "512x512"}),
    ("/ai/image/upscale", {"factor": 4}),
    ("/ai/realtime/token", {"ttl_seconds": 10}),
    ("/ai/realtime/token", {"ttl_seconds": 3600}),
    ("/ai/tts", {"format": "flac"}),
]


@pytest.mark.parametrize(("path", "body", "field"), OUT_OF_BOUNDS, ids=[f"{c[0]}:{c[2]}" for c in OUT_OF_BOUNDS])
def test_what_the_schema_forbids_the_view_refuses(client, funded, path, body, field):
    _, secret = funded
    op = DOCUMENT["paths"][path]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    with pytest.raises(ValidationError):
        conforms(DOCUMENT, schema, body)
    response = post_json(client, path, body, secret)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize(("path", "changes"), AT_THE_LIMITS, ids=[f"{c[0]}:{sorted(c[1])}" for c in AT_THE_LIMITS])
def test_what_the_schema_allows_at_its_limits_the_view_accepts(client, funded, path, changes):
    _, secret = funded
    content = DOCUMENT["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    body = {**content["example"], **changes}
    conforms(DOCUMENT, content["schema"], body)
    response = post_json(client, path, body, secret)
    assert response.status_code == 200, response.content


def test_the_voices_limit_bounds_are_the_views(client, funded):
    _, secret = funded
    assert client.get("/v1/ai/tts/voices?limit=201", **bearer(secret)).json()["error"]["field"] == "limit"
    assert client.get("/v1/ai/tts/voices?limit=200", **bearer(secret)).status_code == 200


# --- The examples are valid requests ------------------------------------------------------------

# Top-ups need the Stripe stand-in (tests/test_billing_topup.py); without it the call is a 503.
EXAMPLES_WITHOUT_LOCAL_ANSWER = {("/account/topup", "post")}
RUNNABLE = [
    (path, method, op)
    for path, method, op in json_example_operations()
    if "{" not in path and (path, method) not in EXAMPLES_WITHOUT_LOCAL_ANSWER
]


def test_the_chat_example_answers_200_with_the_documented_result(client, funded):
    _, secret = funded
    example = DOCUMENT["paths"]["/ai/chat"]["post"]["requestBody"]["content"]["application/json"]["example"]
    response = post_json(client, "/ai/chat", example, secret)
    assert response.status_code == 200, response.content
    body = response.json()
    conforms(DOCUMENT, response_schema(DOCUMENT, "/ai/chat", "post", 200), body)
    assert body["content"] and body["_metadata"]["vendor"] == "sandbox"
    assert response["X-Request-Id"] == body["_metadata"]["request_id"]


@pytest.mark.parametrize(("path", "method", "op"), RUNNABLE, ids=ids(RUNNABLE))
def test_every_example_is_accepted_and_answers_the_documented_schema(client, funded, path, method, op):
    _, secret = funded
    example = op["requestBody"]["content"]["application/json"]["example"]
    response = post_json(client, path, example, secret)
    success = [code for code in op["responses"] if code.startswith("2")]
    assert str(response.status_code) in success, response.content
    media = response["Content-Type"].split(";")[0]
    documented = Schemas(DOCUMENT).resolve(op["responses"][str(response.status_code)])["content"]
    assert media in documented, f"{path} answered {media}, documented {list(documented)}"
    if media == "application/json":
        conforms(DOCUMENT, documented[media]["schema"], response.json())
    else:
        assert response.content


def test_the_topup_example_is_accepted_by_the_validation(client, funded, settings):
    """Without the Stripe stand-in the answer is the documented 503, never a 400 on the body."""
    _, secret = funded
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    op = DOCUMENT["paths"]["/account/topup"]["post"]
    response = post_json(client, "/account/topup", op["requestBody"]["content"]["application/json"]["example"], secret)
    assert str(response.status_code) in op["responses"] and response.status_code != 400, response.content
    conforms(DOCUMENT, response_schema(DOCUMENT, "/account/topup", "post", response.status_code), response.json())


def test_the_transcription_upload_is_the_documented_multipart(client, funded):
    from django.core.files.uploadedfile import SimpleUploadedFile

    _, secret = funded
    op = DOCUMENT["paths"]["/audio/transcriptions"]["post"]
    form = Schemas(DOCUMENT).merged(op["requestBody"]["content"]["multipart/form-data"]["schema"])
    assert form["required"] == ["file"]
    asr = DOCUMENT["paths"]["/ai/asr"]["post"]["requestBody"]["content"]["application/json"]["example"]
    wav = base64.b64decode(asr["audio"]["base64"])
    upload = SimpleUploadedFile("speech.wav", wav, content_type="audio/wav")
    response = client.post(
        "/v1/audio/transcriptions",
        {"file": upload, "model": "sandbox-asr", "response_format": "verbose_json"},
        **bearer(secret),
    )
    assert response.status_code == 200, response.content
    conforms(DOCUMENT, response_schema(DOCUMENT, "/audio/transcriptions", "post", 200), response.json())
    missing = client.post("/v1/audio/transcriptions", {"model": "sandbox-asr"}, **bearer(secret))
    assert missing.status_code == 400 and missing.json()["error"]["field"] in form["required"]


def test_an_account_without_credit_gets_the_documented_402(client):
    secret = make_key(make_account())
    example = DOCUMENT["paths"]["/ai/chat"]["post"]["requestBody"]["content"]["application/json"]["example"]
    response = post_json(client, "/ai/chat", example, secret)
    assert response.status_code == 402
    conforms(DOCUMENT, response_schema(DOCUMENT, "/ai/chat", "post", 402), response.json())


@pytest.mark.parametrize(
    ("model", "headers", "status"),
    [
        ("sandbox-chat-fail-429", {}, 503),
        ("sandbox-chat-timeout", {}, 504),
        ("sandbox-chat", {"HTTP_X_SANDBOX_FAIL": "500"}, 502),
    ],
)
def test_documented_failure_injection_answers_the_documented_errors(client, funded, model, headers, status):
    _, secret = funded
    response = post_json(client, "/ai/chat", {"model": model, "messages": "hi"}, secret, **headers)
    assert response.status_code == status, response.content
    documented = DOCUMENT["paths"]["/ai/chat"]["post"]["responses"][str(status)]
    conforms(DOCUMENT, documented["content"]["application/json"]["schema"], response.json())
    assert response.json()["error"]["code"] in documented["x-error-codes"]


@pytest.mark.django_db(transaction=True)
async def test_a_streamed_chat_sends_the_documented_events():
    from asgiref.sync import sync_to_async

    account = await sync_to_async(make_account)(credit_nano=10**9)
    secret = await sync_to_async(make_key)(account)
    example = DOCUMENT["paths"]["/ai/chat"]["post"]["requestBody"]["content"]["application/json"]["example"]
    response = await AsyncClient().post(
        "/v1/ai/chat",
        json.dumps({**example, "stream": True}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 200
    assert "text/event-stream" in DOCUMENT["paths"]["/ai/chat"]["post"]["responses"]["200"]["content"]
    assert response["Content-Type"].startswith("text/event-stream")
    events = []
    async for chunk in response.streaming_content:
        events += [line[6:] for line in chunk.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    event_schema = {"$ref": "#/components/schemas/AiChatStreamEvent"}
    for event in events[:-1]:
        conforms(DOCUMENT, event_schema, json.loads(event))
    assert "_metadata" in json.loads(events[-2])


# --- Required fields are really required ----------------------------------------------------------

REQUIRED = [
    (path, method, op)
    for path, method, op in json_example_operations()
    if "{" not in path
    and Schemas(DOCUMENT).merged(op["requestBody"]["content"]["application/json"]["schema"]).get("required")
]


@pytest.mark.parametrize(("path", "method", "op"), REQUIRED, ids=ids(REQUIRED))
def test_an_empty_body_is_refused_naming_a_documented_required_field(client, funded, path, method, op):
    _, secret = funded
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    required = Schemas(DOCUMENT).merged(schema)["required"]
    response = post_json(client, path, {}, secret)
    assert 400 <= response.status_code < 500, response.content
    error = response.json()["error"]
    assert error["field"] in required, f"{path}: refused on {error['field']!r}, documented required {required}"
    assert str(response.status_code) in op["responses"]
    assert error["code"] in op["responses"][str(response.status_code)]["x-error-codes"]


def test_required_fields_are_checked_at_least_on_these_routes():
    covered = {path for path, _, _ in REQUIRED}
    assert {"/ai/chat", "/chat/completions", "/ai/embed", "/ai/vision", "/account/keys", "/account/byok"} <= covered


# --- The HTML page ------------------------------------------------------------------------------


def test_the_docs_page_is_public_html_listing_every_operation(client):
    response = client.get("/v1/docs")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    for path, method, op in operations():
        assert f"/v1{path}" in html, path
        assert f'id="{op["operationId"]}"' in html
        verb = method.upper()
        assert f'<span class="method m-{verb}">{verb}</span> <code>/v1{path}</code>' in html, f"{verb} {path}"
    assert "curl -X POST http://testserver/v1/ai/chat" in html
    assert "Authorization: Bearer $INFRAI_API_KEY" in html
    assert "INSUFFICIENT_CREDIT" in html and "X-Sandbox-Fail" in html and "sandbox-chat-fail-429" in html


def test_the_docs_page_fetches_nothing_from_elsewhere(client):
    html = client.get("/v1/docs").content.decode()
    assert "<script" not in html
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert url.startswith(("/", "#", "data:", "http://testserver/")), url
    assert '/static/console/console.css"' in html


def test_the_docs_page_escapes_what_it_shows(client):
    html = client.get("/v1/docs").content.decode()
    # The curl example's JSON is inside <pre>, so its quotes are escaped, not raw markup.
    assert "&quot;model&quot;: &quot;sandbox-chat&quot;" in html
