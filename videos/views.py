"""`/v1/video/*`: parse, call the rules in videos/video.py, answer. Every lookup is the caller's
account's: another account's job id is a 404 like an unknown one."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from gateway import files, idempotency
from gateway.api import ApiError, ApiRequestState, Caller, api_view, field_error, metadata, parse_json_body
from infrai.lib.money import format_usd
from videos import video
from videos.models import VideoJob, VideoState


def _caller(state: ApiRequestState) -> Caller:
    assert state.caller is not None
    return state.caller


def _optional_body(request: HttpRequest) -> dict[str, Any]:
    """The JSON body of a call that needs none: read when sent as JSON, else ignored."""
    if request.content_type == "application/json":
        return parse_json_body(request)
    return {}


def _same_job(body: dict[str, Any], job_id: str) -> None:
    """The seed's examples repeat the id as `job_id` in the body: it must be the path's."""
    if "job_id" in body and body["job_id"] != job_id:
        raise field_error("job_id", "job_id in the body differs from the id in the path; send one job's id.")


def _idempotency_key(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> str | None:
    key = idempotency.explicit_key(request, body, required=False)
    if key is None:
        client_request_id = request.headers.get("X-Client-Request-Id") or body.get("request_id")
        if client_request_id:
            key = idempotency.derived_key(caller.account, str(client_request_id), "video.generate", body)
    return key


@api_view(["POST"])
def generate(request: HttpRequest, state: ApiRequestState) -> dict[str, Any]:
    caller = _caller(state)
    body = parse_json_body(request)
    params = video.parse_generate(body)
    choice = video.choose(caller.account, params)
    base_url = files.base_url_of(request)

    def create() -> tuple[int, dict[str, Any], dict[str, Any]]:
        job = video.create_job(caller, state.request_id, params, choice, request)
        answer = video.job_json(job, base_url, full=False)
        answer["_metadata"] = metadata(state, vendor=job.vendor, cost_usd=format_usd(job.cost_nano), model=job.model)
        return 202, answer, answer

    key = _idempotency_key(request, caller, body)
    if key is None:
        _, answer, _ = create()
        return {**answer, "_status": 202}
    status, answer, replayed = idempotency.run_once(caller.account, "video.generate", key, body, create)
    if replayed:
        stored_meta = answer.get("_metadata", {})
        current = VideoJob.objects.filter(
            account=caller.account, public_id=answer.get("job_id"), deleted_at__isnull=True
        ).first()
        if current is not None:
            answer = video.job_json(current, base_url, full=False)
        answer["_metadata"] = metadata(
            state,
            vendor=stored_meta.get("vendor", "infrai"),
            model=stored_meta.get("model"),
            replayed=True,
            original_request_id=stored_meta.get("request_id"),
        )
    return {**answer, "_status": status}


@api_view(["GET"])
def status(request: HttpRequest, state: ApiRequestState, job_id: str) -> dict[str, Any]:
    job = video.get_job(_caller(state).account, job_id)
    return video.job_json(job, files.base_url_of(request), full=False)


@api_view(["GET"])
def get(request: HttpRequest, state: ApiRequestState, job_id: str) -> dict[str, Any]:
    job = video.get_job(_caller(state).account, job_id)
    return video.job_json(job, files.base_url_of(request), full=True)


def _limit(request: HttpRequest) -> int:
    low, high, default = video.LIST_LIMIT
    raw = request.GET.get("limit")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not low <= value <= high:
        raise field_error("limit", f"limit must be an integer from {low} to {high}.")
    return value


@api_view(["GET"])
def list_jobs(request: HttpRequest, state: ApiRequestState) -> dict[str, Any]:
    limit = _limit(request)
    jobs, next_cursor = video.list_jobs(_caller(state).account, request.GET.get("cursor") or None, limit)
    base_url = files.base_url_of(request)
    answer: dict[str, Any] = {"items": [video.job_json(job, base_url, full=True) for job in jobs]}
    if next_cursor:
        answer["next_cursor"] = next_cursor
    return answer


@api_view(["POST"])
def cancel(request: HttpRequest, state: ApiRequestState, job_id: str) -> dict[str, Any]:
    _same_job(_optional_body(request), job_id)
    job = video.cancel(video.get_job(_caller(state).account, job_id))
    return {"ok": job.state == VideoState.CANCELLED, "job_id": job.public_id, "state": job.state}


@api_view(["DELETE"])
def delete(request: HttpRequest, state: ApiRequestState, job_id: str) -> dict[str, Any]:
    video.delete_by_id(_caller(state).account, job_id)
    return {"ok": True, "job_id": job_id}


@api_view(["POST"])
def delete_all(request: HttpRequest, state: ApiRequestState) -> dict[str, Any]:
    _optional_body(request)
    return {"deleted": video.delete_all(_caller(state).account)}


@api_view(["GET"])
def download_url(request: HttpRequest, state: ApiRequestState, job_id: str) -> dict[str, Any]:
    from django.conf import settings

    job = video.get_job(_caller(state).account, job_id)
    if job.state != VideoState.SUCCEEDED or not job.video:
        raise ApiError(
            409,
            "VIDEO_NOT_READY",
            f"Job {job.public_id} is {job.state}; a download link exists only once it has succeeded.",
            state=job.state,
        )
    url, expires_at = files.signed_url(files.base_url_of(request), job.video, settings.DOWNLOAD_URL_TTL_SECONDS)
    return {"job_id": job.public_id, "url": url, "expires_at": expires_at}


@api_view(["POST"])
def set_retention(request: HttpRequest, state: ApiRequestState, job_id: str) -> dict[str, Any]:
    body = parse_json_body(request)
    _same_job(body, job_id)
    job = video.get_job(_caller(state).account, job_id)
    job = video.set_retention(job, video.parse_days(body))
    return {"job_id": job.public_id, "retention_days": job.retention_days, "expires_at": job.expires_at.isoformat()}


@api_view(["GET"])
def capabilities(request: HttpRequest, state: ApiRequestState) -> dict[str, Any]:
    return {"vendors": video.capabilities(_caller(state).account)}
