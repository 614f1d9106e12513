"""The playground's Video tab: the form's choices, the estimate, creating a job and the rows the
page shows. Every rule about video jobs stays in videos/video.py; this module only maps the form
to `/v1/video/generate`'s body and a job to what a row shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from console.models import Account
from gateway import idempotency
from gateway.api import Caller
from gateway.models import CatalogModel
from infrai.lib.ids import uuid7
from infrai.lib.money import format_usd
from videos import video
from videos.models import VideoJob, VideoState

RECENT = 10
MAX_POLLED = 50
POLL_SECONDS = 2
FORM_FIELDS = ("model", "aspect", "resolution", "duration_seconds")
# Fields whose errors the form shows beside an input (vendor beside the model, aspect_ratio beside aspect).
SHOWN_FIELDS = ("prompt", "model", "vendor", "aspect", "aspect_ratio", "resolution", "duration_seconds")
# `/v1/video/generate` needs a prompt; the price does not depend on it.
ESTIMATE_PROMPT = "estimate"
STATE_TEXT = {
    VideoState.QUEUED: "Queued",
    VideoState.RUNNING: "Rendering",
    VideoState.SUCCEEDED: "Done",
    VideoState.FAILED: "Failed",
    VideoState.CANCELLED: "Cancelled",
}


# --- The form ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelOption:
    model_id: str
    vendor: str
    label: str
    aspects: list[str]
    resolutions: list[str]
    durations: list[int]


def model_options(account: Account) -> list[ModelOption]:
    """The video models the account can use, each with what its vendor can make."""
    names = dict(
        CatalogModel.objects.filter(capability=video.CAPABILITY, enabled=True).values_list("model_id", "display_name")
    )
    options = []
    for vendor in video.capabilities(account):
        if not vendor["available"]:
            continue
        for model_id in vendor["models"]:
            options.append(
                ModelOption(
                    model_id=model_id,
                    vendor=vendor["vendor"],
                    label=f"{names.get(model_id) or model_id} · {vendor['vendor']}",
                    aspects=vendor["aspects"],
                    resolutions=vendor["resolutions"],
                    durations=vendor["durations_seconds"],
                )
            )
    return options


def _union(lists: list[list[Any]]) -> list[Any]:
    seen: list[Any] = []
    for items in lists:
        seen.extend(item for item in items if item not in seen)
    return seen


def form_choices(options: list[ModelOption]) -> dict[str, Any]:
    """Every aspect, resolution and duration some usable model makes ("best available" picks one
    that makes the combination), and per model what it makes, for the page's script."""
    limits = {
        o.model_id: {"aspects": o.aspects, "resolutions": o.resolutions, "durations": o.durations} for o in options
    }
    every = {
        "aspects": _union([o.aspects for o in options]),
        "resolutions": _union([o.resolutions for o in options]),
        "durations": sorted(_union([o.durations for o in options])),
    }
    return {"models": options, **every, "limits": {"": every, **limits}}


def initial_form() -> dict[str, str]:
    return {
        "prompt": "",
        "model": "",
        "aspect": video.DEFAULT_ASPECT,
        "resolution": video.DEFAULT_RESOLUTION,
        "duration_seconds": str(video.DEFAULT_DURATION),
    }


def _duration(raw: str) -> int | str | None:
    raw = raw.strip()
    if not raw:
        return None
    # Anything else goes on as typed, so that parse_generate's error names the field.
    return int(raw) if raw.isdigit() else raw


def body_of(data: Mapping[str, Any], *, with_prompt: bool = True) -> dict[str, Any]:
    """The `/v1/video/generate` body the form stands for (empty choices are left to the server)."""
    body: dict[str, Any] = {"prompt": data.get("prompt", "") if with_prompt else ESTIMATE_PROMPT}
    for name in ("model", "aspect", "resolution"):
        if data.get(name):
            body[name] = data[name]
    duration = _duration(data.get("duration_seconds", ""))
    if duration is not None:
        body["duration_seconds"] = duration
    return body


# --- Estimate and create ----------------------------------------------------------------------


def estimate(account: Account, body: dict[str, Any]) -> dict[str, Any]:
    """What the job would hold (and charge once made), on the model `/v1` would choose."""
    choice = video.choose(account, video.parse_generate(body))
    return {
        "cost_usd": format_usd(choice.cost_nano),
        "model": choice.entry.model_id,
        "vendor": choice.entry.vendor,
        "duration_seconds": choice.duration_seconds,
        "byok": choice.credential.byok,
    }


def create(request: HttpRequest, caller: Caller, body: dict[str, Any], idempotency_key: str) -> VideoJob:
    """`/v1/video/generate` for the signed-in user: the same checks, choice, hold and task; the
    form's idempotency key makes a double submit (or a re-sent POST) one job."""
    params = video.parse_generate(body)
    choice = video.choose(caller.account, params)

    def create_job() -> tuple[int, dict[str, Any], dict[str, Any]]:
        job = video.create_job(caller, str(uuid7()), params, choice, request)
        answer = {"job_id": job.public_id}
        return 202, answer, answer

    key = idempotency.explicit_key(request, {"idempotency_key": idempotency_key}, required=False)
    if key:
        _, answer, _ = idempotency.run_once(caller.account, "video.generate", key, body, create_job)
    else:
        _, answer, _ = create_job()
    return video.get_job(caller.account, answer["job_id"])


# --- Rows -------------------------------------------------------------------------------------


def recent_jobs(account: Account) -> list[VideoJob]:
    return list(VideoJob.objects.filter(account=account, deleted_at__isnull=True).order_by("-id")[:RECENT])


def row(job: VideoJob, base_url: str) -> dict[str, Any]:
    """A job as its row shows it: the API's answer plus the facts only the owner's page shows."""
    answer = video.job_json(job, base_url, full=True)
    if job.state == VideoState.SUCCEEDED:
        cost_text = f"${answer['cost_usd']} charged"
    elif job.finished:
        cost_text = f"not charged (${answer['cost_usd']} released)"
    else:
        cost_text = f"${answer['cost_usd']} held"
    return {
        **answer,
        "finished": job.finished,
        "state_text": STATE_TEXT.get(job.state, job.state),
        "cost_text": cost_text,
        "request_id": job.request_id,
    }


def rows(jobs: list[VideoJob], base_url: str) -> list[dict[str, Any]]:
    return [row(job, base_url) for job in jobs]


def polled(account: Account, raw_ids: str) -> list[dict[str, Any]]:
    """State and progress of the account's jobs among `raw_ids`; other ids are left out."""
    ids = [i for i in raw_ids.split(",") if i][:MAX_POLLED]
    jobs = VideoJob.objects.filter(account=account, public_id__in=ids, deleted_at__isnull=True)
    return [
        {"job_id": job.public_id, "state": job.state, "progress": job.progress, "finished": job.finished}
        for job in jobs.order_by("-id")
    ]


def job_request(job: VideoJob) -> dict[str, Any]:
    """The `/v1/video/generate` body that makes this job again (for "View code")."""
    return {
        "prompt": job.prompt,
        "model": job.model,
        "duration_seconds": job.duration_seconds,
        "aspect": job.aspect,
        "resolution": job.resolution,
    }


def live_updates_reach_pages() -> bool:
    """False with the embedded in-memory channel layer: the job worker is another process, so
    its updates never reach this one's sockets and the page polls instead."""
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    return "InMemory" not in backend
