"""The playground's Video tab: the form (htmx, or a plain POST without JavaScript), the estimate,
the rows of recent jobs, their polling endpoint and cancel. Rules live in playground/video_tab.py
and videos/video.py; another account's job id answers 404 like an unknown one."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from gateway.api import ApiError, Caller
from playground import runs, snippets, video_tab
from playground.views import _caller, _error_status, _page_context
from videos import video
from videos.models import VideoJob

PAGE = "playground/video.html"


def _code(request: HttpRequest, job: VideoJob) -> dict[str, str]:
    return snippets.video(runs.base_url_of(request), video_tab.job_request(job))


def _estimate(caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return video_tab.estimate(caller.account, body)
    except ApiError as exc:
        return {"error": runs.error_payload(exc, "video")}


def _form_context(caller: Caller, form: dict[str, Any], error: dict[str, Any] | None = None) -> dict[str, Any]:
    options = video_tab.model_options(caller.account)
    return {
        "form": form,
        "error": error,
        "shown_fields": video_tab.SHOWN_FIELDS,
        "idempotency_key": uuid.uuid4().hex,
        "estimate": _estimate(caller, video_tab.body_of(form, with_prompt=False)),
        **video_tab.form_choices(options),
    }


def _page(request: HttpRequest, caller: Caller, status: int = 200, **extra: Any) -> HttpResponse:
    jobs = video_tab.recent_jobs(caller.account)
    context = {
        **_page_context(request, caller, "video"),
        "jobs": video_tab.rows(jobs, runs.base_url_of(request)),
        "live_updates": video_tab.live_updates_reach_pages(),
        "poll_seconds": video_tab.POLL_SECONDS,
        "unfinished": any(not job.finished for job in jobs),
        **extra,
    }
    return render(request, PAGE, context, status=status)


def _job_or_404(caller: Caller, job_id: str) -> VideoJob | JsonResponse:
    try:
        return video.get_job(caller.account, job_id)
    except ApiError as exc:
        return JsonResponse({"error": {"code": exc.code, "message": exc.message, "field": "job_id"}}, status=404)


@require_GET
@login_required
def video_page(request: HttpRequest) -> HttpResponse:
    """The tab; after a plain-form submit (`?created=`), with that run's code."""
    caller = _caller(request)
    extra: dict[str, Any] = {}
    created = request.GET.get("created")
    if created:
        job = VideoJob.objects.filter(account=caller.account, public_id=created, deleted_at__isnull=True).first()
        if job is not None:
            extra["code"] = _code(request, job)
    return _page(request, caller, **_form_context(caller, video_tab.initial_form()), **extra)


@require_POST
@login_required
def video_generate(request: HttpRequest) -> HttpResponse:
    caller = _caller(request)
    body = video_tab.body_of(request.POST)
    form = {name: request.POST.get(name, "") for name in ("prompt", *video_tab.FORM_FIELDS)}
    try:
        job = video_tab.create(request, caller, body, request.POST.get("idempotency_key", ""))
    except ApiError as exc:
        context = _form_context(caller, form, runs.error_payload(exc, "video"))
        if request.htmx:  # type: ignore[attr-defined]
            return render(request, "playground/_video_form.html", context)
        return _page(request, caller, status=_error_status(exc), **context)
    if not request.htmx:  # type: ignore[attr-defined]
        return redirect(f"{reverse('console:playground_video')}?created={job.public_id}")
    context = {
        **_form_context(caller, form),
        "new_job": video_tab.row(job, runs.base_url_of(request)),
        "code": _code(request, job),
    }
    return render(request, "playground/_video_created.html", context)


@require_GET
@login_required
def video_estimate(request: HttpRequest) -> HttpResponse:
    caller = _caller(request)
    estimate = _estimate(caller, video_tab.body_of(request.GET, with_prompt=False))
    return render(request, "playground/_video_estimate.html", {"estimate": estimate})


@require_GET
@login_required
def video_jobs(request: HttpRequest) -> JsonResponse:
    """The polling endpoint: `?ids=vid_a,vid_b` → their state and progress (the caller's only)."""
    caller = _caller(request)
    return JsonResponse({"jobs": video_tab.polled(caller.account, request.GET.get("ids", ""))})


@require_GET
@login_required
def video_job(request: HttpRequest, job_id: str) -> HttpResponse:
    """One row, as the list shows it (the page swaps it in when the job's state changes)."""
    caller = _caller(request)
    job = _job_or_404(caller, job_id)
    if isinstance(job, JsonResponse):
        return job
    html = render_to_string(
        "playground/_video_job.html", {"job": video_tab.row(job, runs.base_url_of(request))}, request=request
    )
    return HttpResponse(html)


@require_POST
@login_required
def video_cancel(request: HttpRequest, job_id: str) -> HttpResponse:
    caller = _caller(request)
    job = _job_or_404(caller, job_id)
    if isinstance(job, JsonResponse):
        return job
    job = video.cancel(job)
    if not request.htmx:  # type: ignore[attr-defined]
        return redirect(reverse("console:playground_video"))
    return render(request, "playground/_video_job.html", {"job": video_tab.row(job, runs.base_url_of(request))})
