"""Video jobs (/v1/video/*): every route, the rules of videos/video.py, the sandbox's real MP4,
billing once, the worker's lease, retention, isolation, and a real `manage.py db_worker`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import av
import pytest
import time_machine
from django.core.files.storage import default_storage
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from billing.models import CreditBalance, EntryKind, Hold, HoldState, LedgerEntry, UsageRecord
from jobs import housekeeping
from tests.factories import bearer, make_account, make_key
from tests.fakes.openai_video_upstream import tiny_png
from tests.live import ROOT, database_env
from videos import video
from videos.models import VideoJob

pytestmark = pytest.mark.django_db

USD = 10**9
SANDBOX_PER_SECOND = USD // 100  # sandbox-video: $0.01 a second


@pytest.fixture(autouse=True)
def _video_settings(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VIDEO_SANDBOX_RENDER_FPS = 0  # as fast as the machine can; the live tests pace it
    settings.VIDEO_POLL_SECONDS = 0.01
    settings.VIDEO_RETRY_BASE_SECONDS = 0


@pytest.fixture
def alice():
    account = make_account("alice@example.com", credit_nano=USD)
    return account, make_key(account)


@pytest.fixture
def bob():
    account = make_account("bob@example.com", credit_nano=USD)
    return account, make_key(account)


def call(client, method: str, path: str, secret: str, body: dict | None = None, **headers):
    kwargs = {**bearer(secret), **headers}
    if method == "GET":
        return client.get("/v1/video" + path, **kwargs)
    if method == "DELETE":
        return client.delete("/v1/video" + path, **kwargs)
    return client.post("/v1/video" + path, json.dumps(body or {}), content_type="application/json", **kwargs)


def generate(client, secret: str, **body):
    return call(client, "POST", "/generate", secret, {"prompt": "a red kite over green hills", **body})


def new_job(client, secret: str, **body) -> str:
    response = generate(client, secret, **body)
    assert response.status_code == 202, response.content
    return response.json()["job_id"]


def run(job_id: str) -> str:
    return video.run_job(job_id)


def job(job_id: str) -> VideoJob:
    return VideoJob.objects.get(public_id=job_id)


def balance(account) -> CreditBalance:
    return CreditBalance.objects.get(account=account)


def fetch(client, url: str) -> tuple[int, bytes, str]:
    response = client.get(url)
    # Reading the stream to its end closes the response (the test client wraps it).
    data = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, data, response.get("Content-Type", "")


def decode(mp4: bytes) -> tuple[int, int, int, float, str]:
    """(frames, width, height, duration in s, codec) of an MP4, by decoding every frame."""
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        duration = float(container.duration / av.time_base) if container.duration else 0.0
        return frames, stream.width, stream.height, duration, stream.codec_context.name


# --- generate ---------------------------------------------------------------------------------


def test_generate_queues_a_job_holds_its_price_and_enqueues_its_task(client, alice):
    account, secret = alice
    response = generate(client, secret, duration_seconds=4)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["job_id"].startswith("vid_") and body["state"] == "queued" and body["progress"] == 0
    assert "video_url" not in body and "error" not in body
    assert body["_metadata"]["vendor"] == "sandbox" and body["_metadata"]["cost_usd"] == "0.04"
    created = job(body["job_id"])
    assert (created.vendor, created.model, created.duration_seconds) == ("sandbox", "sandbox-video", 4)
    assert (created.aspect, created.resolution) == ("16:9", "720p")
    assert created.hold.amount_nano == 4 * SANDBOX_PER_SECOND and created.hold.state == HoldState.OPEN
    assert balance(account).held_nano == 4 * SANDBOX_PER_SECOND
    task = DBTaskResult.objects.get(id=created.task_id)
    assert task.task_path == "videos.tasks.run_video_job" and task.args_kwargs["args"] == [created.public_id]


def test_the_seed_example_is_accepted(client, alice):
    _, secret = alice
    seed = {
        "prompt": "a timelapse of a city skyline at dusk",
        "prefer": "balanced",
        "resolution": "1080p",
        "duration_seconds": 5,
        "aspect_ratio": "16:9",
    }
    response = call(client, "POST", "/generate", secret, seed)
    assert response.status_code == 202, response.content
    created = job(response.json()["job_id"])
    assert (created.resolution, created.duration_seconds, created.aspect) == ("1080p", 5, "16:9")


@pytest.mark.parametrize("spelling", ["aspect", "aspect_ratio"])
@pytest.mark.parametrize("aspect", ["16:9", "9:16", "1:1"])
def test_both_aspect_spellings_are_accepted(client, alice, spelling, aspect):
    _, secret = alice
    assert job(new_job(client, secret, **{spelling: aspect})).aspect == aspect


@pytest.mark.parametrize("spelling", ["aspect", "aspect_ratio"])
def test_an_unknown_aspect_is_refused_naming_the_field_sent(client, alice, spelling):
    _, secret = alice
    response = generate(client, secret, **{spelling: "4:3"})
    assert response.status_code == 400 and response.json()["error"]["field"] == spelling


def test_aspect_and_aspect_ratio_must_agree(client, alice):
    _, secret = alice
    assert job(new_job(client, secret, aspect="9:16", aspect_ratio="9:16")).aspect == "9:16"
    response = generate(client, secret, aspect="9:16", aspect_ratio="1:1")
    assert response.status_code == 400 and response.json()["error"]["field"] == "aspect_ratio"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"resolution": "4k"}, "resolution", "UNSUPPORTED_BY_VENDOR"),
        ({"resolution": "8k"}, "resolution", "INVALID_FIELD"),
        ({"duration_seconds": 11}, "duration_seconds", "UNSUPPORTED_BY_VENDOR"),
        ({"duration_seconds": 0}, "duration_seconds", "INVALID_FIELD"),
        ({"duration_seconds": 2.5}, "duration_seconds", "INVALID_FIELD"),
        ({"duration_seconds": "5"}, "duration_seconds", "INVALID_FIELD"),
        ({"duration_seconds": True}, "duration_seconds", "INVALID_FIELD"),
        ({"prefer": "fastest"}, "prefer", "INVALID_FIELD"),
        ({"vendor": "acme"}, "vendor", "INVALID_FIELD"),
        ({"model": "no-such-model"}, "model", "UNKNOWN_MODEL"),
        ({"model": "sandbox-chat"}, "model", "INVALID_FIELD"),
        ({"reference_image_url": "ftp://example.com/a.png"}, "reference_image_url", "INVALID_FIELD"),
        ({"prompt": ""}, "prompt", "INVALID_FIELD"),
        ({"prompt": "x" * 4001}, "prompt", "INVALID_FIELD"),
    ],
)
def test_the_sandbox_refuses_what_it_cannot_make_naming_the_field(client, alice, body, field, code):
    account, secret = alice
    response = generate(client, secret, **body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["field"], error["code"]) == (field, code), error
    assert not VideoJob.objects.filter(account=account).exists()
    assert balance(account).held_nano == 0


def test_the_sandbox_limits_are_accepted(client, alice):
    _, secret = alice
    assert job(new_job(client, secret, duration_seconds=10, resolution="1080p")).duration_seconds == 10
    assert job(new_job(client, secret, duration_seconds=1.0, resolution="720p")).duration_seconds == 1


def test_a_missing_prompt_is_a_400_naming_it(client, alice):
    _, secret = alice
    response = call(client, "POST", "/generate", secret, {"duration_seconds": 4})
    assert response.status_code == 400
    assert response.json()["error"] | {"request_id": None} == {
        "code": "MISSING_FIELD",
        "message": "prompt is required: a description of the video.",
        "field": "prompt",
        "request_id": None,
    }


def test_too_little_credit_is_a_402_and_leaves_nothing(client):
    account = make_account("poor@example.com", credit_nano=SANDBOX_PER_SECOND * 3)
    secret = make_key(account)
    response = generate(client, secret, duration_seconds=4)
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "INSUFFICIENT_CREDIT" and error["required_usd"] == "0.04" and "topup_url" in error
    assert not VideoJob.objects.exists() and not Hold.objects.exists() and not DBTaskResult.objects.exists()
    assert generate(client, secret, duration_seconds=3).status_code == 202


def test_the_same_idempotency_key_returns_the_same_job_and_holds_once(client, alice):
    account, secret = alice
    first = generate(client, secret, idempotency_key="clip-1")
    again = generate(client, secret, idempotency_key="clip-1")
    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json()["_metadata"]["replayed"] is True and again.json()["_metadata"]["cost_usd"] == "0.00"
    assert VideoJob.objects.filter(account=account).count() == 1 and Hold.objects.count() == 1
    run(first.json()["job_id"])
    replay = generate(client, secret, idempotency_key="clip-1")
    assert replay.json()["state"] == "succeeded" and replay.json()["video_url"]  # the job as it is now
    other = call(client, "POST", "/generate", secret, {"prompt": "something else", "idempotency_key": "clip-1"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    body = {"prompt": "a red kite over green hills"}
    header = call(client, "POST", "/generate", secret, body, HTTP_IDEMPOTENCY_KEY="clip-2")
    again = call(client, "POST", "/generate", secret, body, HTTP_IDEMPOTENCY_KEY="clip-2")
    assert again.json()["job_id"] == header.json()["job_id"] != first.json()["job_id"]


def test_without_a_key_each_call_is_a_new_job(client, alice):
    _, secret = alice
    assert new_job(client, secret) != new_job(client, secret)


# --- Running the job: a real MP4, charged once ------------------------------------------------


@pytest.mark.parametrize(
    ("resolution", "aspect", "size"),
    [("720p", "16:9", (1280, 720)), ("1080p", "9:16", (1080, 1920)), ("720p", "1:1", (720, 720))],
)
def test_the_sandbox_renders_a_real_mp4_and_a_png_thumbnail(client, alice, resolution, aspect, size):
    _, secret = alice
    job_id = new_job(client, secret, duration_seconds=2, resolution=resolution, aspect=aspect)
    assert run(job_id) == "succeeded"
    body = call(client, "GET", f"/get/{job_id}", secret).json()
    assert body["state"] == "succeeded" and body["progress"] == 100
    status, mp4, content_type = fetch(client, body["video_url"])
    assert status == 200 and content_type == "video/mp4"
    frames, width, height, duration, codec = decode(mp4)
    assert (width, height) == size and codec == "h264"
    assert abs(frames - 24 * 2) <= 1 and abs(duration - 2) < 0.2
    status, png, content_type = fetch(client, body["thumbnail_url"])
    assert status == 200 and content_type == "image/png" and png.startswith(b"\x89PNG")


def test_success_settles_the_hold_with_one_usage_record(client, alice):
    account, secret = alice
    job_id = new_job(client, secret, duration_seconds=3, idempotency_key="bill-once")
    request_id = job(job_id).request_id
    assert run(job_id) == "succeeded"
    assert run(job_id) == "not queued"  # a duplicate task finds nothing to do
    finished = job(job_id)
    assert finished.hold.state == HoldState.SETTLED and finished.hold.charged_nano == 3 * SANDBOX_PER_SECOND
    record = UsageRecord.objects.get(account=account)
    assert record.request_id == request_id and record.capability == "video"
    assert (record.vendor, record.model, record.units, record.cost_nano) == (
        "sandbox",
        "sandbox-video",
        {"seconds": 3},
        3 * SANDBOX_PER_SECOND,
    )
    assert balance(account).balance_nano == USD - 3 * SANDBOX_PER_SECOND and balance(account).held_nano == 0
    usage = LedgerEntry.objects.filter(account=account, kind=EntryKind.USAGE)
    assert [entry.amount_nano for entry in usage] == [-3 * SANDBOX_PER_SECOND]


def test_status_and_get_answer_the_documented_fields(client, alice):
    _, secret = alice
    job_id = new_job(client, secret, duration_seconds=2, resolution="1080p")
    queued = call(client, "GET", f"/status/{job_id}", secret).json()
    assert {k: queued[k] for k in ("job_id", "state", "progress")} == {
        "job_id": job_id,
        "state": "queued",
        "progress": 0,
    }
    details = call(client, "GET", f"/get/{job_id}", secret).json()
    assert details["duration_seconds"] == 2 and details["resolution"] == "1080p"
    assert (details["vendor"], details["model"], details["state"]) == ("sandbox", "sandbox-video", "queued")
    run(job_id)
    done = call(client, "GET", f"/status/{job_id}", secret).json()
    assert done["state"] == "succeeded" and done["video_url"] and done["thumbnail_url"]
    assert "/files/" in done["video_url"] and job(job_id).video not in done["video_url"]  # signed, not the path


def test_progress_is_saved_and_published_while_rendering(client, alice, monkeypatch, settings):
    _, secret = alice
    job_id = new_job(client, secret, duration_seconds=3)
    published = []
    monkeypatch.setattr(video.live, "publish", lambda account, event, payload: published.append((event, payload)))
    saved = []
    original = video.LeaseCheckpoint._save

    def spy(self, **fields):
        original(self, **fields)
        saved.append(VideoJob.objects.get(pk=self.job.pk).progress)

    monkeypatch.setattr(video.LeaseCheckpoint, "_save", spy)
    settings.VIDEO_SANDBOX_RENDER_FPS = 96  # 72 frames in 0.75 s: progress saved every 5 %
    assert run(job_id) == "succeeded"
    assert len(saved) >= 10 and saved == sorted(saved) and 0 < saved[0] < saved[-1] < 100
    states = [payload["state"] for event, payload in published]
    assert all(event == "video.updated" for event, _ in published)
    assert states[0] == "running" and states[-1] == "succeeded" and published[-1][1]["progress"] == 100
    progress = [payload["progress"] for _, payload in published if payload["state"] == "running"]
    assert len(set(progress)) >= 10 and progress == sorted(progress)


def test_a_4_second_720p_clip_takes_about_4_seconds_at_the_default_pace(client, alice, settings):
    _, secret = alice
    settings.VIDEO_SANDBOX_RENDER_FPS = 24
    job_id = new_job(client, secret, duration_seconds=4)
    started = time.monotonic()
    assert run(job_id) == "succeeded"
    assert 3.9 < time.monotonic() - started < 15


# --- download_url -------------------------------------------------------------------------------


def test_download_url_is_signed_expires_and_exists_only_once_succeeded(client, alice, settings):
    _, secret = alice
    settings.DOWNLOAD_URL_TTL_SECONDS = 600
    job_id = new_job(client, secret, duration_seconds=1)
    early = call(client, "GET", f"/download_url/{job_id}", secret)
    assert early.status_code == 409 and early.json()["error"]["code"] == "VIDEO_NOT_READY"
    run(job_id)
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        answer = call(client, "GET", f"/download_url/{job_id}", secret).json()
        expires = timezone.datetime.fromisoformat(answer["expires_at"])
        assert abs((expires - timezone.now()).total_seconds() - 600) < 2
        status, mp4, _ = fetch(client, answer["url"])
        assert status == 200 and decode(mp4)[0] == 24
        forged = answer["url"][:-3] + ("aaa" if not answer["url"].endswith("aaa") else "bbb")
        assert fetch(client, forged)[0] == 404
        traveller.shift(timedelta(seconds=601))
        status, body, _ = fetch(client, answer["url"])
        assert status == 404 and json.loads(body)["error"]["code"] == "LINK_EXPIRED"
        fresh = call(client, "GET", f"/download_url/{job_id}", secret).json()
        assert fetch(client, fresh["url"])[0] == 200


# --- list -------------------------------------------------------------------------------------


def test_list_pages_with_a_cursor_newest_first(client, alice, bob):
    _, secret = alice
    made = [new_job(client, secret, duration_seconds=1) for _ in range(5)]
    new_job(client, bob[1])
    seen, cursor, pages = [], None, 0
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = call(client, "GET", "/list" + query, secret).json()
        pages += 1
        seen += [item["job_id"] for item in page["items"]]
        assert all(
            {"job_id", "state", "duration_seconds", "resolution", "vendor", "model"} <= set(i) for i in page["items"]
        )
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert pages == 3 and seen == list(reversed(made))
    everything = call(client, "GET", "/list", secret).json()
    assert [i["job_id"] for i in everything["items"]] == seen and "next_cursor" not in everything


@pytest.mark.parametrize(
    ("query", "field"),
    [("?limit=0", "limit"), ("?limit=201", "limit"), ("?limit=x", "limit"), ("?cursor=nonsense!", "cursor")],
)
def test_list_refuses_a_bad_limit_or_cursor(client, alice, query, field):
    response = call(client, "GET", "/list" + query, alice[1])
    assert response.status_code == 400 and response.json()["error"]["field"] == field


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_a_queued_job_releases_its_hold_and_the_task_then_does_nothing(client, alice):
    account, secret = alice
    job_id = new_job(client, secret)
    answer = call(client, "POST", f"/cancel/{job_id}", secret, {"job_id": job_id}).json()
    assert (answer["ok"], answer["job_id"], answer["state"]) == (True, job_id, "cancelled")
    answer = call(client, "POST", f"/cancel/{job_id}", secret).json()
    assert (answer["ok"], answer["state"]) == (True, "cancelled")  # idempotent
    assert job(job_id).hold.state == HoldState.RELEASED and balance(account).held_nano == 0
    assert run(job_id) == "not queued"
    assert LedgerEntry.objects.filter(account=account, kind=EntryKind.RELEASE).count() == 1
    assert not UsageRecord.objects.exists()


def test_cancel_a_running_job_stops_the_worker_and_keeps_nothing(client, alice, monkeypatch):
    account, secret = alice
    job_id = new_job(client, secret, duration_seconds=3)
    original = video.LeaseCheckpoint._save

    def cancel_half_way(self, **fields):
        if fields.get("progress", 0) >= 50 and job(job_id).state == "running":
            assert call(client, "POST", f"/cancel/{job_id}", secret).json()["ok"] is True
        original(self, **fields)

    monkeypatch.setattr(video.LeaseCheckpoint, "_save", cancel_half_way)
    assert run(job_id) == "stopped"
    stopped = job(job_id)
    assert stopped.state == "cancelled" and not stopped.video and stopped.hold.state == HoldState.RELEASED
    assert (
        not default_storage.exists(f"videos/{account.public_id}/{job_id}")
        or not default_storage.listdir(f"videos/{account.public_id}/{job_id}")[1]
    )
    assert not UsageRecord.objects.exists() and balance(account).balance_nano == USD


def test_a_cancel_that_lands_while_the_worker_stores_the_files_wins_and_nothing_is_kept(client, alice, monkeypatch):
    account, secret = alice
    job_id = new_job(client, secret, duration_seconds=1)
    original = video._store

    def store_then_cancel(the_job, rendered):
        names = original(the_job, rendered)
        call(client, "POST", f"/cancel/{job_id}", secret)
        return names

    monkeypatch.setattr(video, "_store", store_then_cancel)
    assert run(job_id) == "stopped"
    assert job(job_id).state == "cancelled" and not UsageRecord.objects.exists()
    folder = f"videos/{account.public_id}/{job_id}"
    assert default_storage.listdir(folder)[1] == []


def test_cancel_a_finished_job_is_not_ok_and_changes_nothing(client, alice):
    account, secret = alice
    done = new_job(client, secret, duration_seconds=1)
    run(done)
    answer = call(client, "POST", f"/cancel/{done}", secret).json()
    assert (answer["ok"], answer["state"]) == (False, "succeeded")
    failed = new_job(client, secret, duration_seconds=1)
    video.fail(job(failed), "TEST", "it broke")
    answer = call(client, "POST", f"/cancel/{failed}", secret).json()
    assert (answer["ok"], answer["state"]) == (False, "failed")
    assert UsageRecord.objects.get().cost_nano == SANDBOX_PER_SECOND
    assert balance(account).balance_nano == USD - SANDBOX_PER_SECOND and balance(account).held_nano == 0


def test_cancel_refuses_a_body_naming_another_job(client, alice):
    job_id = new_job(client, alice[1])
    response = call(client, "POST", f"/cancel/{job_id}", alice[1], {"job_id": "vid_other"})
    assert response.status_code == 400 and response.json()["error"]["field"] == "job_id"
    assert job(job_id).state == "queued"


# --- delete and delete_all --------------------------------------------------------------------


def test_delete_removes_the_job_and_its_files_and_is_idempotent(client, alice):
    account, secret = alice
    job_id = new_job(client, secret, duration_seconds=1)
    run(job_id)
    stored = job(job_id)
    names = [stored.video, stored.thumbnail]
    assert all(default_storage.exists(name) for name in names)
    url = call(client, "GET", f"/download_url/{job_id}", secret).json()["url"]
    first = call(client, "DELETE", f"/delete/{job_id}", secret)
    assert first.status_code == 200 and first.json()["ok"] is True
    assert not any(default_storage.exists(name) for name in names)
    assert not default_storage.exists(f"videos/{account.public_id}/{job_id}")
    assert fetch(client, url)[0] == 404
    for path in (f"/status/{job_id}", f"/get/{job_id}", f"/download_url/{job_id}"):
        assert call(client, "GET", path, secret).status_code == 404
    assert call(client, "GET", "/list", secret).json()["items"] == []
    again = call(client, "DELETE", f"/delete/{job_id}", secret)
    assert again.status_code == 200 and again.json()["ok"] is True
    assert UsageRecord.objects.count() == 1  # what was made stays billed
    assert call(client, "POST", f"/delete/{job_id}", secret).status_code == 405


def test_deleting_a_queued_job_releases_its_hold(client, alice):
    account, secret = alice
    job_id = new_job(client, secret)
    assert call(client, "DELETE", f"/delete/{job_id}", secret).json()["ok"] is True
    assert job(job_id).hold.state == HoldState.RELEASED and balance(account).held_nano == 0
    assert run(job_id) == "not queued"


def test_delete_all_deletes_the_callers_jobs_only(client, alice, bob):
    account, secret = alice
    done = new_job(client, secret, duration_seconds=1)
    run(done)
    names = [job(done).video, job(done).thumbnail]
    new_job(client, secret)
    new_job(client, secret)
    bobs = new_job(client, bob[1], duration_seconds=1)
    run(bobs)
    answer = call(client, "POST", "/delete_all", secret, {})
    assert answer.status_code == 200 and answer.json()["deleted"] == 3
    assert not any(default_storage.exists(n) for n in names)
    assert call(client, "GET", "/list", secret).json()["items"] == []
    assert balance(account).held_nano == 0
    assert call(client, "POST", "/delete_all", secret).json()["deleted"] == 0
    assert call(client, "GET", f"/get/{bobs}", bob[1]).json()["state"] == "succeeded"
    assert default_storage.exists(job(bobs).video)


# --- set_retention and the retention chore ----------------------------------------------------


@pytest.mark.parametrize(
    "body", [{"days": 0}, {}, {"days": 91}, {"days": -1}, {"days": "30"}, {"days": 1.5}, {"days": True}]
)
def test_set_retention_refuses_days_outside_1_to_90_naming_days(client, alice, body):
    job_id = new_job(client, alice[1])
    response = call(client, "POST", f"/set_retention/{job_id}", alice[1], body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == "days"


def test_the_seed_example_with_days_0_is_a_clear_400(client, alice):
    job_id = new_job(client, alice[1])
    response = call(client, "POST", f"/set_retention/{job_id}", alice[1], {"job_id": job_id, "days": 0})
    assert response.status_code == 400
    assert "days" in response.json()["error"]["message"] and response.json()["error"]["field"] == "days"


@pytest.mark.parametrize("days", [1, 30, 90])
def test_set_retention_sets_expiry_from_creation(client, alice, days):
    job_id = new_job(client, alice[1])
    answer = call(client, "POST", f"/set_retention/{job_id}", alice[1], {"days": days}).json()
    created = job(job_id)
    assert answer["job_id"] == job_id and answer["retention_days"] == days
    assert timezone.datetime.fromisoformat(answer["expires_at"]) == created.created_at + timedelta(days=days)
    assert call(client, "GET", f"/get/{job_id}", alice[1]).json()["retention_days"] == days


def test_the_retention_chore_deletes_files_and_rows_after_expiry(client, alice):
    account, secret = alice
    keep = new_job(client, secret, duration_seconds=1)
    expire = new_job(client, secret, duration_seconds=1)
    run(keep)
    run(expire)
    call(client, "POST", f"/set_retention/{keep}", secret, {"days": 30})
    call(client, "POST", f"/set_retention/{expire}", secret, {"days": 1})
    names = [job(expire).video, job(expire).thumbnail]
    assert video.purge_expired_jobs() == 0
    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=1)):
        done = housekeeping.run_all()
    assert done["purge video jobs past their retention"] == 1
    assert not VideoJob.objects.filter(public_id=expire).exists()
    assert not any(default_storage.exists(n) for n in names)
    assert default_storage.exists(job(keep).video)
    assert UsageRecord.objects.filter(account=account).count() == 2


def test_an_unfinished_job_past_retention_is_cancelled_and_released(client, alice):
    account, secret = alice
    job_id = new_job(client, secret)
    call(client, "POST", f"/set_retention/{job_id}", secret, {"days": 1})
    with time_machine.travel(timezone.now() + timedelta(days=2)):
        video.purge_expired_jobs()
    assert not VideoJob.objects.filter(public_id=job_id).exists()
    assert balance(account).held_nano == 0 and Hold.objects.get().state == HoldState.RELEASED


def test_delete_tombstones_are_purged_after_the_idempotency_window(client, alice, settings):
    job_id = new_job(client, alice[1])
    call(client, "DELETE", f"/delete/{job_id}", alice[1])
    assert VideoJob.objects.filter(public_id=job_id, deleted_at__isnull=False).exists()
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.IDEMPOTENCY_WINDOW_SECONDS + 60)):
        video.purge_expired_jobs()
    assert not VideoJob.objects.filter(public_id=job_id).exists()


# --- capabilities -----------------------------------------------------------------------------


def test_capabilities_lists_each_vendor_with_its_limits(client, alice):
    answer = call(client, "GET", "/capabilities", alice[1])
    assert answer.status_code == 200
    vendors = {v["vendor"]: v for v in answer.json()["vendors"]}
    sandbox = vendors["sandbox"]
    assert sandbox["models"] == ["sandbox-video"] and sandbox["resolutions"] == ["720p", "1080p"]
    assert sandbox["max_duration_seconds"] == 10 and sandbox["available"] is True
    assert sandbox["supports_extend"] is False and sandbox["supports_upscale"] is False
    openai = vendors["openai"]
    assert openai["models"] == ["sora-2"] and openai["resolutions"] == ["720p"]
    assert openai["max_duration_seconds"] == 12 and openai["durations_seconds"] == [4, 8, 12]
    assert openai["available"] is False  # no OPENAI_API_KEY and no BYOK here
    assert set(answer.json()["vendors"][0]) >= {
        "vendor",
        "models",
        "resolutions",
        "max_duration_seconds",
        "supports_extend",
        "supports_upscale",
    }


def test_a_video_model_without_credential_is_refused_clearly(client, alice):
    response = generate(client, alice[1], model="sora-2")
    assert response.status_code == 400 and response.json()["error"]["code"] == "VENDOR_NOT_CONFIGURED"


# --- Isolation --------------------------------------------------------------------------------


def test_another_accounts_job_is_a_404_everywhere(client, alice, bob):
    account, secret = alice
    job_id = new_job(client, secret, duration_seconds=1)
    run(job_id)
    other = bob[1]
    for method, path, body in [
        ("GET", f"/status/{job_id}", None),
        ("GET", f"/get/{job_id}", None),
        ("GET", f"/download_url/{job_id}", None),
        ("POST", f"/cancel/{job_id}", {}),
        ("DELETE", f"/delete/{job_id}", None),
        ("POST", f"/set_retention/{job_id}", {"days": 1}),
        ("POST", f"/set_retention/{job_id}", {"days": 0}),
    ]:
        response = call(client, method, path, other, body)
        assert response.status_code == 404, (method, path, response.content)
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert call(client, "GET", "/list", other).json()["items"] == []
    assert call(client, "POST", "/delete_all", other).json()["deleted"] == 0
    mine = call(client, "GET", f"/get/{job_id}", secret).json()
    assert mine["state"] == "succeeded" and mine["retention_days"] == 7 and default_storage.exists(job(job_id).video)
    assert call(client, "GET", "/status/vid_nonsense", secret).status_code == 404


def test_every_route_needs_a_key(client):
    for method, path in [("POST", "/generate"), ("GET", "/list"), ("GET", "/capabilities"), ("GET", "/status/x")]:
        response = client.generic(method, "/v1/video" + path)
        assert response.status_code == 401


# --- The worker's lease: a dead worker's job runs again and is charged once --------------------


def test_a_dead_workers_job_is_requeued_by_the_chore_and_charged_once(client, alice, settings):
    account, secret = alice
    job_id = new_job(client, secret, duration_seconds=1)
    dead = video.claim(job_id, "dead-worker-token")  # a worker took it, then was killed
    assert dead is not None and job(job_id).state == "running"
    assert video.requeue_abandoned_jobs() == 0  # its lease still runs
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS + 1)):
        done = housekeeping.run_all()
    assert done["requeue video jobs whose worker died"] == 1
    requeued = job(job_id)
    assert requeued.state == "queued" and requeued.lease_token == "" and requeued.attempts == 1
    assert DBTaskResult.objects.filter(id=requeued.task_id).exists()
    assert DBTaskResult.objects.count() == 2
    assert run(job_id) == "succeeded"
    # The presumed-dead worker comes back with its clip: refused, its files removed, no charge.
    rendered = video.Rendered(video=b"late", thumbnail=None)
    assert video._finish(dead, "dead-worker-token", rendered, 1) == "stopped"
    assert UsageRecord.objects.filter(account=account).count() == 1
    assert LedgerEntry.objects.filter(account=account, kind=EntryKind.USAGE).count() == 1
    assert balance(account).balance_nano == USD - SANDBOX_PER_SECOND and balance(account).held_nano == 0
    assert len(default_storage.listdir(f"videos/{account.public_id}/{job_id}")[1]) == 2


def test_a_job_whose_workers_keep_dying_fails_and_is_released(client, alice, settings):
    account, secret = alice
    settings.VIDEO_MAX_ATTEMPTS = 2
    job_id = new_job(client, secret)
    now = timezone.now()
    for attempt in range(2):
        assert video.claim(job_id, f"token-{attempt}") is not None
        now += timedelta(seconds=settings.JOB_LEASE_SECONDS + 1)
        with time_machine.travel(now):
            video.requeue_abandoned_jobs()
    failed = job(job_id)
    assert failed.state == "failed" and failed.error_code == "WORKER_LOST"
    assert failed.hold.state == HoldState.RELEASED and balance(account).held_nano == 0
    body = call(client, "GET", f"/status/{job_id}", secret).json()
    assert body["error"]["code"] == "WORKER_LOST" and "not charged" in body["error"]["message"]


def test_a_queued_job_whose_task_is_gone_is_enqueued_again(client, alice, settings):
    job_id = new_job(client, alice[1])
    DBTaskResult.objects.all().delete()
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS + 1)):
        assert video.requeue_abandoned_jobs() == 1
    assert DBTaskResult.objects.get().args_kwargs["args"] == [job_id]
    assert run(job_id) == "succeeded"


def test_jobs_past_the_deadline_fail_and_are_released(client, alice, settings):
    account, secret = alice
    job_id = new_job(client, secret)
    with time_machine.travel(timezone.now() + timedelta(seconds=video.conf.get_int("VIDEO_JOB_DEADLINE_SECONDS") + 1)):
        assert video.fail_overdue_jobs() == 1
    assert job(job_id).error_code == "DEADLINE_EXCEEDED" and balance(account).held_nano == 0


def test_an_internal_error_fails_the_job_without_charge(client, alice, monkeypatch):
    account, secret = alice
    job_id = new_job(client, secret)

    async def broken(*args, **kwargs):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(video.get_video_vendor("sandbox"), "run", broken)
    assert run(job_id) == "failed"
    failed = job(job_id)
    assert failed.error_code == "INTERNAL_ERROR" and "encoder exploded" not in failed.error
    assert balance(account).balance_nano == USD and balance(account).held_nano == 0


def test_the_housekeeping_registry_has_the_video_chores():
    names = set(housekeeping._chores)
    assert {
        "requeue video jobs whose worker died",
        "fail video jobs past their deadline",
        "purge video jobs past their retention",
    } <= names


# --- Reference images -------------------------------------------------------------------------


def test_a_reference_image_is_fetched_and_used(client, alice, settings):
    from tests.fakes.openai_video_upstream import Script, simulated_video_upstream

    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True  # lets the worker fetch from loopback
    _, secret = alice
    with simulated_video_upstream(Script(thumbnail=tiny_png((250, 10, 10), (64, 36)))) as (url, script):
        script.videos["video_ref"] = 0
        job_id = new_job(
            client, secret, duration_seconds=1, reference_image_url=f"{url}/videos/video_ref/content?variant=thumbnail"
        )
        assert run(job_id) == "succeeded"
        missing = new_job(client, secret, duration_seconds=1, reference_image_url=f"{url}/videos/nothing/content")
        assert run(missing) == "failed"
        not_image = new_job(client, secret, duration_seconds=1, reference_image_url=f"{url}/videos/video_ref/content")
        assert run(not_image) == "failed"
    with av.open(io.BytesIO(default_storage.open(job(job_id).video).read())) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    red, green = frame[..., 0].mean(), frame[..., 1].mean()
    assert red > green + 40  # the red reference shows through
    failed = job(missing)
    assert failed.error_code == "INVALID_FIELD" and "reference_image_url" in failed.error
    assert failed.hold.state == HoldState.RELEASED
    unreadable = job(not_image)
    assert unreadable.error_code == "INVALID_FIELD" and "not an image" in unreadable.error


# --- A real worker process ----------------------------------------------------------------------


def start_worker(media_root: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "db_worker",
            "--no-reload",
            "--interval",
            "0.1",
            "--no-startup-delay",
            "--verbosity",
            "0",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "infrai.settings.base",
            "DEBUG": "false",
            "MEDIA_ROOT": media_root,
            "VIDEO_SANDBOX_RENDER_FPS": "48",
            **database_env(),
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ.get("LIVE_SERVER_LOG", os.devnull), "ab"),
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.mark.django_db(transaction=True)
def test_a_real_db_worker_runs_the_job_queued_running_succeeded(client, settings):
    account = make_account("worker@example.com", credit_nano=USD)
    secret = make_key(account)
    job_id = new_job(client, secret, duration_seconds=3, resolution="720p")
    seen = [call(client, "GET", f"/status/{job_id}", secret).json()]
    worker = start_worker(settings.MEDIA_ROOT)
    try:
        deadline = time.monotonic() + 60
        while seen[-1]["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
            seen.append(call(client, "GET", f"/status/{job_id}", secret).json())
    finally:
        stop(worker)
    states = [s["state"] for s in seen]
    assert states[0] == "queued" and "running" in states and states[-1] == "succeeded", states
    assert states.index("running") < states.index("succeeded")
    running = [s["progress"] for s in seen if s["state"] == "running"]
    assert any(0 < p < 100 for p in running) and running == sorted(running)
    status, mp4, _ = fetch(client, seen[-1]["video_url"])
    assert status == 200 and decode(mp4)[:3] == (72, 1280, 720)
    assert UsageRecord.objects.get(account=account).cost_nano == 3 * SANDBOX_PER_SECOND
    assert DBTaskResult.objects.get(id=job(job_id).task_id).status == "SUCCESSFUL"


@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_s_job_is_finished_by_another_and_charged_once(client, settings):
    account = make_account("killed@example.com", credit_nano=USD)
    secret = make_key(account)
    job_id = new_job(client, secret, duration_seconds=6)
    first = start_worker(settings.MEDIA_ROOT, VIDEO_SANDBOX_RENDER_FPS="24", JOB_LEASE_SECONDS="2")
    try:
        deadline = time.monotonic() + 30
        while job(job_id).progress < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        first.kill()  # no goodbye: the lease is left to run out
        first.wait(5)
    assert job(job_id).state == "running"
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS + 1), tick=True):
        assert video.requeue_abandoned_jobs() == 1
    second = start_worker(settings.MEDIA_ROOT, VIDEO_SANDBOX_RENDER_FPS="0")
    try:
        deadline = time.monotonic() + 60
        while job(job_id).state != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop(second)
    finished = job(job_id)
    assert finished.state == "succeeded" and finished.attempts == 2
    assert UsageRecord.objects.filter(account=account).count() == 1
    assert LedgerEntry.objects.filter(account=account, kind=EntryKind.USAGE).count() == 1
    assert CreditBalance.objects.get(account=account).balance_nano == USD - 6 * SANDBOX_PER_SECOND


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="needs REDIS_URL: the worker process reaches the websocket only through a shared Redis channel layer",
)
@pytest.mark.django_db(transaction=True)
async def test_the_owner_s_websocket_receives_progress_from_the_worker_process(settings):
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.test import Client

    from infrai.asgi import application

    def setup() -> tuple[str, str, str]:
        account = make_account("live@example.com", credit_nano=USD)
        secret = make_key(account)
        client = Client()
        client.force_login(account.owner)
        return secret, new_job(client, secret, duration_seconds=3), client.cookies["sessionid"].value

    secret, job_id, session = await sync_to_async(setup)()
    ws = WebsocketCommunicator(
        application,
        "/ws/events/",
        headers=[
            (b"origin", b"http://testserver"),
            (b"host", b"testserver"),
            (b"cookie", f"sessionid={session}".encode()),
        ],
    )
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from(timeout=5))["event"] == "hello"
    worker = start_worker(settings.MEDIA_ROOT)
    events = []
    try:
        while not events or events[-1]["state"] not in ("succeeded", "failed"):
            message = await ws.receive_json_from(timeout=30)
            if message["event"] == "video.updated" and message["payload"]["job_id"] == job_id:
                events.append(message["payload"])
    finally:
        stop(worker)
        await ws.disconnect()
    states = [e["state"] for e in events]
    assert states[0] == "running" and states[-1] == "succeeded", states
    progress = [e["progress"] for e in events if e["state"] == "running"]
    assert len([p for p in progress if 0 < p < 100]) >= 3 and progress == sorted(progress)
    assert set(events[0]) == {"job_id", "state", "progress"}


# --- The OpenAPI document -----------------------------------------------------------------------


def video_document() -> dict:
    from gateway.openapi import build_document
    from videos.openapi import extend

    document = build_document("http://testserver/v1")
    if "/video/generate" not in document["paths"]:  # until gateway/openapi.py calls extend itself
        extend(document)
    return document


def test_the_video_api_is_documented_route_for_route_and_the_document_is_valid(client, alice):
    import re

    from django.urls import URLPattern, URLResolver, get_resolver
    from openapi_spec_validator import validate

    document = video_document()
    validate(document)
    gateway = next(p for p in get_resolver().url_patterns if isinstance(p, URLResolver) and p.namespace == "gateway")
    served = {
        "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(p.pattern)): p
        for p in gateway.url_patterns
        if isinstance(p, URLPattern) and (p.name or "").startswith("video_")
    }
    assert set(served) == {path for path in document["paths"] if path.startswith("/video/")}
    assert len(served) == 10
    for path in served:
        response = client.generic("OPTIONS", "/v1" + path.replace("{job_id}", "x"), **bearer(alice[1]))
        allowed = {m.lower() for m in response.json()["error"]["allowed"]}
        assert allowed == {m for m in ("get", "post", "delete") if m in document["paths"][path]}, path


def test_the_documented_example_and_bounds_are_the_views(client, alice):
    from openapi_schema_validator import OAS31Validator

    document = video_document()

    def conforms(schema: dict, instance: object) -> None:
        OAS31Validator({**schema, "components": document["components"]}).validate(instance)

    op = document["paths"]["/video/generate"]["post"]
    example = op["requestBody"]["content"]["application/json"]["example"]
    response = call(client, "POST", "/generate", alice[1], example)
    assert str(response.status_code) in op["responses"]
    conforms({"$ref": "#/components/schemas/VideoJob"}, response.json())
    job_id = response.json()["job_id"]
    run(job_id)
    for path, schema in [
        (f"/status/{job_id}", "VideoJob"),
        (f"/get/{job_id}", "VideoJobDetails"),
        ("/list?limit=1", "VideoJobList"),
        (f"/download_url/{job_id}", "VideoDownloadUrl"),
        ("/capabilities", "VideoCapabilities"),
    ]:
        conforms({"$ref": f"#/components/schemas/{schema}"}, call(client, "GET", path, alice[1]).json())
    retention = call(client, "POST", f"/set_retention/{job_id}", alice[1], {"days": 90}).json()
    conforms({"$ref": "#/components/schemas/VideoRetention"}, retention)
    days = document["components"]["schemas"]["VideoRetentionRequest"]["properties"]["days"]
    assert (days["minimum"], days["maximum"]) == (1, 90)
    conforms(
        {"$ref": "#/components/schemas/VideoCancelResult"}, call(client, "POST", f"/cancel/{job_id}", alice[1]).json()
    )
    conforms(
        {"$ref": "#/components/schemas/VideoDeleted"}, call(client, "DELETE", f"/delete/{job_id}", alice[1]).json()
    )
    conforms({"$ref": "#/components/schemas/VideoDeletedAll"}, call(client, "POST", "/delete_all", alice[1]).json())
