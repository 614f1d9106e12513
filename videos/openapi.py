"""The `/v1/video/*` part of the OpenAPI document, built with gateway/openapi.py's helpers.

`extend(document)` adds the video paths, schemas, the `job_id` parameter and the Video tag to a
document made by `gateway.openapi.build_document` (which calls it last). The bounds here are the
views' (videos/video.py), and tests/test_videos.py checks both against each other.
"""

from __future__ import annotations

from typing import Any

from gateway import openapi as oa
from gateway import routing
from videos import conf, video
from videos.models import VideoState
from videos.vendors import VIDEO_VENDORS
from videos.vendors.base import ASPECTS, RESOLUTIONS

TAG = ("Video", "Text-to-video jobs: generate, poll, download by signed URL, retention.")

OVERVIEW = """**Video.** `POST /v1/video/generate` starts a job and answers at once (`202`, state `queued`);
poll `GET /v1/video/status/{job_id}` (or listen on the console's `/ws/events/` websocket for
`video.updated` events) until it is `succeeded`, `failed` or `cancelled`. The job's price
(the model's per-second price times `duration_seconds`) is held when it starts, charged once when
it succeeds, released when it fails or is cancelled. `aspect` and `aspect_ratio` are the same
field (the product documents use both). Files are served only by signed links that expire
(`video_url`, `thumbnail_url`, `GET /v1/video/download_url/{job_id}`). A job and its files are kept
7 days after creation unless `set_retention` says otherwise (1 to 90 days; `days: 0`, as one seed
example sends, is a `400` naming `days`). The `sandbox` vendor renders a real H.264 MP4 offline
(720p or 1080p, 1 to 10 seconds)."""

JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "A video job's `job_id` (`vid_...`).",
    "schema": oa.s(),
}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
TIME = oa.s(format="date-time")


def schemas() -> dict[str, Any]:
    error = oa.obj(
        {"code": oa.s(pattern=r"^[A-Z][A-Z0-9_]*$"), "message": oa.s("Why the job failed; you were not charged.")},
        ["code", "message"],
        description="Present when `state` is `failed`.",
    )
    job = oa.obj(
        {
            "job_id": oa.s("The job's id.", pattern=r"^vid_"),
            "state": oa.s(enum=list(VideoState.values)),
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "video_url": oa.s("Succeeded jobs: a signed link to the MP4 that expires.", format="uri"),
            "thumbnail_url": oa.s("Succeeded jobs: a signed link to a still of the clip.", format="uri"),
            "urls_expire_at": oa.s("When `video_url` and `thumbnail_url` stop working.", format="date-time"),
            "error": error,
            "_metadata": oa.ref("Metadata"),
        },
        ["job_id", "state", "progress"],
    )
    details = {
        "allOf": [
            oa.ref("VideoJob"),
            oa.obj(
                {
                    "prompt": oa.s(),
                    "duration_seconds": {"type": "integer", "minimum": 1},
                    "aspect": oa.s(enum=list(ASPECTS)),
                    "resolution": oa.s(enum=list(RESOLUTIONS)),
                    "vendor": oa.s(),
                    "model": oa.s(),
                    "cost_usd": oa.s("The job's price: held while it runs, charged once if it succeeds."),
                    "charged": {"type": "boolean"},
                    "retention_days": {"type": "integer", "minimum": 1, "maximum": conf.MAX_RETENTION_DAYS},
                    "expires_at": oa.s("When the job and its files are deleted.", format="date-time"),
                    "created_at": TIME,
                    "started_at": NULLABLE_TIME,
                    "finished_at": NULLABLE_TIME,
                },
                ["duration_seconds", "resolution", "vendor", "model", "retention_days", "expires_at", "created_at"],
            ),
        ]
    }
    vendor = oa.obj(
        {
            "vendor": oa.s(),
            "label": oa.s(),
            "models": {"type": "array", "items": oa.s()},
            "resolutions": {"type": "array", "items": oa.s(enum=list(RESOLUTIONS))},
            "aspects": {"type": "array", "items": oa.s(enum=list(ASPECTS))},
            "durations_seconds": {"type": "array", "items": {"type": "integer"}},
            "max_duration_seconds": {"type": "integer"},
            "supports_extend": {"type": "boolean"},
            "supports_upscale": {"type": "boolean"},
            "available": {"type": "boolean", "description": "Whether your account can use it now (a credential)."},
        },
        ["vendor", "models", "resolutions", "max_duration_seconds", "supports_extend", "supports_upscale"],
    )
    return {
        "VideoGenerateRequest": oa.obj(
            {
                "prompt": oa.s("What the video shows.", minLength=1, maxLength=video.MAX_PROMPT),
                "reference_image_url": oa.s(
                    "An http(s) image the video starts from (fetched by the worker).",
                    format="uri",
                    pattern=r"^https?://",
                    maxLength=video.MAX_URL,
                ),
                "duration_seconds": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "multipleOf": 1,
                    "description": "Whole seconds, within the vendor's `durations_seconds` (default 4).",
                },
                "aspect": oa.s("Aspect ratio (default 16:9).", enum=list(ASPECTS)),
                "aspect_ratio": oa.s("Same as `aspect` (the seed's example spells it so).", enum=list(ASPECTS)),
                "resolution": oa.s("Within the vendor's `resolutions` (default 720p).", enum=list(RESOLUTIONS)),
                "prefer": oa.s("How to rank video models.", enum=list(routing.PREFERENCES), default="balanced"),
                "model": oa.s("A video model (`GET /v1/video/capabilities`).", minLength=1),
                "vendor": oa.s("Serve only from this vendor.", enum=sorted(VIDEO_VENDORS)),
                "idempotency_key": oa.IDEMPOTENCY_PROPERTY,
                "request_id": oa.REQUEST_ID_PROPERTY,
            },
            ["prompt"],
        ),
        "VideoJob": job,
        "VideoJobDetails": details,
        "VideoJobList": oa.obj(
            {
                "items": {"type": "array", "items": oa.ref("VideoJobDetails")},
                "next_cursor": oa.s("Pass as `cursor` for the next page; absent on the last."),
                "_metadata": oa.ref("Metadata"),
            },
            ["items", "_metadata"],
        ),
        "VideoCancelResult": oa.obj(
            {
                "ok": {"type": "boolean", "description": "True when the job is cancelled (now or before)."},
                "job_id": oa.s(),
                "state": oa.s(enum=list(VideoState.values)),
                "_metadata": oa.ref("Metadata"),
            },
            ["ok", "job_id", "state", "_metadata"],
        ),
        "VideoDeleted": oa.obj(
            {"ok": {"type": "boolean"}, "job_id": oa.s(), "_metadata": oa.ref("Metadata")}, ["ok", "_metadata"]
        ),
        "VideoDeletedAll": oa.obj(
            {"deleted": {"type": "integer", "minimum": 0}, "_metadata": oa.ref("Metadata")}, ["deleted", "_metadata"]
        ),
        "VideoDownloadUrl": oa.obj(
            {"job_id": oa.s(), "url": oa.s(format="uri"), "expires_at": TIME, "_metadata": oa.ref("Metadata")},
            ["url", "expires_at", "_metadata"],
        ),
        "VideoRetentionRequest": oa.obj(
            {
                "days": {"type": "integer", "minimum": 1, "maximum": conf.MAX_RETENTION_DAYS},
                "job_id": oa.s("Optional; when sent it must be the path's id."),
                "idempotency_key": oa.IDEMPOTENCY_PROPERTY,
            },
            ["days"],
        ),
        "VideoRetention": oa.obj(
            {
                "job_id": oa.s(),
                "retention_days": {"type": "integer", "minimum": 1, "maximum": conf.MAX_RETENTION_DAYS},
                "expires_at": TIME,
                "_metadata": oa.ref("Metadata"),
            },
            ["job_id", "retention_days", "expires_at", "_metadata"],
        ),
        "VideoCapabilities": oa.obj(
            {"vendors": {"type": "array", "items": vendor}, "_metadata": oa.ref("Metadata")}, ["vendors", "_metadata"]
        ),
    }


def paths() -> dict[str, Any]:
    job_id = [{"$ref": "#/components/parameters/job_id"}]
    found = {"404": oa.not_found("id")}
    generate_errors = {
        **oa.metered_errors(upstream=False),
        "400": oa.bad_request("UNSUPPORTED_BY_VENDOR", *oa.ROUTING_CODES),
    }
    example = {
        "prompt": "a timelapse of a city skyline at dusk",
        "prefer": "balanced",
        "resolution": "1080p",
        "duration_seconds": 5,
        "aspect_ratio": "16:9",
    }
    return {
        "/video/generate": {
            "post": oa.operation(
                "videoGenerate",
                "Video",
                "Generate a video",
                "Starts a job and answers at once with `state: queued` (`202`). The price (per second of the "
                "chosen model times `duration_seconds`) is held now, charged once on success, released otherwise. "
                "`resolution`, `aspect` and `duration_seconds` must be within the chosen vendor's capabilities "
                "(`GET /v1/video/capabilities`); otherwise a `400` names the field (`UNSUPPORTED_BY_VENDOR`). "
                "A retry with the same idempotency key returns the same job as it is now.",
                {**oa.ok("VideoJob", "The job, queued.", "202"), **generate_errors},
                body=oa.json_body("VideoGenerateRequest", example),
                parameters=oa.IDEMPOTENT_HEADERS,
            )
        },
        "/video/status/{job_id}": {
            "parameters": job_id,
            "get": oa.operation(
                "videoStatus",
                "Video",
                "Poll a video job",
                "The job's state and progress; once succeeded, signed links to the video and its thumbnail.",
                {**oa.ok("VideoJob"), **found},
            ),
        },
        "/video/get/{job_id}": {
            "parameters": job_id,
            "get": oa.operation(
                "videoGet",
                "Video",
                "Get a video job",
                "The job with everything about it: duration, resolution, vendor, model, cost, retention.",
                {**oa.ok("VideoJobDetails"), **found},
            ),
        },
        "/video/list": {
            "get": oa.operation(
                "videoList",
                "Video",
                "List video jobs",
                "Your account's jobs, newest first, a page at a time.",
                {**oa.ok("VideoJobList"), "400": oa.bad_request(json_body=False)},
                parameters=[oa.p("cursor"), oa.p("limit")],
            )
        },
        "/video/cancel/{job_id}": {
            "parameters": job_id,
            "post": oa.operation(
                "videoCancel",
                "Video",
                "Cancel a video job",
                "Stops a queued or running job and releases its hold. `ok` is true when the job is cancelled (also "
                "when it was already); a job that already succeeded or failed stays as it is (`ok: false`).",
                {**oa.ok("VideoCancelResult"), "400": oa.bad_request(), **found},
            ),
        },
        "/video/delete/{job_id}": {
            "parameters": job_id,
            "delete": oa.operation(
                "videoDelete",
                "Video",
                "Delete a video job",
                "Deletes the job and its files (cancelling it first if it runs). Repeating it answers the same.",
                {**oa.ok("VideoDeleted"), **found},
            ),
        },
        "/video/delete_all": {
            "post": oa.operation(
                "videoDeleteAll",
                "Video",
                "Delete all video jobs",
                "Deletes every job of your account and their files; `deleted` counts them.",
                {**oa.ok("VideoDeletedAll"), "400": oa.bad_request()},
                body={"required": False, "content": {oa.JSON: {"schema": {"type": "object"}, "example": {}}}},
            )
        },
        "/video/download_url/{job_id}": {
            "parameters": job_id,
            "get": oa.operation(
                "videoDownloadUrl",
                "Video",
                "A download link",
                "A signed link to the MP4 that expires at `expires_at`; only for succeeded jobs.",
                {
                    **oa.ok("VideoDownloadUrl"),
                    **found,
                    "409": oa.error_response("The job has not succeeded.", ["VIDEO_NOT_READY"]),
                },
            ),
        },
        "/video/set_retention/{job_id}": {
            "parameters": job_id,
            "post": oa.operation(
                "videoSetRetention",
                "Video",
                "Set a video job's retention",
                f"Keep the job and its files `days` days after it was created (1 to {conf.MAX_RETENTION_DAYS}); "
                "after that they are deleted. `days` missing or 0 is a `400` naming `days`.",
                {**oa.ok("VideoRetention"), "400": oa.bad_request(), **found},
                body=oa.json_body("VideoRetentionRequest", {"days": 30}),
            ),
        },
        "/video/capabilities": {
            "get": oa.operation(
                "videoCapabilities",
                "Video",
                "Video vendors and their limits",
                "Each video vendor's models, resolutions, aspects, clip lengths, and whether your account can use it.",
                oa.ok("VideoCapabilities"),
            )
        },
    }


def extend(document: dict[str, Any]) -> None:
    """Add the video API to a document from gateway.openapi.build_document (documentation last)."""
    document["info"]["description"] += "\n\n" + OVERVIEW
    docs = {path: document["paths"].pop(path) for path in ("/openapi.json", "/docs") if path in document["paths"]}
    document["paths"].update(paths())
    document["paths"].update(docs)
    components = document["components"]
    components["schemas"].update(schemas())
    components["parameters"]["job_id"] = JOB_ID
    tags = document["tags"]
    position = next((i for i, tag in enumerate(tags) if tag["name"] == "Documentation"), len(tags))
    tags.insert(position, {"name": TAG[0], "description": TAG[1]})
