"""The console's Jobs pages: the table of batches and video jobs, a page per job, and the row
actions (a confirmation page, or the same form in a dialog, then one rule and a flash message).

Every lookup goes through get_batch/get_job with the signed-in account: another account's id is
a 404. htmx requests (the pages' refresh, the dialog) get the partial, always with 200: htmx
swaps only 2xx, and browsers log every 4xx as a console error."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods

from batches import batch as batch_rules
from batches.models import ACTIVE_BATCH_STATES, Batch, ItemState
from console import accounts
from console.models import Account
from gateway import files
from gateway.api import ApiError
from jobs import actions, tables
from videos import video as video_rules
from videos.models import UNFINISHED, VideoJob, VideoState

REFRESH_SECONDS = 5
RESULTS_PER_PAGE = 20


def _account(request: HttpRequest) -> Account:
    return accounts.ensure_account(request.user)  # type: ignore[arg-type]


def _batch(request: HttpRequest, batch_id: str) -> Batch:
    try:
        return batch_rules.get_batch(_account(request), batch_id)
    except ApiError as exc:
        raise Http404(exc.message) from exc


def _video(request: HttpRequest, job_id: str) -> VideoJob:
    try:
        return video_rules.get_job(_account(request), job_id)
    except ApiError as exc:
        raise Http404(exc.message) from exc


def live_across_processes() -> bool:
    """Whether job workers' events reach this server's sockets: not with the in-memory layer."""
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    return bool(backend) and not backend.endswith("InMemoryChannelLayer")


def _page(request: HttpRequest, full: str, partial: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    context = {
        "nav": "jobs",
        "refresh_seconds": REFRESH_SECONDS,
        "live_across_processes": live_across_processes(),
        **context,
    }
    if request.htmx:  # type: ignore[attr-defined]
        response = render(request, partial, context)
    else:
        response = render(request, full, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


# --- The table --------------------------------------------------------------------------------


@login_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    account = _account(request)
    projects = list(account.projects.order_by("name").values_list("public_id", "name"))
    filters, errors = tables.parse_filters(request.GET, {public_id for public_id, _ in projects})
    page = tables.job_page(account, filters, request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "filters": filters,
        "errors": errors,
        "page": page,
        "query": query.urlencode(),
        "projects": projects,
        "states": [(name, label) for name, (label, _, _) in tables.STATES.items()],
        "here": request.get_full_path(),
    }
    return _page(request, "jobs/list.html", "jobs/_table.html", context, status=400 if errors else 200)


# --- Detail pages -----------------------------------------------------------------------------


def _signed(request: HttpRequest, name: str) -> str:
    url, _ = files.signed_url(files.base_url_of(request), name, settings.DOWNLOAD_URL_TTL_SECONDS)
    return url


@login_required
@require_GET
def batch_detail(request: HttpRequest, batch_id: str) -> HttpResponse:
    batch = _batch(request, batch_id)
    base_url = files.base_url_of(request)
    item_state = request.GET.get("item_state", "")
    item_states = [value for value, _ in ItemState.choices]
    chosen_items = batch.items.order_by("index")
    errors = {}
    if item_state in item_states:
        chosen_items = chosen_items.filter(state=item_state)
    elif item_state:
        errors["item_state"] = f"item_state must be one of {', '.join(item_states)}."
        item_state = ""
    results = Paginator(chosen_items, RESULTS_PER_PAGE).get_page(request.GET.get("page"))
    items = [
        {
            "item": item,
            "summary": tables.result_summary(item.capability, batch_rules.rendered_result(item, base_url)),
            "error": item.error or {},
        }
        for item in results
    ]
    exports = [
        {"export": made, "url": _signed(request, made.file_name)}
        for made in batch.exports.order_by("-created_at", "-id")
    ]
    context = {
        "batch": batch,
        "row": tables.batch_row(batch, has_export=bool(exports)),
        "active": batch.state in ACTIVE_BATCH_STATES,
        "item_state": item_state,
        "errors": errors,
        "item_states": item_states,
        "remaining": batch.total_count - batch.finished_count,
        "metadata_json": json.dumps(batch.metadata, ensure_ascii=False, indent=1) if batch.metadata else "",
        "results": results,
        "items": items,
        "exports": exports,
        "here": request.get_full_path(),
    }
    return _page(request, "jobs/batch.html", "jobs/_batch_body.html", context, status=400 if errors else 200)


@login_required
@require_GET
def video_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    job = _video(request, job_id)
    ready = job.state == VideoState.SUCCEEDED and bool(job.video)
    context = {
        "job": job,
        "row": tables.video_row(job),
        "active": job.state in UNFINISHED,
        "video_url": _signed(request, job.video) if ready else "",
        "thumbnail_url": _signed(request, job.thumbnail) if ready and job.thumbnail else "",
        "here": request.get_full_path(),
    }
    return _page(request, "jobs/video.html", "jobs/_video_body.html", context)


@login_required
@require_GET
def batch_download(request: HttpRequest, batch_id: str) -> HttpResponse:
    """The latest whole-batch export's file, through a fresh signed URL."""
    batch = _batch(request, batch_id)
    latest = batch.exports.filter(conversation_id="").order_by("-created_at", "-id").first()
    if latest is None or batch.purged_at is not None:
        messages.error(request, f"Batch {batch.public_id} has no export to download yet: export it first.")
        return redirect("console:job_batch", batch_id=batch.public_id)
    return redirect(_signed(request, latest.file_name))


@login_required
@require_GET
def video_download(request: HttpRequest, job_id: str) -> HttpResponse:
    job = _video(request, job_id)
    if job.state != VideoState.SUCCEEDED or not job.video:
        messages.error(request, f"Video job {job.public_id} is {job.state}: there is a video only once it succeeded.")
        return redirect("console:job_video", job_id=job.public_id)
    return redirect(_signed(request, job.video))


# --- Row actions ------------------------------------------------------------------------------


def _next(request: HttpRequest, fallback: str, *, only_list: bool = False) -> str:
    """Where to go after an action: the page it was started from, if it is one of ours."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure())
    if not safe or not target.startswith("/"):
        return fallback
    if only_list and urlsplit(target).path != reverse("console:jobs"):
        return fallback
    return target


def _act(request: HttpRequest, job: Batch | VideoJob, action: actions.Action, detail: str) -> HttpResponse:
    kind = "batch" if isinstance(job, Batch) else "video"
    allowed = actions.allowed(job, action)
    form = action.form(request.POST or None, initial=action.initial(job)) if action.form else None
    gone_after = kind == "video" and action.name == "delete"
    fallback = reverse("console:jobs") if gone_after else detail
    if request.method == "POST" and allowed and (form is None or form.is_valid()):
        cleaned = form.cleaned_data if form is not None else {}
        messages.success(request, action.perform(job, cleaned, files.base_url_of(request)))
        return redirect(_next(request, fallback, only_list=gone_after))
    if not allowed:
        status = 409
    elif form is not None and form.errors:
        status = 400
    else:
        status = 200
    context = {
        "job": job,
        "kind": kind,
        "action": action,
        "allowed": allowed,
        "refusal": "" if allowed else actions.refusal(job, action),
        "question": action.question.format(id=job.public_id),
        "form": form,
        "detail_url": detail,
        "next": _next(request, fallback, only_list=gone_after),
        "post_url": request.path,
    }
    return _page(request, "jobs/confirm.html", "jobs/_confirm.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def batch_action(request: HttpRequest, batch_id: str, action: str) -> HttpResponse:
    batch = _batch(request, batch_id)
    return _act(request, batch, actions.BATCH_ACTIONS[action], tables.detail_url("batch", batch.public_id))


@login_required
@require_http_methods(["GET", "POST"])
def video_action(request: HttpRequest, job_id: str, action: str) -> HttpResponse:
    job = _video(request, job_id)
    return _act(request, job, actions.VIDEO_ACTIONS[action], tables.detail_url("video", job.public_id))
