"""`/v1/openapi.json` and `/v1/docs`: the API's OpenAPI document and the same document as HTML.

Both are public (no key) and self-contained: the page is rendered on the server from
`gateway.openapi.build_document`, styled by the console's own stylesheet, and loads nothing else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.csrf import csrf_exempt

from gateway.openapi import build_document

METHODS = ("get", "post", "put", "patch", "delete")
MAX_DEPTH = 2


def base_url(request: HttpRequest) -> str:
    """This server's `/v1` base URL, as the client reached it."""
    return request.build_absolute_uri("/").rstrip("/") + "/v1"


def public_get(view: Any) -> Any:
    """GET only, answered like every /v1 route: other methods get a JSON 405, never a CSRF page."""

    @csrf_exempt
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return JsonResponse(
                {"error": {"code": "METHOD_NOT_ALLOWED", "message": "Use GET on this route.", "allowed": ["GET"]}},
                status=405,
            )
        return view(request, *args, **kwargs)

    return wrapper


@public_get
def openapi_json(request: HttpRequest) -> JsonResponse:
    response = JsonResponse(build_document(base_url(request)), json_dumps_params={"ensure_ascii": False})
    response["Access-Control-Allow-Origin"] = "*"
    return response


# --- Rendering the document -----------------------------------------------------------------------

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _inline(text: str) -> str:
    html = str(escape(text))
    html = _CODE.sub(r"<code>\1</code>", html)
    return _BOLD.sub(r"<strong>\1</strong>", html)


def render_text(text: str) -> SafeString:
    """The small Markdown the document uses: paragraphs, `- ` lists, `code` and **bold**, escaped first."""
    blocks: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        if lines and lines[0].lstrip().startswith("- "):
            items: list[str] = []
            for line in lines:
                if line.lstrip().startswith("- "):
                    items.append(line.lstrip()[2:])
                elif items:
                    items[-1] += " " + line.strip()
            blocks.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in items) + "</ul>")
        else:
            blocks.append("<p>" + _inline(" ".join(line.strip() for line in lines)) + "</p>")
    return mark_safe("".join(blocks))  # every piece of text was escaped by _inline


class Schemas:
    """Resolving `$ref`s and describing schemas for people."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.components = document.get("components", {})

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 10:
            kind, name = schema["$ref"].split("/")[-2:]
            schema = self.components.get(kind, {}).get(name, {})
            seen += 1
        return schema

    def merged(self, schema: dict[str, Any]) -> dict[str, Any]:
        """An object schema with its `allOf` parts merged (properties and required)."""
        schema = self.resolve(schema)
        if "allOf" not in schema:
            return schema
        result: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        properties: dict[str, Any] = {}
        required: list[str] = []
        for part in schema["allOf"]:
            part = self.merged(part)
            for name, prop in part.get("properties", {}).items():
                previous = properties.get(name)
                properties[name] = {**self.resolve(previous), **prop} if previous else prop
            required += [r for r in part.get("required", []) if r not in required]
            if "description" in part and "description" not in result:
                result["description"] = part["description"]
        result.update({"type": "object", "properties": properties, "required": required})
        return result

    def type_name(self, schema: dict[str, Any]) -> str:
        if "$ref" in schema:
            return schema["$ref"].split("/")[-1]
        if "const" in schema:
            return json.dumps(schema["const"])
        for key in ("oneOf", "anyOf"):
            if key in schema:
                return " or ".join(self.type_name(part) for part in schema[key])
        if "allOf" in schema:
            return "object"
        kind = schema.get("type", "any")
        properties = schema.get("properties", {})
        if kind == "object" and 0 < len(properties) <= 3:
            return "{" + ", ".join(properties) + "}"
        if isinstance(kind, list):
            return " or ".join(kind)
        if kind == "array":
            return f"array of {self.type_name(schema.get('items', {}))}"
        if schema.get("format") and kind == "string":
            return f"string ({schema['format']})"
        return str(kind)

    def constraints(self, schema: dict[str, Any]) -> str:
        schema = self.resolve(schema)
        parts: list[str] = []
        if "enum" in schema:
            parts.append("one of " + ", ".join(json.dumps(v) for v in schema["enum"]))
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            parts.append(f"{low} to {high}")
        elif low is not None:
            parts.append(f"at least {low}")
        elif high is not None:
            parts.append(f"at most {high}")
        low, high = schema.get("minItems"), schema.get("maxItems")
        if low is not None or high is not None:
            parts.append(f"{low or 0} to {high} items" if high is not None else f"at least {low} items")
        if schema.get("maxLength") is not None:
            parts.append(f"at most {schema['maxLength']} characters")
        elif schema.get("minLength"):
            parts.append("non-empty")
        if "pattern" in schema and "enum" not in schema:
            parts.append(f"pattern {schema['pattern']}")
        if "default" in schema:
            parts.append(f"default {json.dumps(schema['default'])}")
        for key in ("oneOf", "anyOf"):
            for option in schema.get(key, []):
                text = self.constraints(option) if "$ref" not in option else ""
                if text:
                    parts.append(f"{self.type_name(option)}: {text}")
        return "; ".join(parts)

    def fields(self, schema: dict[str, Any], prefix: str = "", depth: int = 0) -> list[Field]:
        schema = self.merged(schema)
        required = set(schema.get("required", []))
        rows: list[Field] = []
        for name, prop in schema.get("properties", {}).items():
            full = f"{prefix}{name}"
            target = self.resolve(prop)
            rows.append(
                Field(
                    name=full,
                    type=self.type_name(prop),
                    required=name in required,
                    description=render_text(target.get("description", "") or prop.get("description", "")),
                    constraints=self.constraints(prop),
                )
            )
            if depth + 1 >= MAX_DEPTH or name == "_metadata":
                continue
            nested = self.merged(prop)
            if nested.get("type") == "object" and nested.get("properties"):
                rows += self.fields(nested, f"{full}.", depth + 1)
            elif nested.get("type") == "array":
                items = self.merged(nested.get("items", {}))
                if items.get("type") == "object" and items.get("properties"):
                    rows += self.fields(items, f"{full}[].", depth + 1)
            else:
                for option in nested.get("oneOf", []):
                    option = self.merged(option)
                    items = self.merged(option.get("items", {})) if option.get("type") == "array" else {}
                    if items.get("properties"):
                        rows += self.fields(items, f"{full}[].", depth + 1)
        return rows


@dataclass
class Field:
    name: str
    type: str
    required: bool
    description: SafeString
    constraints: str = ""


@dataclass
class Reply:
    status: str
    description: SafeString
    media_types: list[str]
    schema: str
    is_error: bool


@dataclass
class Operation:
    anchor: str
    method: str
    path: str
    summary: str
    description: SafeString
    public: bool
    parameters: list[Field] = field(default_factory=list)
    body_type: str = ""
    body_schema: str = ""
    body_fields: list[Field] = field(default_factory=list)
    curl: str = ""
    replies: list[Reply] = field(default_factory=list)
    error_codes: list[str] = field(default_factory=list)


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def curl_example(server: str, path: str, method: str, op: dict[str, Any], schemas: Schemas) -> str:
    url = server + re.sub(r"\{(\w+)\}", lambda m: "$" + m.group(1).upper(), path)
    lines = [f'curl -X {method.upper()} "{url}"' if "$" in url else f"curl -X {method.upper()} {url}"]
    if op.get("security") != []:
        lines.append('-H "Authorization: Bearer $INFRAI_API_KEY"')
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        example = content["application/json"].get("example", {})
        lines.append('-H "Content-Type: application/json"')
        lines.append("-d " + _shell_quote(json.dumps(example, indent=2, ensure_ascii=False)))
    elif "multipart/form-data" in content:
        schema = schemas.merged(content["multipart/form-data"]["schema"])
        lines.append("-F file=@speech.wav")
        if "model" in schema.get("properties", {}):
            lines.append("-F model=sandbox-asr")
        lines.append("-F response_format=json")
    ok = op.get("responses", {}).get("200", {})
    media = list(schemas.resolve(ok).get("content", {}))
    if media and all(m.startswith("audio/") for m in media):
        lines.append("--output speech.wav")
    return " \\\n  ".join(lines)


def _parameter_fields(path_item: dict[str, Any], op: dict[str, Any], schemas: Schemas) -> list[Field]:
    rows = []
    for raw in [*path_item.get("parameters", []), *op.get("parameters", [])]:
        param = schemas.resolve(raw)
        schema = param.get("schema", {})
        rows.append(
            Field(
                name=f"{param['name']} ({param['in']})",
                type=schemas.type_name(schema),
                required=bool(param.get("required")),
                description=render_text(param.get("description", "")),
                constraints=schemas.constraints(schema),
            )
        )
    return rows


def operations(document: dict[str, Any], server: str) -> list[tuple[dict[str, str], list[Operation]]]:
    """The document's operations grouped by tag, in the document's tag order."""
    schemas = Schemas(document)
    by_tag: dict[str, list[Operation]] = {tag["name"]: [] for tag in document.get("tags", [])}
    for path, path_item in document["paths"].items():
        for method in METHODS:
            op = path_item.get(method)
            if op is None:
                continue
            entry = Operation(
                anchor=op["operationId"],
                method=method.upper(),
                path="/v1" + path,
                summary=op.get("summary", ""),
                description=render_text(op.get("description", "")),
                public=op.get("security") == [],
                parameters=_parameter_fields(path_item, op, schemas),
                curl=curl_example(server, path, method, op, schemas),
            )
            content = op.get("requestBody", {}).get("content", {})
            for media_type, body in content.items():
                entry.body_type = media_type
                entry.body_schema = schemas.type_name(body.get("schema", {}))
                entry.body_fields = schemas.fields(body.get("schema", {}))
                break
            for status, raw in op.get("responses", {}).items():
                reply = schemas.resolve(raw)
                media = reply.get("content", {})
                first = next(iter(media.values()), {})
                entry.replies.append(
                    Reply(
                        status=status,
                        description=render_text(reply.get("description", "")),
                        media_types=list(media),
                        schema=schemas.type_name(first.get("schema", {})) if first else "",
                        is_error=int(status) >= 400,
                    )
                )
                entry.error_codes += [c for c in reply.get("x-error-codes", []) if c not in entry.error_codes]
            for tag in op.get("tags", ["Other"]):
                by_tag.setdefault(tag, []).append(entry)
    descriptions = {tag["name"]: tag.get("description", "") for tag in document.get("tags", [])}
    return [
        (
            {"name": name, "slug": re.sub(r"[^a-z0-9]+", "-", name.lower()), "description": descriptions.get(name, "")},
            ops,
        )
        for name, ops in by_tag.items()
        if ops
    ]


def schema_sections(document: dict[str, Any]) -> list[dict[str, Any]]:
    schemas = Schemas(document)
    sections = []
    for name, schema in document["components"]["schemas"].items():
        merged = schemas.merged(schema)
        sections.append(
            {
                "name": name,
                "description": render_text(merged.get("description", "")),
                "type": schemas.type_name(schema) if "properties" not in merged else "object",
                "fields": schemas.fields(schema),
            }
        )
    return sections


@public_get
def docs(request: HttpRequest) -> HttpResponse:
    server = base_url(request)
    document = build_document(server)
    context = {
        "info": document["info"],
        "overview": render_text(document["info"]["description"]),
        "server": server,
        "groups": operations(document, server),
        "schemas": schema_sections(document),
    }
    return render(request, "gateway/docs.html", context)
