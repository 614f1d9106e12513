"""Every rule about video jobs: validating a request, choosing the vendor, holding the cost,
running the job on the worker under a lease, settling once, cancelling, deleting, retention.

Money: `generate` holds the job's whole price (catalog `per_second` x duration) in the same
transaction that creates the job and enqueues its task. The hold is settled with a usage record
once, when the job succeeds, or released when it fails, is cancelled or deleted. A requeued job
(its worker died) runs again against the same hold, so it is charged once.

Concurrency: every state change is a conditional UPDATE (`state` and, for the worker, its
`lease_token`), so a cancel racing the worker's finish, or a presumed-dead worker coming back,
changes nothing twice.
"""

from __future__ import annotations

import base64
import io
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from PIL import Image

from billing import ledger
from billing.models import EntryKind, Hold, HoldState, UsageRecord
from console.models import Account
from gateway import catalog, files, routing
from gateway.api import ApiError, Caller, field_error
from gateway.inputs import media
from gateway.metering import Origin, insufficient_credit_error
from gateway.models import CatalogModel
from gateway.vendors import get_vendor
from gateway.vendors.base import Credential, VendorError
from infrai.lib.money import format_usd
from infrai.lib.redact import redact_secret
from jobs import live
from videos import conf
from videos.models import UNFINISHED, VideoJob, VideoState
from videos.vendors import VIDEO_VENDORS, get_video_vendor
from videos.vendors.base import ASPECTS, RESOLUTIONS, JobStopped, Rendered, VideoCapabilities, VideoSpec, VideoVendor

log = logging.getLogger(__name__)

CAPABILITY = "video"
MAX_PROMPT = 4000
MAX_URL = 2048
DEFAULT_ASPECT = "16:9"
DEFAULT_RESOLUTION = "720p"
DEFAULT_DURATION = 4
LIST_LIMIT = (1, 200, 50)  # low, high, default: the same bounds as the other /v1 lists
EVENT = "video.updated"


# --- The request ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateParams:
    prompt: str
    reference_image_url: str
    duration_seconds: int | None
    aspect: str | None
    aspect_field: str  # the spelling the caller used: "aspect" or "aspect_ratio"
    resolution: str | None
    prefer: str | None
    model: str | None
    vendor: str | None


def _optional_choice(body: dict[str, Any], name: str, choices: Iterable[str]) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise field_error(name, f"{name} must be one of {', '.join(options)}.")
    return value


def _optional_name(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise field_error(name, f"{name} must be a non-empty string.")
    return value


def parse_generate(body: dict[str, Any]) -> GenerateParams:
    """Check the shape of every field; what the chosen vendor supports is checked in `choose`."""
    prompt = body.get("prompt")
    if prompt is None:
        raise field_error("prompt", "prompt is required: a description of the video.", code="MISSING_FIELD")
    if not isinstance(prompt, str) or not prompt.strip():
        raise field_error("prompt", "prompt must be a non-empty string.")
    if len(prompt) > MAX_PROMPT:
        raise field_error("prompt", f"prompt may be at most {MAX_PROMPT} characters.")

    reference = body.get("reference_image_url")
    if reference is not None and reference != "":
        if not isinstance(reference, str) or not reference.startswith(("http://", "https://")):
            raise field_error("reference_image_url", "reference_image_url must be an http(s) URL of an image.")
        if len(reference) > MAX_URL:
            raise field_error("reference_image_url", f"reference_image_url may be at most {MAX_URL} characters.")
    else:
        reference = ""

    # The seed's table says `aspect`, its example sends `aspect_ratio`: both are accepted.
    aspect = _optional_choice(body, "aspect", ASPECTS)
    aspect_ratio = _optional_choice(body, "aspect_ratio", ASPECTS)
    if aspect and aspect_ratio and aspect != aspect_ratio:
        raise field_error(
            "aspect_ratio", f"aspect ({aspect}) and aspect_ratio ({aspect_ratio}) disagree; send one of them."
        )
    aspect_field = "aspect" if aspect else "aspect_ratio"

    resolution = _optional_choice(body, "resolution", RESOLUTIONS)

    duration = body.get("duration_seconds")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise field_error("duration_seconds", "duration_seconds must be a number of seconds.")
        if duration <= 0 or not float(duration).is_integer():
            raise field_error("duration_seconds", "duration_seconds must be a whole, positive number of seconds.")
        duration = int(duration)

    return GenerateParams(
        prompt=prompt,
        reference_image_url=reference,
        duration_seconds=duration,
        aspect=aspect or aspect_ratio,
        aspect_field=aspect_field,
        resolution=resolution,
        prefer=_optional_choice(body, "prefer", routing.PREFERENCES),
        model=_optional_name(body, "model"),
        vendor=_optional_name(body, "vendor"),
    )


# --- Choosing the vendor ----------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    entry: CatalogModel
    vendor: VideoVendor
    credential: Credential
    duration_seconds: int
    aspect: str
    resolution: str

    @property
    def catalog_nano(self) -> int:
        return catalog.to_nano(self.entry.per_second * self.duration_seconds, self.entry)

    @property
    def cost_nano(self) -> int:
        return catalog.charged_nano(self.credential.byok, self.catalog_nano)


def credential_for(account: Account, vendor: VideoVendor) -> Credential | None:
    """The caller's BYOK credential for the vendor, else the platform's (as for every capability)."""
    if vendor.name == "sandbox" and not settings.SANDBOX_ENABLED:
        return None
    gateway_vendor = get_vendor(vendor.name)
    if gateway_vendor is None:
        return vendor.platform_credential()
    return routing.credential_for(account, gateway_vendor)


def describe_durations(capabilities: VideoCapabilities) -> str:
    durations = sorted(capabilities.durations)
    if durations == list(range(durations[0], durations[-1] + 1)) and len(durations) > 2:
        return f"from {durations[0]} to {durations[-1]} seconds"
    return ", ".join(str(d) for d in durations[:-1]) + f" or {durations[-1]} seconds"


def _fit(entry: CatalogModel, vendor: VideoVendor, credential: Credential, params: GenerateParams) -> Choice:
    """The job on this vendor, or the ApiError naming the first field it cannot serve."""
    caps = vendor.capabilities
    where = f"{vendor.label} ({entry.model_id})"
    resolution = params.resolution or (DEFAULT_RESOLUTION if DEFAULT_RESOLUTION in caps.resolutions else None)
    resolution = resolution or caps.resolutions[0]
    if resolution not in caps.resolutions:
        raise field_error(
            "resolution",
            f"{where} makes {', '.join(caps.resolutions)} videos, not {resolution}; "
            "GET /v1/video/capabilities lists what each vendor makes.",
            code="UNSUPPORTED_BY_VENDOR",
        )
    aspect = params.aspect or (DEFAULT_ASPECT if DEFAULT_ASPECT in caps.aspects else caps.aspects[0])
    if aspect not in caps.aspects:
        raise field_error(
            params.aspect_field,
            f"{where} makes {', '.join(caps.aspects)} videos, not {aspect}.",
            code="UNSUPPORTED_BY_VENDOR",
        )
    duration = params.duration_seconds or (
        DEFAULT_DURATION if DEFAULT_DURATION in caps.durations else min(caps.durations)
    )
    if duration not in caps.durations:
        raise field_error(
            "duration_seconds",
            f"{where} makes clips of {describe_durations(caps)}, not {duration}.",
            code="UNSUPPORTED_BY_VENDOR",
        )
    return Choice(entry, vendor, credential, duration, aspect, resolution)


def _rank(choices: list[tuple[CatalogModel, VideoVendor, Credential]], prefer: str) -> None:
    def price(entry: CatalogModel) -> Decimal:
        return entry.per_second * catalog.usd_rate(entry)

    if prefer == "cheapest":
        choices.sort(key=lambda c: (price(c[0]), -c[0].quality_rank))
    elif prefer == "smartest":
        choices.sort(key=lambda c: (-c[0].quality_rank, price(c[0])))
    else:
        choices.sort(key=lambda c: (-(Decimal(c[0].quality_rank) / (Decimal(1) + price(c[0]))), -c[0].quality_rank))


def choose(account: Account, params: GenerateParams) -> Choice:
    """Like the gateway's routing: `model`/`vendor` pick, else `prefer` ranks the usable video
    models; the sandbox serves when asked for or when no real vendor is usable. The first ranked
    model that can make the requested clip serves it; if none can, the best one's refusal names
    the field."""
    if params.vendor is not None and params.vendor not in VIDEO_VENDORS:
        raise field_error(
            "vendor", f"Unknown video vendor {params.vendor!r}; video vendors: {', '.join(sorted(VIDEO_VENDORS))}."
        )
    entries = CatalogModel.objects.filter(capability=CAPABILITY, enabled=True)
    if params.vendor:
        entries = entries.filter(vendor=params.vendor)
    if params.model:
        entries = entries.filter(model_id=params.model)
        if not entries.exists():
            if CatalogModel.objects.filter(model_id=params.model, enabled=True).exists():
                where = f" at vendor {params.vendor}" if params.vendor else ""
                raise field_error("model", f"Model {params.model!r} does not make videos{where}.")
            raise field_error(
                "model",
                f"Unknown model {params.model!r}. GET /v1/video/capabilities lists the video models.",
                code="UNKNOWN_MODEL",
            )

    usable: list[tuple[CatalogModel, VideoVendor, Credential]] = []
    unusable: set[str] = set()
    credentials: dict[str, Credential | None] = {}
    for entry in entries:
        vendor = get_video_vendor(entry.vendor)
        if vendor is None or (entry.vendor == "sandbox" and not settings.SANDBOX_ENABLED):
            continue
        if entry.vendor not in credentials:
            credentials[entry.vendor] = credential_for(account, vendor)
        credential = credentials[entry.vendor]
        if credential is None:
            unusable.add(entry.vendor)
            continue
        usable.append((entry, vendor, credential))
    if not usable:
        if unusable:
            raise ApiError(
                400,
                "VENDOR_NOT_CONFIGURED",
                f"No credential for {', '.join(sorted(unusable))} on this server; register your own with "
                "/v1/account/byok or choose another model.",
                field="vendor" if params.vendor else "model",
            )
        raise ApiError(400, "NO_MODEL_AVAILABLE", "No video model is available with these choices.", field="model")
    if not params.model and not params.vendor:
        usable = [c for c in usable if c[0].vendor != "sandbox"] or usable
    _rank(usable, params.prefer or "balanced")

    first_refusal: ApiError | None = None
    for entry, vendor, credential in usable:
        try:
            return _fit(entry, vendor, credential, params)
        except ApiError as refusal:
            first_refusal = first_refusal or refusal
    assert first_refusal is not None
    raise first_refusal


# --- Creating a job ---------------------------------------------------------------------------


def hold_ttl() -> timedelta:
    # Longer than any job may live, so the expired-hold sweeper never closes a live job's hold.
    return timedelta(seconds=conf.get_int("VIDEO_JOB_DEADLINE_SECONDS") + 3600)


def _enqueue(job: VideoJob, delay_seconds: float = 0) -> None:
    from videos.tasks import run_video_job

    task = run_video_job
    if delay_seconds > 0:
        task = task.using(run_after=timezone.now() + timedelta(seconds=delay_seconds))
    result = task.enqueue(job.public_id)
    VideoJob.objects.filter(pk=job.pk).update(task_id=str(result.id))
    job.task_id = str(result.id)


def create_job(caller: Caller, request_id: str, params: GenerateParams, choice: Choice, origin: Origin) -> VideoJob:
    """The job, its hold and its task, in one transaction (402 leaves nothing behind)."""
    now = timezone.now()
    retention = conf.get_int("VIDEO_DEFAULT_RETENTION_DAYS")
    with transaction.atomic():
        job = VideoJob.objects.create(
            account=caller.account,
            project=caller.project,
            key=caller.key,
            request_id=request_id,
            prompt=params.prompt,
            reference_image_url=params.reference_image_url,
            duration_seconds=choice.duration_seconds,
            aspect=choice.aspect,
            resolution=choice.resolution,
            vendor=choice.entry.vendor,
            model=choice.entry.model_id,
            byok=choice.credential.byok,
            cost_nano=choice.cost_nano,
            retention_days=retention,
            expires_at=now + timedelta(days=retention),
            created_at=now,
            updated_at=now,
        )
        try:
            job.hold = ledger.reserve(
                caller.account.pk, job.cost_nano, f"video:{job.public_id}", ttl=hold_ttl(), memo="video.generate"
            )
        except ledger.InsufficientCredit as refused:
            raise insufficient_credit_error(origin, refused) from refused
        job.save(update_fields=["hold"])
        _enqueue(job)
        _publish(job)
    return job


# --- Reading ----------------------------------------------------------------------------------


def get_job(account: Account, job_id: str) -> VideoJob:
    """The caller's live job, else 404 (another account's id, a deleted one, or nonsense)."""
    job = VideoJob.objects.filter(account=account, public_id=job_id, deleted_at__isnull=True).first()
    if job is None:
        raise ApiError(404, "NOT_FOUND", f"No video job {job_id!r} in your account.", field="id")
    return job


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, pk = text.partition(":")
        if prefix != "v1":
            raise ValueError(cursor)
        return int(pk)
    except (ValueError, UnicodeDecodeError) as exc:
        raise field_error("cursor", "cursor is not one this API gave out; use next_cursor of the last page.") from exc


def list_jobs(account: Account, cursor: str | None, limit: int) -> tuple[list[VideoJob], str | None]:
    jobs = VideoJob.objects.filter(account=account, deleted_at__isnull=True).order_by("-id")
    if cursor:
        jobs = jobs.filter(id__lt=decode_cursor(cursor))
    page = list(jobs[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, encode_cursor(page[-1].pk) if more else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def job_json(job: VideoJob, base_url: str, *, full: bool) -> dict[str, Any]:
    """The VideoJob answer. Artifacts appear only as signed URLs that expire."""
    body: dict[str, Any] = {"job_id": job.public_id, "state": job.state, "progress": job.progress}
    if job.state == VideoState.SUCCEEDED and job.video:
        ttl = settings.DOWNLOAD_URL_TTL_SECONDS
        body["video_url"], body["urls_expire_at"] = files.signed_url(base_url, job.video, ttl)
        if job.thumbnail:
            body["thumbnail_url"], _ = files.signed_url(base_url, job.thumbnail, ttl)
    if job.state == VideoState.FAILED:
        body["error"] = {"code": job.error_code or "VIDEO_FAILED", "message": job.error}
    if full:
        body.update(
            {
                "prompt": job.prompt,
                "duration_seconds": job.duration_seconds,
                "aspect": job.aspect,
                "resolution": job.resolution,
                "vendor": job.vendor,
                "model": job.model,
                "cost_usd": format_usd(job.cost_nano),
                "charged": job.state == VideoState.SUCCEEDED,
                "retention_days": job.retention_days,
                "expires_at": _iso(job.expires_at),
                "created_at": _iso(job.created_at),
                "started_at": _iso(job.started_at),
                "finished_at": _iso(job.finished_at),
            }
        )
    return body


def capabilities(account: Account) -> list[dict[str, Any]]:
    models: dict[str, list[str]] = {}
    for entry in CatalogModel.objects.filter(capability=CAPABILITY, enabled=True).order_by("model_id"):
        models.setdefault(entry.vendor, []).append(entry.model_id)
    out = []
    for vendor in VIDEO_VENDORS.values():
        if vendor.name == "sandbox" and not settings.SANDBOX_ENABLED:
            continue
        caps = vendor.capabilities
        out.append(
            {
                "vendor": vendor.name,
                "label": vendor.label,
                "models": models.get(vendor.name, []),
                "resolutions": list(caps.resolutions),
                "aspects": list(caps.aspects),
                "durations_seconds": list(caps.durations),
                "max_duration_seconds": caps.max_duration_seconds,
                "supports_extend": caps.supports_extend,
                "supports_upscale": caps.supports_upscale,
                "available": credential_for(account, vendor) is not None,
            }
        )
    return out


# --- Live updates -----------------------------------------------------------------------------


def _publish(job: VideoJob) -> None:
    live.publish(job.account.public_id, EVENT, {"job_id": job.public_id, "state": job.state, "progress": job.progress})


def _publish_row(pk: int) -> None:
    job = VideoJob.objects.select_related("account").filter(pk=pk).first()
    if job is not None:
        _publish(job)


# --- Closing a job ----------------------------------------------------------------------------


def _release(job: VideoJob) -> None:
    if job.hold_id is not None:
        ledger.release(Hold.objects.get(pk=job.hold_id))


def _stop(job: VideoJob, state: str, *, token: str | None = None, code: str = "", message: str = "") -> bool:
    """Move an unfinished job to failed or cancelled once, releasing its hold."""
    now = timezone.now()
    jobs = VideoJob.objects.filter(pk=job.pk, state__in=UNFINISHED)
    if token is not None:
        jobs = jobs.filter(lease_token=token, state=VideoState.RUNNING)
    with transaction.atomic():
        stopped = jobs.update(
            state=state,
            error_code=code,
            error=message,
            finished_at=now,
            updated_at=now,
            lease_token="",
            lease_expires_at=None,
        )
        if stopped:
            _release(job)
            _publish_row(job.pk)
    return bool(stopped)


def fail(job: VideoJob, code: str, message: str, token: str | None = None) -> bool:
    return _stop(job, VideoState.FAILED, token=token, code=code, message=message)


def cancel(job: VideoJob) -> VideoJob:
    """Cancel if not finished (the hold is released); cancelling twice is fine."""
    _stop(job, VideoState.CANCELLED)
    job.refresh_from_db()
    return job


def _job_folder(job: VideoJob) -> str:
    return f"videos/{job.account.public_id}/{job.public_id}"


def _delete_files(job: VideoJob) -> None:
    """Every stored file of the job (also any a dead worker left), then its folder."""
    folder = _job_folder(job)
    try:
        _, names = default_storage.listdir(folder)
    except (FileNotFoundError, NotImplementedError):
        names = []
    for name in set(names) | {n.rsplit("/", 1)[-1] for n in (job.video, job.thumbnail) if n}:
        default_storage.delete(f"{folder}/{name}")
    try:
        default_storage.delete(folder)  # FileSystemStorage removes the empty folder
    except OSError:
        pass


def delete(job: VideoJob) -> bool:
    """Cancel (releasing the hold) if unfinished, delete the files, keep a tombstone so that a
    repeated delete answers the same; tombstones are purged after the idempotency window."""
    _stop(job, VideoState.CANCELLED)
    now = timezone.now()
    marked = VideoJob.objects.filter(pk=job.pk, deleted_at__isnull=True).update(
        deleted_at=now, updated_at=now, prompt="", reference_image_url="", error=""
    )
    _delete_files(job)
    VideoJob.objects.filter(pk=job.pk).update(video="", thumbnail="")
    return bool(marked)


def delete_by_id(account: Account, job_id: str) -> None:
    job = VideoJob.objects.select_related("account").filter(account=account, public_id=job_id).first()
    if job is None:
        raise ApiError(404, "NOT_FOUND", f"No video job {job_id!r} in your account.", field="id")
    if job.deleted_at is None:
        delete(job)


def delete_all(account: Account) -> int:
    deleted = 0
    while True:
        batch = list(VideoJob.objects.select_related("account").filter(account=account, deleted_at__isnull=True)[:200])
        if not batch:
            return deleted
        deleted += sum(delete(job) for job in batch)


def set_retention(job: VideoJob, days: int) -> VideoJob:
    """Keep the job `days` days after its creation; a later chore deletes it and its files."""
    VideoJob.objects.filter(pk=job.pk).update(
        retention_days=days, expires_at=job.created_at + timedelta(days=days), updated_at=timezone.now()
    )
    job.refresh_from_db()
    return job


def parse_days(body: dict[str, Any]) -> int:
    days = body.get("days")
    if days is None:
        raise field_error(
            "days",
            f"days is required: a whole number of days from 1 to {conf.MAX_RETENTION_DAYS}.",
            code="MISSING_FIELD",
        )
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= conf.MAX_RETENTION_DAYS:
        raise field_error(
            "days", f"days must be a whole number of days from 1 to {conf.MAX_RETENTION_DAYS}, not {days!r}."
        )
    return days


# --- The worker -------------------------------------------------------------------------------


def lease() -> timedelta:
    return timedelta(seconds=settings.JOB_LEASE_SECONDS)


class LeaseCheckpoint:
    """Saves progress and renews the lease, at most every few percent or every second (and at
    least every quarter lease); raises JobStopped once the job is not this worker's any more."""

    def __init__(self, job: VideoJob, token: str) -> None:
        self.job = job
        self.token = token
        self.saved_percent = job.progress
        self.saved_at = time.monotonic()
        self.renew_every = max(1.0, settings.JOB_LEASE_SECONDS / 4)

    def _save(self, **fields: Any) -> None:
        now = timezone.now()
        updated = VideoJob.objects.filter(pk=self.job.pk, state=VideoState.RUNNING, lease_token=self.token).update(
            lease_expires_at=now + lease(), updated_at=now, **fields
        )
        if not updated:
            raise JobStopped(self.job.public_id)
        if "progress" in fields:
            self.job.progress = fields["progress"]
            _publish(self.job)

    async def progress(self, percent: int) -> None:
        elapsed = time.monotonic() - self.saved_at
        changed = percent != self.saved_percent
        if (changed and (percent >= self.saved_percent + 5 or elapsed >= 1.0)) or elapsed >= self.renew_every:
            await sync_to_async(self._save)(progress=percent)
            self.saved_percent = percent
            self.saved_at = time.monotonic()

    async def remember(self, vendor_job_id: str) -> None:
        await sync_to_async(self._save)(vendor_job_id=vendor_job_id)
        self.job.vendor_job_id = vendor_job_id


def claim(job_id: str, token: str) -> VideoJob | None:
    """Take a queued job for this worker with one conditional UPDATE; None if someone else has it."""
    now = timezone.now()
    claimed = VideoJob.objects.filter(public_id=job_id, state=VideoState.QUEUED, deleted_at__isnull=True).update(
        state=VideoState.RUNNING,
        lease_token=token,
        lease_expires_at=now + lease(),
        attempts=F("attempts") + 1,
        started_at=Coalesce(F("started_at"), Value(now, output_field=DateTimeField())),
        updated_at=now,
    )
    if not claimed:
        return None
    job = VideoJob.objects.select_related("account").get(public_id=job_id)
    _publish(job)
    return job


async def _make(job: VideoJob, vendor: VideoVendor, credential: Credential, checkpoint: LeaseCheckpoint) -> Rendered:
    reference = None
    if job.reference_image_url:
        reference, _ = await media(job.reference_image_url, "reference_image_url")
        try:
            with Image.open(io.BytesIO(reference)) as image:
                image.verify()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise field_error("reference_image_url", "reference_image_url is not an image that can be read.") from exc
    spec = VideoSpec(
        prompt=job.prompt,
        duration_seconds=job.duration_seconds,
        aspect=job.aspect,
        resolution=job.resolution,
        model=job.model,
        reference_image=reference,
    )
    return await vendor.run(spec, credential, job.vendor_job_id, checkpoint)


def run_job(job_id: str) -> str:
    """The task body: claim, make the clip, store it, settle; or retry, fail and release."""
    token = uuid.uuid4().hex
    job = claim(job_id, token)
    if job is None:
        return "not queued"
    started = time.monotonic()
    vendor = get_video_vendor(job.vendor)
    credential: Credential | None = None
    try:
        credential = credential_for(job.account, vendor) if vendor else None
        if vendor is None or credential is None:
            raise ApiError(
                400, "VENDOR_NOT_CONFIGURED", f"No credential for {job.vendor} on this server any more; not charged."
            )
        rendered = async_to_sync(_make)(job, vendor, credential, LeaseCheckpoint(job, token))
    except JobStopped:
        return "stopped"
    except VendorError as exc:
        exc.message = redact_secret(exc.message, credential.api_key if credential else "")  # upstreams may echo it
        return _vendor_failed(job, token, exc)
    except ApiError as exc:  # no credential (any more), or the reference image could not be fetched or read
        fail(job, exc.code, exc.message, token)
        return "failed"
    except Exception:
        log.exception("video job %s failed", job.public_id)
        fail(job, "INTERNAL_ERROR", "The video could not be made (an error on our side); you were not charged.", token)
        return "failed"
    return _finish(job, token, rendered, int((time.monotonic() - started) * 1000))


def _vendor_failed(job: VideoJob, token: str, exc: VendorError) -> str:
    if exc.retryable and job.attempts < conf.get_int("VIDEO_MAX_ATTEMPTS"):
        delay = conf.get("VIDEO_RETRY_BASE_SECONDS") * 2 ** (job.attempts - 1)
        now = timezone.now()
        with transaction.atomic():
            requeued = VideoJob.objects.filter(pk=job.pk, state=VideoState.RUNNING, lease_token=token).update(
                state=VideoState.QUEUED,
                lease_token="",
                lease_expires_at=None,
                error_code=exc.code,
                error=exc.message,
                updated_at=now,
            )
            if requeued:
                _enqueue(job, delay)
                _publish_row(job.pk)
        return "retrying"
    fail(job, exc.code, exc.message, token)
    return "failed"


def _store(job: VideoJob, rendered: Rendered) -> tuple[str, str]:
    folder = _job_folder(job)
    video = default_storage.save(f"{folder}/{uuid.uuid4().hex}.mp4", ContentFile(rendered.video))
    thumbnail = ""
    if rendered.thumbnail:
        name = f"{folder}/{uuid.uuid4().hex}.{rendered.thumbnail_extension}"
        thumbnail = default_storage.save(name, ContentFile(rendered.thumbnail))
    return video, thumbnail


def _charge(job: VideoJob, latency_ms: int) -> None:
    """Settle the hold with the usage record, once. Should the hold have been swept (it outlives
    the job deadline, so only by hand), the same charge is posted under the same reference."""

    def write_usage(_: ledger.Posting) -> None:
        UsageRecord.objects.create(
            request_id=job.request_id,
            account_id=job.account_id,
            project_id=job.project_id,
            key_id=job.key_id,
            capability=CAPABILITY,
            model=job.model,
            vendor=job.vendor,
            units={"seconds": job.duration_seconds},
            cost_nano=job.cost_nano,
            latency_ms=latency_ms,
            byok=job.byok,
        )

    hold = Hold.objects.get(pk=job.hold_id) if job.hold_id else None
    if hold is not None and ledger.settle(hold, job.cost_nano, also=write_usage):
        return
    hold_state = hold.state if hold is not None else None
    if hold_state in (None, HoldState.EXPIRED):
        lines = []
        if job.cost_nano:
            lines.append(
                ledger.Line(
                    kind=EntryKind.USAGE,
                    reference=f"usage:video:{job.public_id}",
                    amount_nano=-job.cost_nano,
                    memo="video.generate",
                )
            )
        try:
            ledger.post(job.account_id, lines, also=write_usage)
        except ledger.DuplicateReference:
            pass


def _finish(job: VideoJob, token: str, rendered: Rendered, latency_ms: int) -> str:
    video, thumbnail = _store(job, rendered)
    now = timezone.now()
    with transaction.atomic():
        done = VideoJob.objects.filter(pk=job.pk, state=VideoState.RUNNING, lease_token=token).update(
            state=VideoState.SUCCEEDED,
            progress=100,
            video=video,
            thumbnail=thumbnail,
            error_code="",
            error="",
            finished_at=now,
            updated_at=now,
            lease_token="",
            lease_expires_at=None,
        )
        if done:
            _charge(job, latency_ms)
            _publish_row(job.pk)
    if not done:  # cancelled, deleted or taken over meanwhile: nothing is kept or charged
        for name in (video, thumbnail):
            if name:
                default_storage.delete(name)
        return "stopped"
    return "succeeded"


# --- Housekeeping chores ----------------------------------------------------------------------


def requeue_abandoned_jobs() -> int:
    """Running jobs whose lease ran out (their worker died) go back to the queue, or fail after
    VIDEO_MAX_ATTEMPTS runs; queued jobs whose task is gone are enqueued again."""
    from django_tasks_db.models import DBTaskResult

    now = timezone.now()
    count = 0
    max_attempts = conf.get_int("VIDEO_MAX_ATTEMPTS")
    abandoned = VideoJob.objects.select_related("account").filter(
        state=VideoState.RUNNING, lease_expires_at__lt=now, deleted_at__isnull=True
    )
    for job in abandoned[:500]:
        if job.attempts >= max_attempts:
            count += fail(
                job,
                "WORKER_LOST",
                f"The video job's worker stopped {job.attempts} times; you were not charged.",
                job.lease_token,
            )
            continue
        with transaction.atomic():
            requeued = VideoJob.objects.filter(pk=job.pk, state=VideoState.RUNNING, lease_token=job.lease_token).update(
                state=VideoState.QUEUED, lease_token="", lease_expires_at=None, progress=0, updated_at=now
            )
            if requeued:
                _enqueue(job)
                _publish_row(job.pk)
                count += 1
    stale = VideoJob.objects.select_related("account").filter(
        state=VideoState.QUEUED, updated_at__lt=now - lease(), deleted_at__isnull=True
    )
    for job in stale[:500]:
        waiting = DBTaskResult.objects.filter(id=job.task_id, status="READY").exists() if job.task_id else False
        if not waiting:
            _enqueue(job)
            VideoJob.objects.filter(pk=job.pk).update(updated_at=now)
            count += 1
    return count


def fail_overdue_jobs() -> int:
    cutoff = timezone.now() - timedelta(seconds=conf.get_int("VIDEO_JOB_DEADLINE_SECONDS"))
    overdue = VideoJob.objects.select_related("account").filter(state__in=UNFINISHED, created_at__lt=cutoff)
    return sum(
        fail(job, "DEADLINE_EXCEEDED", "The video was not ready in time; you were not charged.")
        for job in overdue[:500]
    )


def purge_expired_jobs() -> int:
    """Jobs past `expires_at` lose their files and rows; delete tombstones go after the
    idempotency window."""
    now = timezone.now()
    purged = 0
    expired = VideoJob.objects.select_related("account").filter(expires_at__lte=now, deleted_at__isnull=True)
    for job in expired[:500]:
        _stop(job, VideoState.CANCELLED)
        _delete_files(job)
        purged += VideoJob.objects.filter(pk=job.pk).delete()[0]
    window = timedelta(seconds=settings.IDEMPOTENCY_WINDOW_SECONDS)
    purged += VideoJob.objects.filter(deleted_at__lte=now - window).delete()[0]
    return purged
