"""The OpenAI video adapter (Sora, /v1/videos) against a SIMULATED server on loopback
(tests/fakes/openai_video_upstream.py), alone and through /v1/video with the worker's rules."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import av
import pytest
import time_machine
from asgiref.sync import async_to_sync
from django.core.files.storage import default_storage
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from billing.models import CreditBalance, EntryKind, HoldState, LedgerEntry, UsageRecord
from gateway.vendors.base import Credential, VendorError
from tests.factories import bearer, make_account, make_key
from tests.fakes.openai_video_upstream import Script, simulated_video_upstream, tiny_png
from videos import video
from videos.models import VideoJob
from videos.vendors.base import JobStopped, VideoSpec
from videos.vendors.openai import OpenAIVideo

pytestmark = pytest.mark.django_db

USD = 10**9
SORA_PER_SECOND = USD // 10  # sora-2: $0.10 a second
SPEC = VideoSpec(
    prompt="a paper boat on a stream", duration_seconds=8, aspect="9:16", resolution="720p", model="sora-2"
)


class Recorder:
    """A checkpoint that records what the adapter reports; `stop_at` plays a cancelled job."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.reported: list[int] = []
        self.remembered: list[str] = []
        self.stop_at = stop_at

    async def progress(self, percent: int) -> None:
        if self.stop_at is not None and percent >= self.stop_at:
            raise JobStopped("cancelled")
        self.reported.append(percent)

    async def remember(self, vendor_job_id: str) -> None:
        self.remembered.append(vendor_job_id)


@pytest.fixture(autouse=True)
def _fast(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VIDEO_POLL_SECONDS = 0.01
    settings.VIDEO_RETRY_BASE_SECONDS = 0


# --- The adapter alone ------------------------------------------------------------------------


async def test_a_video_goes_queued_in_progress_completed_with_progress_then_downloads():
    with simulated_video_upstream() as (url, script):
        recorder = Recorder()
        rendered = await OpenAIVideo().run(SPEC, Credential("sk-test", url), "", recorder)
    create = script.requests[0]
    assert (create["method"], create["path"]) == ("POST", "/v1/videos")
    assert create["body"] == {
        "model": "sora-2",
        "prompt": "a paper boat on a stream",
        "seconds": "8",
        "size": "720x1280",
    }
    assert set(script.auth_headers) == {"Bearer sk-test"}
    assert recorder.remembered == [next(iter(script.videos))]
    assert recorder.reported == [0, 30, 75]
    assert rendered.video == script.video and rendered.thumbnail == script.thumbnail
    assert rendered.thumbnail_extension == "png"
    gets = script.paths("GET")
    assert gets[-2:] == [
        f"/v1/videos/{recorder.remembered[0]}/content",
        f"/v1/videos/{recorder.remembered[0]}/content?variant=thumbnail",
    ]


async def test_a_failed_video_is_a_vendor_error_with_the_vendors_reason():
    steps = [
        ("queued", 0),
        ("in_progress", 40),
        ("failed", {"code": "moderation_blocked", "message": "The prompt was blocked."}),
    ]
    with simulated_video_upstream(Script(steps=steps)) as (url, _), pytest.raises(VendorError) as failed:
        await OpenAIVideo().run(SPEC, Credential("k", url), "", Recorder())
    assert failed.value.code == "VIDEO_GENERATION_FAILED" and not failed.value.retryable
    assert "The prompt was blocked." in failed.value.message and "moderation_blocked" in failed.value.message


@pytest.mark.parametrize(
    ("status", "retryable", "code"),
    [
        (429, True, "UPSTREAM_RATE_LIMITED"),
        (500, True, "UPSTREAM_UNAVAILABLE"),
        (503, True, "UPSTREAM_UNAVAILABLE"),
        (400, False, "UPSTREAM_REJECTED"),
        (401, False, "UPSTREAM_AUTH_FAILED"),
    ],
)
async def test_create_errors_map_to_retryable_or_permanent(status, retryable, code):
    with simulated_video_upstream(Script(create_errors=[status])) as (url, _), pytest.raises(VendorError) as failed:
        await OpenAIVideo().run(SPEC, Credential("k", url), "", Recorder())
    assert (failed.value.retryable, failed.value.code) == (retryable, code)
    assert f"simulated {status}" in failed.value.message


async def test_a_few_failed_polls_are_tolerated_more_are_not():
    with simulated_video_upstream(Script(poll_errors=[503, 429, 500])) as (url, _):
        rendered = await OpenAIVideo().run(SPEC, Credential("k", url), "", Recorder())
    assert rendered.video
    with simulated_video_upstream(Script(poll_errors=[503] * 4)) as (url, _), pytest.raises(VendorError) as failed:
        await OpenAIVideo().run(SPEC, Credential("k", url), "", Recorder())
    assert failed.value.code == "UPSTREAM_UNAVAILABLE"
    with simulated_video_upstream(Script(poll_errors=[404])) as (url, _), pytest.raises(VendorError) as failed:
        await OpenAIVideo().run(SPEC, Credential("k", url), "", Recorder())
    assert not failed.value.retryable


async def test_a_known_vendor_job_is_resumed_not_created_again():
    with simulated_video_upstream() as (url, script):
        script.videos["video_existing"] = 1
        recorder = Recorder()
        await OpenAIVideo().run(SPEC, Credential("k", url), "video_existing", recorder)
    assert script.paths("POST") == [] and recorder.remembered == []
    assert script.paths("GET")[0] == "/v1/videos/video_existing"


async def test_a_stopped_job_deletes_the_vendors_video():
    with simulated_video_upstream() as (url, script), pytest.raises(JobStopped):
        await OpenAIVideo().run(SPEC, Credential("k", url), "", Recorder(stop_at=30))
    assert script.deleted == list(script.videos)


async def test_a_missing_thumbnail_does_not_fail_the_video():
    with simulated_video_upstream(Script(thumbnail_status=404)) as (url, _):
        rendered = await OpenAIVideo().run(SPEC, Credential("k", url), "", Recorder())
    assert rendered.video and rendered.thumbnail is None


async def test_a_reference_image_is_sent_as_input_reference_at_the_videos_size():
    spec = VideoSpec(**{**SPEC.__dict__, "reference_image": tiny_png(size=(50, 50))})
    with simulated_video_upstream() as (url, script):
        await OpenAIVideo().run(spec, Credential("k", url), "", Recorder())
    form = script.requests[0]["body"]
    assert form["size"] == "720x1280" and form["seconds"] == "8" and form["model"] == "sora-2"
    assert form["input_reference"]["png"] is True and form["input_reference"]["file_bytes"] > 0


async def test_an_unreachable_vendor_is_retryable():
    with pytest.raises(VendorError) as failed:
        await OpenAIVideo().run(SPEC, Credential("k", "http://127.0.0.1:9/v1"), "", Recorder())
    assert failed.value.retryable


# --- Through /v1/video and the worker -------------------------------------------------------------


@pytest.fixture
def openai_platform(settings):
    with simulated_video_upstream() as (url, script):
        settings.OPENAI_API_KEY = "sk-platform-video"
        settings.OPENAI_BASE_URL = url
        yield script


@pytest.fixture
def alice():
    account = make_account("alice@example.com", credit_nano=5 * USD)
    return account, make_key(account)


def generate(client, secret: str, **body):
    payload = {"prompt": "a paper boat on a stream", **body}
    return client.post("/v1/video/generate", json.dumps(payload), content_type="application/json", **bearer(secret))


def test_sora_is_chosen_when_configured_and_refuses_what_it_cannot_make(client, alice, openai_platform):
    _, secret = alice
    for body, field in [
        ({"resolution": "1080p"}, "resolution"),
        ({"duration_seconds": 5}, "duration_seconds"),
        ({"aspect": "1:1"}, "aspect"),
        ({"aspect_ratio": "1:1"}, "aspect_ratio"),
        ({"model": "sora-2", "duration_seconds": 16}, "duration_seconds"),
    ]:
        response = generate(client, secret, **body)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error["field"] == field and error["code"] == "UNSUPPORTED_BY_VENDOR", error
        assert "OpenAI" in error["message"]
    accepted = generate(client, secret, duration_seconds=8, aspect_ratio="9:16")
    assert accepted.status_code == 202
    created = VideoJob.objects.get(public_id=accepted.json()["job_id"])
    assert (created.vendor, created.model, created.cost_nano) == ("openai", "sora-2", 8 * SORA_PER_SECOND)
    # The sandbox still serves what it is asked for by name.
    assert generate(client, secret, vendor="sandbox", resolution="1080p").status_code == 202
    assert generate(client, secret, prefer="cheapest").json()["_metadata"]["vendor"] == "openai"


def test_a_sora_job_runs_to_success_with_progress_and_is_charged_once(client, alice, openai_platform):
    account, secret = alice
    job_id = generate(client, secret, duration_seconds=4).json()["job_id"]
    assert video.run_job(job_id) == "succeeded"
    done = VideoJob.objects.get(public_id=job_id)
    assert done.vendor_job_id in openai_platform.videos and done.progress == 100
    assert set(openai_platform.auth_headers) == {"Bearer sk-platform-video"}
    with av.open(io.BytesIO(default_storage.open(done.video).read())) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    body = client.get(f"/v1/video/get/{job_id}", **bearer(secret)).json()
    assert body["vendor"] == "openai" and body["model"] == "sora-2" and body["thumbnail_url"]
    record = UsageRecord.objects.get(account=account)
    assert (record.vendor, record.units, record.cost_nano) == ("openai", {"seconds": 4}, 4 * SORA_PER_SECOND)
    assert CreditBalance.objects.get(account=account).balance_nano == 5 * USD - 4 * SORA_PER_SECOND


def test_a_failed_sora_video_fails_the_job_with_the_vendors_error_and_releases_the_hold(client, alice, openai_platform):
    account, secret = alice
    openai_platform.steps = [("queued", 0), ("failed", {"code": "moderation_blocked", "message": "Blocked prompt."})]
    job_id = generate(client, secret, duration_seconds=4).json()["job_id"]
    assert video.run_job(job_id) == "failed"
    body = client.get(f"/v1/video/status/{job_id}", **bearer(secret)).json()
    assert body["state"] == "failed" and body["error"]["code"] == "VIDEO_GENERATION_FAILED"
    assert "Blocked prompt." in body["error"]["message"]
    failed = VideoJob.objects.get(public_id=job_id)
    assert failed.hold.state == HoldState.RELEASED
    assert CreditBalance.objects.get(account=account).held_nano == 0
    assert CreditBalance.objects.get(account=account).balance_nano == 5 * USD
    assert not UsageRecord.objects.exists()


def test_a_rate_limited_submission_is_retried_later_then_charged_once(client, alice, openai_platform, settings):
    account, secret = alice
    settings.VIDEO_RETRY_BASE_SECONDS = 30
    openai_platform.create_errors = [429]
    job_id = generate(client, secret, duration_seconds=4).json()["job_id"]
    assert video.run_job(job_id) == "retrying"
    waiting = VideoJob.objects.get(public_id=job_id)
    assert waiting.state == "queued" and waiting.error_code == "UPSTREAM_RATE_LIMITED"
    retry_task = DBTaskResult.objects.get(id=waiting.task_id)
    assert retry_task.run_after is not None and retry_task.run_after > waiting.updated_at
    assert client.get(f"/v1/video/status/{job_id}", **bearer(secret)).json()["state"] == "queued"
    assert video.run_job(job_id) == "succeeded"
    assert UsageRecord.objects.filter(account=account).count() == 1
    assert LedgerEntry.objects.filter(account=account, kind=EntryKind.USAGE).count() == 1
    assert len(openai_platform.paths("POST")) == 2


def test_persistent_5xx_fails_after_the_attempts_and_releases(client, alice, openai_platform, settings):
    account, secret = alice
    settings.VIDEO_MAX_ATTEMPTS = 2
    openai_platform.create_errors = [500, 502, 503]
    job_id = generate(client, secret, duration_seconds=4).json()["job_id"]
    assert video.run_job(job_id) == "retrying"
    assert video.run_job(job_id) == "failed"
    failed = VideoJob.objects.get(public_id=job_id)
    assert failed.error_code == "UPSTREAM_UNAVAILABLE" and "simulated 502" in failed.error
    assert CreditBalance.objects.get(account=account).held_nano == 0 and not UsageRecord.objects.exists()


def test_a_rejected_submission_fails_at_once(client, alice, openai_platform):
    _, secret = alice
    openai_platform.create_errors = [400]
    job_id = generate(client, secret, duration_seconds=4).json()["job_id"]
    assert video.run_job(job_id) == "failed"
    assert VideoJob.objects.get(public_id=job_id).error_code == "UPSTREAM_REJECTED"


def test_a_requeued_sora_job_resumes_the_vendors_video(client, alice, openai_platform, settings):
    """The worker died after OpenAI accepted the video: the re-run polls that video."""

    account, secret = alice
    job_id = generate(client, secret, duration_seconds=4).json()["job_id"]
    created = VideoJob.objects.get(public_id=job_id)
    dead = video.claim(job_id, "dead")
    checkpoint = video.LeaseCheckpoint(dead, "dead")
    vendor_id = async_to_sync(OpenAIVideo().create)(
        VideoSpec(created.prompt, 4, created.aspect, created.resolution, created.model),
        Credential("sk-platform-video", settings.OPENAI_BASE_URL),
    )["id"]
    async_to_sync(checkpoint.remember)(vendor_id)
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS + 1)):
        assert video.requeue_abandoned_jobs() == 1
    assert video.run_job(job_id) == "succeeded"
    assert len(openai_platform.paths("POST")) == 1  # no second (paid) video at the vendor
    assert UsageRecord.objects.get(account=account).cost_nano == 4 * SORA_PER_SECOND


def test_cancelling_a_running_sora_job_deletes_it_upstream(client, alice, openai_platform, monkeypatch):
    _, secret = alice
    openai_platform.steps = [("queued", 0)] + [("in_progress", p) for p in range(5, 95, 5)] + [("completed", 100)]
    job_id = generate(client, secret, duration_seconds=4).json()["job_id"]
    original = video.LeaseCheckpoint._save

    def cancel_when_started(self, **fields):
        if fields.get("progress", 0) >= 20:
            client.post(f"/v1/video/cancel/{job_id}", **bearer(secret))
        original(self, **fields)

    monkeypatch.setattr(video.LeaseCheckpoint, "_save", cancel_when_started)
    assert video.run_job(job_id) == "stopped"
    assert VideoJob.objects.get(public_id=job_id).state == "cancelled"
    assert openai_platform.deleted == [VideoJob.objects.get(public_id=job_id).vendor_job_id]
    assert not UsageRecord.objects.exists()


def test_byok_uses_the_callers_key_and_pays_only_the_platform_fee(client, settings):
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    settings.BYOK_PLATFORM_FEE_PERCENT = 10
    account = make_account("byok@example.com", credit_nano=USD)
    secret = make_key(account)
    with simulated_video_upstream() as (url, script):
        registered = client.post(
            "/v1/account/byok",
            json.dumps(
                {
                    "provider": "openai",
                    "alias": "mine",
                    "credentials": {"api_key": "sk-caller-own-key-0123456789", "base_url": url},
                    "idempotency_key": "byok-1",
                }
            ),
            content_type="application/json",
            **bearer(secret),
        )
        assert registered.status_code == 201, registered.content
        caps = {v["vendor"]: v for v in client.get("/v1/video/capabilities", **bearer(secret)).json()["vendors"]}
        assert caps["openai"]["available"] is True
        response = generate(client, secret, model="sora-2", duration_seconds=4)
        assert response.status_code == 202 and response.json()["_metadata"]["cost_usd"] == "0.04"
        assert video.run_job(response.json()["job_id"]) == "succeeded"
    assert set(script.auth_headers) == {"Bearer sk-caller-own-key-0123456789"}
    record = UsageRecord.objects.get(account=account)
    assert record.byok is True and record.cost_nano == 4 * SORA_PER_SECOND // 10


def test_a_credential_gone_before_the_run_fails_the_job_without_charge(client, alice, openai_platform, settings):
    account, secret = alice
    job_id = generate(client, secret, duration_seconds=4).json()["job_id"]
    settings.OPENAI_API_KEY = ""
    assert video.run_job(job_id) == "failed"
    failed = VideoJob.objects.get(public_id=job_id)
    assert failed.error_code == "VENDOR_NOT_CONFIGURED" and failed.hold.state == HoldState.RELEASED
    assert openai_platform.requests == [] and CreditBalance.objects.get(account=account).held_nano == 0
