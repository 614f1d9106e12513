"""The console's Jobs table: an account's batches and video jobs as rows, filtered and merged
newest first. Only reading and shaping lives here; the rules stay in batches/batch.py and
videos/video.py."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from itertools import islice
from typing import Any

from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from batches.batch import progress as batch_progress
from batches.models import ACTIVE_BATCH_STATES, Batch, BatchExport, BatchState
from console.models import Account
from jobs import actions
from videos.models import UNFINISHED, VideoJob, VideoState

KINDS = ("batch", "video")
PAGE_SIZE = 25
MAX_SEARCH = 200
# One filter vocabulary for both kinds: a batch "completed" and a video "succeeded" are both done.
STATES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "active": ("Active (queued or running)", tuple(ACTIVE_BATCH_STATES), tuple(UNFINISHED)),
    "queued": ("Queued", (BatchState.QUEUED,), (VideoState.QUEUED,)),
    "running": ("Running", (BatchState.RUNNING,), (VideoState.RUNNING,)),
    "completed": ("Completed / succeeded", (BatchState.COMPLETED,), (VideoState.SUCCEEDED,)),
    "failed": ("Failed", (BatchState.FAILED,), (VideoState.FAILED,)),
    "cancelled": ("Cancelled", (BatchState.CANCELLED,), (VideoState.CANCELLED,)),
}
GOOD_STATES = {BatchState.COMPLETED, VideoState.SUCCEEDED}
BAD_STATES = {BatchState.FAILED, VideoState.FAILED}


@dataclass(frozen=True)
class Filters:
    kind: str = ""
    state: str = ""
    project: str = ""
    q: str = ""
    since: date | None = None
    until: date | None = None

    @property
    def active(self) -> bool:
        return any((self.kind, self.state, self.project, self.q, self.since, self.until))


def parse_filters(params: Mapping[str, str], project_ids: Collection[str] = ()) -> tuple[Filters, dict[str, str]]:
    """The filters of a query string, and a message per field that did not parse (that field is
    then ignored, the others still apply). `project_ids`: the caller's projects."""
    errors: dict[str, str] = {}
    kind = params.get("kind", "").strip()
    if kind and kind not in KINDS:
        errors["kind"] = "kind must be batch or video."
        kind = ""
    state = params.get("state", "").strip()
    if state and state not in STATES:
        errors["state"] = f"state must be one of {', '.join(STATES)}."
        state = ""
    project = params.get("project", "").strip()
    if project and project not in project_ids:
        errors["project"] = "project must be one of your projects."
        project = ""
    q = params.get("q", "").strip()
    if len(q) > MAX_SEARCH:
        errors["q"] = f"Search text may be at most {MAX_SEARCH} characters."
        q = ""
    dates: dict[str, date | None] = {}
    for name in ("since", "until"):
        raw = params.get(name, "").strip()
        try:
            dates[name] = date.fromisoformat(raw) if raw else None
        except ValueError:
            errors[name] = f"{name} must be a date like 2026-01-31."
            dates[name] = None
    since, until = dates["since"], dates["until"]
    if since and until and since > until and "until" not in errors:
        errors["until"] = "until must be on or after since."
        until = None
    return Filters(kind=kind, state=state, project=project, q=q, since=since, until=until), errors


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _created_range(filters: Filters) -> Q:
    where = Q()
    if filters.since:
        where &= Q(created_at__gte=_day_start(filters.since))
    if filters.until:
        where &= Q(created_at__lt=_day_start(filters.until + timedelta(days=1)))
    return where


def batches_for(account: Account, filters: Filters) -> QuerySet[Batch]:
    batches = Batch.objects.filter(account=account).filter(_created_range(filters))
    if filters.state:
        batches = batches.filter(state__in=STATES[filters.state][1])
    if filters.project:
        batches = batches.filter(project__public_id=filters.project)
    if filters.q:
        batches = batches.filter(Q(public_id__icontains=filters.q) | Q(metadata__icontains=filters.q))
    return batches.order_by("-created_at", "-id")


def videos_for(account: Account, filters: Filters) -> QuerySet[VideoJob]:
    jobs = VideoJob.objects.filter(account=account, deleted_at__isnull=True).filter(_created_range(filters))
    if filters.state:
        jobs = jobs.filter(state__in=STATES[filters.state][2])
    if filters.project:
        jobs = jobs.filter(project__public_id=filters.project)
    if filters.q:
        jobs = jobs.filter(
            Q(public_id__icontains=filters.q) | Q(prompt__icontains=filters.q) | Q(model__icontains=filters.q)
        )
    return jobs.order_by("-created_at", "-id")


# --- Rows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionLink:
    name: str
    label: str
    url: str
    danger: bool


def action_links(kind: str, public_id: str, names: list[str]) -> list[ActionLink]:
    catalog = actions.BATCH_ACTIONS if kind == "batch" else actions.VIDEO_ACTIONS
    return [
        ActionLink(name, catalog[name].label, action_url(kind, public_id, name), catalog[name].danger) for name in names
    ]


def detail_url(kind: str, public_id: str) -> str:
    return reverse(f"console:job_{kind}", args=[public_id])


def action_url(kind: str, public_id: str, action: str) -> str:
    return reverse(f"console:job_{kind}_{action}", args=[public_id])


@dataclass
class JobRow:
    kind: str
    public_id: str
    state: str
    active: bool
    percent: int
    summary: str
    title: str
    cost_nano: int
    cost_note: str
    created_at: datetime
    expires_at: datetime | None
    expiry_note: str
    actions: list[ActionLink] = field(default_factory=list)
    can_download: bool = False

    @property
    def detail_url(self) -> str:
        return detail_url(self.kind, self.public_id)

    @property
    def download_url(self) -> str:
        return reverse(f"console:job_{self.kind}_download", args=[self.public_id])

    @property
    def tone(self) -> str:
        if self.state in GOOD_STATES:
            return "ok"
        if self.state in BAD_STATES:
            return "bad"
        return "active" if self.active else ""


def describe_metadata(metadata: Any) -> str:
    if not isinstance(metadata, dict) or not metadata:
        return ""
    return ", ".join(f"{key}: {value}" for key, value in list(metadata.items())[:3])[:120]


def batch_row(batch: Batch, has_export: bool = False) -> JobRow:
    active = batch.state in ACTIVE_BATCH_STATES
    parts = [f"{batch.finished_count} of {batch.total_count} done"]
    if batch.failed_count:
        parts.append(f"{batch.failed_count} failed")
    if batch.cancelled_count:
        parts.append(f"{batch.cancelled_count} cancelled")
    if batch.purged_at is not None:
        expiry_note = "results deleted"
    elif batch.expires_at is None:
        expiry_note = f"{batch.retention_days} days after it finishes"
    else:
        expiry_note = ""
    return JobRow(
        kind="batch",
        public_id=batch.public_id,
        state=batch.state,
        active=active,
        percent=int(batch_progress(batch) * 100),
        summary=", ".join(parts),
        title=describe_metadata(batch.metadata),
        cost_nano=batch.total_cost_nano,
        cost_note="so far, holding the rest" if active else "charged",
        created_at=batch.created_at,
        expires_at=None if batch.purged_at else batch.expires_at,
        expiry_note=expiry_note,
        actions=action_links("batch", batch.public_id, actions.batch_action_names(batch)),
        can_download=has_export and batch.purged_at is None,
    )


def video_row(job: VideoJob) -> JobRow:
    succeeded = job.state == VideoState.SUCCEEDED
    active = job.state in UNFINISHED
    return JobRow(
        kind="video",
        public_id=job.public_id,
        state=job.state,
        active=active,
        percent=100 if succeeded else job.progress,
        summary=f"{job.duration_seconds} s, {job.resolution}, {job.aspect}",
        title=job.prompt[:120],
        cost_nano=job.cost_nano if (succeeded or active) else 0,
        cost_note="charged" if succeeded else ("held until it finishes" if active else "not charged"),
        created_at=job.created_at,
        expires_at=job.expires_at,
        expiry_note="",
        actions=action_links("video", job.public_id, actions.video_action_names(job)),
        can_download=succeeded and bool(job.video),
    )


@dataclass
class JobPage:
    rows: list[JobRow]
    number: int
    num_pages: int
    count: int

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.num_pages

    @property
    def any_active(self) -> bool:
        return any(row.active for row in self.rows)


def _page_number(raw: str | None, num_pages: int) -> int:
    try:
        number = int(raw or 1)
    except ValueError:
        number = 1
    return min(max(number, 1), num_pages)


def job_page(account: Account, filters: Filters, page: str | None = None) -> JobPage:
    """One page of the merged table. Both lists are ordered by creation, so the first
    `page x PAGE_SIZE` keys of each decide the page's rows; only those rows are then loaded."""
    batches = batches_for(account, filters) if filters.kind in ("", "batch") else Batch.objects.none()
    videos = videos_for(account, filters) if filters.kind in ("", "video") else VideoJob.objects.none()
    count = batches.count() + videos.count()
    num_pages = max(1, -(-count // PAGE_SIZE))
    number = _page_number(page, num_pages)
    reach = number * PAGE_SIZE
    merged = heapq.merge(
        ((created, "batch", pk) for created, pk in batches.values_list("created_at", "pk")[:reach]),
        ((created, "video", pk) for created, pk in videos.values_list("created_at", "pk")[:reach]),
        key=lambda entry: entry[0],
        reverse=True,
    )
    chosen = list(islice(merged, reach - PAGE_SIZE, reach))
    batch_pks = [pk for _, kind, pk in chosen if kind == "batch"]
    video_pks = [pk for _, kind, pk in chosen if kind == "video"]
    loaded_batches = Batch.objects.in_bulk(batch_pks) if batch_pks else {}
    loaded_videos = VideoJob.objects.in_bulk(video_pks) if video_pks else {}
    exported = set(
        BatchExport.objects.filter(batch_id__in=batch_pks, conversation_id="").values_list("batch_id", flat=True)
    )
    rows = [
        batch_row(loaded_batches[pk], pk in exported) if kind == "batch" else video_row(loaded_videos[pk])
        for _, kind, pk in chosen
    ]
    return JobPage(rows=rows, number=number, num_pages=num_pages, count=count)


# --- A batch item's result, in a line ---------------------------------------------------------


@dataclass(frozen=True)
class ResultSummary:
    text: str
    links: list[tuple[str, str]]  # (label, signed URL)


def result_summary(capability: str, result: dict[str, Any] | None) -> ResultSummary:
    """What a person wants to see of an item's result in a table cell (the export has it all)."""
    if not result:
        return ResultSummary("", [])
    if capability == "chat":
        return ResultSummary(str(result.get("content") or "")[:300], [])
    if capability == "embed":
        embeddings = result.get("embeddings") or []
        width = len(embeddings[0]) if embeddings and isinstance(embeddings[0], list) else 0
        return ResultSummary(f"{len(embeddings)} embedding(s) of {width} dimensions", [])
    if capability == "image":
        images = result.get("images") or []
        links = [(f"Image {n}", image["url"]) for n, image in enumerate(images, 1) if image.get("url")]
        return ResultSummary(f"{len(images)} image(s)", links)
    if capability == "tts":
        link = [("Audio", result["audio_url"])] if result.get("audio_url") else []
        return ResultSummary(f"{result.get('duration_seconds', '?')} s of {result.get('format', 'audio')}", link)
    if capability == "rerank":
        return ResultSummary(f"{len(result.get('results') or [])} ranked document(s)", [])
    return ResultSummary(", ".join(sorted(result))[:120], [])
