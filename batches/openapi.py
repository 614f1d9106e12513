"""The `/v1/ai/batch/*` part of the OpenAPI document: `extend(document)` adds the paths, schemas,
the `batch_id` parameter and the Batches tag to a document made by gateway.openapi.build_document.

The bounds come from batches/batch.py, so the document cannot drift from the validation.
gateway/openapi.py's helpers are imported inside the functions: that module may import this one.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from batches import batch

TAG = ("Batches", "Many calls as one asynchronous job on the workers, billed at the batch price.")

SUBMIT_DESCRIPTION = f"""Many calls (`chat`, `embed`, `image`, `tts`, `rerank`) as one asynchronous job.

Every item is validated before anything is created: a bad item is `422 INVALID_BATCH_ITEM` with its
`index` and `field` (e.g. `requests[3].body.messages`), and nothing is held or queued. Credit for every
item's worst case is then held at once (all or nothing: `402 INSUFFICIENT_CREDIT` when short), and the
items run on the gateway's workers, several at a time. Chat items are billed at the model's batch price
(cost pass-through, never above the per-call price); the other capabilities at their regular price.
Each item is charged once, for what it really used, when it succeeds; failed and cancelled items cost
nothing. Up to {settings.BATCH_MAX_ITEMS} items. `batch_timeout` (e.g. `24h`, `90m`, `3600s`, `2d`;
1 minute to 7 days, default `{batch.DEFAULT_TIMEOUT}`) fails whatever is unfinished at the deadline.
`conversation_id` on an item (or in its body) lets `export` pick one conversation. The product
document's example submits `{{"requests": []}}`: accepted, a batch with nothing to do (`completed`).
Live progress: the console's `/ws/events/` websocket sends `batch.updated` events."""


def _oa() -> Any:
    from gateway import openapi

    return openapi


def parameters() -> dict[str, Any]:
    oa = _oa()
    return {
        "batch_id": {
            "name": "batch_id",
            "in": "path",
            "required": True,
            "description": "A batch's `batch_id`.",
            "schema": oa.s(),
        }
    }


def schemas() -> dict[str, Any]:
    oa = _oa()
    s, obj, ref, usd = oa.s, oa.obj, oa.ref, oa.USD
    nullable_time = {"type": ["string", "null"], "format": "date-time"}
    low, high = batch.RETENTION_BOUNDS
    status_properties = {
        "batch_id": s(pattern=r"^batch_"),
        "state": s(enum=["queued", "running", "completed", "failed", "cancelled"]),
        "progress": {"type": "number", "minimum": 0, "maximum": 1, "description": "Finished items / total."},
        "total_count": {"type": "integer", "minimum": 0},
        "completed_count": {"type": "integer", "minimum": 0, "description": "Items that succeeded."},
        "failed_count": {"type": "integer", "minimum": 0},
        "cancelled_count": {"type": "integer", "minimum": 0},
        "created_at": s(format="date-time"),
        "started_at": nullable_time,
        "finished_at": nullable_time,
        "total_cost_usd": usd,
        "estimated_cost_usd": usd,
        "batch_timeout": s(),
        "deadline_at": s(format="date-time"),
        "retention_days": {"type": "integer", "minimum": low, "maximum": high},
        "expires_at": {
            **nullable_time,
            "description": "When results and exports are purged (set once the batch finishes).",
        },
        "results_purged": {"type": "boolean"},
        "metadata": {"type": "object"},
        "error": obj({"code": s(), "message": s()}, ["code", "message"]),
        "_metadata": ref("Metadata"),
    }
    status_required = [
        "batch_id",
        "state",
        "progress",
        "total_count",
        "completed_count",
        "failed_count",
        "created_at",
        "total_cost_usd",
    ]
    item = obj(
        {
            "index": {"type": "integer", "minimum": 0},
            "conversation_id": {"type": ["string", "null"]},
            "capability": s(enum=list(batch.CAPABILITIES)),
            "state": s(enum=["queued", "running", "succeeded", "failed", "cancelled"]),
            "result": {
                "type": ["object", "null"],
                "description": "The call's answer: chat `{content, finish_reason, model, usage}`, embed "
                "`{embeddings, model, usage}`, image `{images: [{url, expires_at}]}`, tts `{audio_url, format, "
                "duration_seconds, expires_at}`, rerank `{results, model}`. URLs are signed and expire.",
            },
            "error": {"type": ["object", "null"], "description": "`{code, message, vendor?}` when it failed."},
            "cost_usd": usd,
            "vendor": {"type": ["string", "null"]},
            "model": {"type": ["string", "null"]},
            "request_id": s("The item's usage record id (on the bill).", format="uuid"),
            "attempts": {"type": "integer", "minimum": 0},
            "finished_at": nullable_time,
        },
        ["index", "capability", "state", "result", "error", "cost_usd", "request_id"],
    )
    return {
        "BatchSubmitRequest": obj(
            {
                "requests": {
                    "type": "array",
                    "maxItems": settings.BATCH_MAX_ITEMS,
                    "items": obj(
                        {
                            "capability": s(enum=list(batch.CAPABILITIES)),
                            "body": {"type": "object", "description": "The body of that capability's /v1/ai call."},
                            "conversation_id": s(maxLength=batch.MAX_CONVERSATION_ID),
                        },
                        ["capability", "body"],
                    ),
                },
                "batch_timeout": s(
                    "How long the batch may run; unfinished items then fail.",
                    pattern=batch.TIMEOUT_PATTERN.pattern,
                    default=batch.DEFAULT_TIMEOUT,
                ),
                "metadata": {"type": "object", "description": "Your own keys and values, returned as given."},
                "idempotency_key": oa.IDEMPOTENCY_PROPERTY,
                "request_id": oa.REQUEST_ID_PROPERTY,
            },
            ["requests"],
        ),
        "BatchSubmitResult": obj(
            {
                "batch_id": s(pattern=r"^batch_"),
                "state": s(enum=["queued", "completed"]),
                "total_count": {"type": "integer", "minimum": 0},
                "estimated_eta": s("A rough finish time.", format="date-time"),
                "estimated_cost_usd": {**usd, "description": "At most this: the sum of the items' holds."},
                "created_at": s(format="date-time"),
                "_metadata": ref("Metadata"),
            },
            ["batch_id", "state", "total_count", "estimated_cost_usd", "_metadata"],
        ),
        "BatchStatus": obj(status_properties, [*status_required, "_metadata"]),
        "BatchItem": item,
        "BatchResultsPage": obj(
            {
                "batch_id": s(),
                "state": s(),
                "items": {"type": "array", "items": ref("BatchItem")},
                "total_count": {"type": "integer"},
                "next_cursor": s("Pass as `cursor` for the next page; null on the last.", type=["string", "null"]),
                "download_url": s("The latest full export's signed URL, when there is one.", format="uri"),
                "_metadata": ref("Metadata"),
            },
            ["items", "total_count", "next_cursor", "_metadata"],
        ),
        "BatchList": oa.list_meta("batches", obj(status_properties, status_required)),
        "BatchCancelRequest": obj(
            {
                "batch_id": s("Ignored: the path names the batch (the product document's example sends it)."),
                "idempotency_key": oa.IDEMPOTENCY_PROPERTY,
            }
        ),
        "BatchExportRequest": obj(
            {
                "format": s(enum=list(batch.EXPORT_FORMATS), default="jsonl"),
                "conversation_id": s("Only the items of this conversation.", maxLength=batch.MAX_CONVERSATION_ID),
                "metadata": {"type": "object"},
                "idempotency_key": oa.IDEMPOTENCY_PROPERTY,
            }
        ),
        "BatchExport": obj(
            {
                "export_id": s(pattern=r"^bexp_"),
                "batch_id": s(),
                "state": s(enum=["completed"]),
                "format": s(enum=list(batch.EXPORT_FORMATS)),
                "conversation_id": {"type": ["string", "null"]},
                "item_count": {"type": "integer", "minimum": 0},
                "metadata": {"type": "object"},
                "download_url": s("A signed URL of the file; it expires at `expires_at`.", format="uri"),
                "expires_at": s(format="date-time"),
                "created_at": s(format="date-time"),
                "_metadata": ref("Metadata"),
            },
            ["export_id", "state", "format", "download_url", "expires_at", "created_at", "_metadata"],
        ),
        "BatchRetentionRequest": obj(
            {
                "retention_days": {"type": "integer", "minimum": low, "maximum": high},
                "idempotency_key": oa.IDEMPOTENCY_PROPERTY,
            },
            ["retention_days"],
        ),
    }


def paths() -> dict[str, Any]:
    oa = _oa()
    operation, ok, error_response, json_body, p = oa.operation, oa.ok, oa.error_response, oa.json_body, oa.p
    not_found = oa.not_found("batch_id")
    purged = error_response("The batch's results were purged when its retention ended.", ["RESULTS_PURGED"])
    page_errors = error_response("`limit` or `cursor` is invalid (`error.field`).", ["INVALID_FIELD"])
    submit_errors = oa.metered_errors(upstream=False)
    submit_errors["400"] = oa.bad_request(*oa.ROUTING_CODES)
    submit_errors["422"] = error_response(
        "An item is invalid (`error.index`, `error.field` such as `requests[2].body.input`, and `error.reason`, "
        "the item's own error code), or the idempotency key was used with another body.",
        ["INVALID_BATCH_ITEM", "IDEMPOTENCY_KEY_REUSED"],
    )
    example = {
        "requests": [
            {
                "capability": "chat",
                "body": {"model": "sandbox-chat", "messages": "Name three rivers.", "max_tokens": 64},
                "conversation_id": "rivers",
            },
            {"capability": "embed", "body": {"input": ["a cat sat", "tax law"]}},
        ],
        "batch_timeout": "24h",
        "metadata": {"job": "nightly"},
    }
    by_id = [p("batch_id")]
    return {
        "/ai/batch/submit": {
            "post": operation(
                "aiBatchSubmit",
                "Batches",
                "Submit a batch",
                SUBMIT_DESCRIPTION,
                {**ok("BatchSubmitResult"), **submit_errors},
                body=json_body("BatchSubmitRequest", example),
                parameters=oa.IDEMPOTENT_HEADERS,
            )
        },
        "/ai/batch/status/{batch_id}": {
            "parameters": by_id,
            "get": operation(
                "aiBatchStatus",
                "Batches",
                "A batch's status",
                "State, progress (finished items over total), counts and cost so far.",
                {**ok("BatchStatus"), "404": not_found},
            ),
        },
        "/ai/batch/results/{batch_id}": {
            "parameters": by_id,
            "get": operation(
                "aiBatchResults",
                "Batches",
                "A batch's results",
                "Every item in index order, finished or not, a page at a time; a cursor stays valid while the batch "
                "runs.",
                {**ok("BatchResultsPage"), "400": page_errors, "404": not_found, "410": purged},
                parameters=[p("limit"), p("cursor")],
            ),
        },
        "/ai/batch/list": {
            "get": operation(
                "aiBatchList",
                "Batches",
                "List batches",
                "Your account's batches, newest first.",
                {**ok("BatchList"), "400": page_errors},
                parameters=[p("limit"), p("cursor")],
            )
        },
        "/ai/batch/cancel/{batch_id}": {
            "parameters": by_id,
            "post": operation(
                "aiBatchCancel",
                "Batches",
                "Cancel a batch",
                "Idempotent. Finished items stay billed; the others are cancelled and their held credit released. "
                "A finished batch is answered unchanged.",
                {**ok("BatchStatus"), "400": oa.bad_request(), "404": not_found},
                body=json_body("BatchCancelRequest", {}, required=False),
                parameters=[p("Idempotency-Key")],
            ),
        },
        "/ai/batch/export/{batch_id}": {
            "parameters": by_id,
            "post": operation(
                "aiBatchExport",
                "Batches",
                "Export results",
                "The results (as `results` shows them) as a JSONL or CSV file, made at once; `download_url` is "
                "signed and expires. With an idempotency key, a retry returns the same export.",
                {
                    **ok("BatchExport"),
                    "400": oa.bad_request(),
                    "404": not_found,
                    "410": purged,
                    "422": error_response(
                        "This idempotency key was used with another body.", ["IDEMPOTENCY_KEY_REUSED"]
                    ),
                },
                body=json_body("BatchExportRequest", {"format": "csv", "conversation_id": "rivers"}, required=False),
                parameters=[p("Idempotency-Key")],
            ),
        },
        "/ai/batch/set_retention/{batch_id}": {
            "parameters": by_id,
            "post": operation(
                "aiBatchSetRetention",
                "Batches",
                "Set retention",
                "How many days results and exports are kept after the batch finishes (30 by default); then they are "
                "deleted. `retention_days` is required (the product document's example omits it: that is a 400).",
                {**ok("BatchStatus"), "400": oa.bad_request(), "404": not_found},
                body=json_body("BatchRetentionRequest", {"retention_days": 7}),
                parameters=[p("Idempotency-Key")],
            ),
        },
    }


OVERVIEW = """**Batches.** `POST /v1/ai/batch/submit` queues many calls as one job and answers at once; follow it
with `GET /v1/ai/batch/status/{batch_id}` (or the console's `/ws/events/` websocket: `batch.updated`
events), page through `GET /v1/ai/batch/results/{batch_id}`, or export a JSONL/CSV file. Each item is
held at submit and charged once, when it succeeds, at the batch price for chat. `set_retention` needs
`retention_days` (one seed example omits it: that is a `400` naming it)."""


def extend(document: dict[str, Any]) -> None:
    """Add the batch API to a document from gateway.openapi.build_document (documentation last)."""
    document["info"]["description"] += "\n\n" + OVERVIEW
    docs = {path: document["paths"].pop(path) for path in ("/openapi.json", "/docs") if path in document["paths"]}
    document["paths"].update(paths())
    document["paths"].update(docs)
    components = document["components"]
    components["schemas"].update(schemas())
    components["parameters"].update(parameters())
    tags = document["tags"]
    position = next((i for i, tag in enumerate(tags) if tag["name"] == "Documentation"), len(tags))
    tags.insert(position, {"name": TAG[0], "description": TAG[1]})
