"""The console's Jobs pages: the table of batches and video jobs, filters, detail pages, row
actions with their confirmation step, and isolation (another account's job is a 404)."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from batches.models import Batch, BatchExport
from batches.tasks import run_batch
from billing import ledger
from billing.models import Hold, HoldState
from console import accounts, keys
from infrai.lib.money import display_usd
from tests.factories import bearer, make_account, make_key, signed_in_client
from videos import video
from videos.models import VideoJob

pytestmark = pytest.mark.django_db
USD = 1_000_000_000
RERANK = {"capability": "rerank", "body": {"query": "cats", "documents": ["a cat sat", "tax law", "dogs"]}}
CHAT = {"capability": "chat", "body": {"messages": "Name three rivers.", "model": "sandbox-chat", "max_tokens": 32}}


@pytest.fixture(autouse=True)
def _fast_videos(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VIDEO_SANDBOX_RENDER_FPS = 0
    settings.VIDEO_POLL_SECONDS = 0.01


@pytest.fixture
def alice():
    account = make_account("alice@example.com", credit_nano=USD)
    return account, make_key(account), signed_in_client(account)


@pytest.fixture
def mallory():
    account = make_account("mallory@example.com", credit_nano=USD)
    return account, make_key(account), signed_in_client(account)


def submit_batch(secret: str, requests: list[dict], **extra) -> str:
    response = Client().post(
        "/v1/ai/batch/submit",
        json.dumps({"requests": requests, **extra}),
        content_type="application/json",
        **bearer(secret),
    )
    assert response.status_code == 200, response.content
    return response.json()["batch_id"]


def generate_video(secret: str, prompt: str = "a red kite over green hills") -> str:
    response = Client().post(
        "/v1/video/generate",
        json.dumps({"prompt": prompt, "duration_seconds": 1, "resolution": "720p"}),
        content_type="application/json",
        **bearer(secret),
    )
    assert response.status_code == 202, response.content
    return response.json()["job_id"]


def html(response) -> str:
    return response.content.decode()


def flashes(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def rows(response) -> list[str]:
    return [row.public_id for row in response.context["page"].rows]


# --- The table --------------------------------------------------------------------------------


def test_the_jobs_page_lists_batches_and_videos_newest_first(alice):
    _, secret, console = alice
    batch_id = submit_batch(secret, [RERANK, RERANK], metadata={"run": "nightly"})
    video_id = generate_video(secret)
    page = console.get("/jobs/")
    assert page.status_code == 200
    assert rows(page) == [video_id, batch_id]
    text = html(page)
    assert "0 of 2 done" in text and "run: nightly" in text and "a red kite" in text
    assert f'href="/jobs/batch/{batch_id}/"' in text and f'href="/jobs/video/{video_id}/"' in text
    assert "Refreshing every 5 s" in text  # the in-memory layer: the worker cannot reach the socket
    assert '<meta http-equiv="refresh"' in text  # without JavaScript the page reloads while jobs run
    assert "{\n &quot;run&quot;: &quot;nightly&quot;\n}" in html(console.get(f"/jobs/batch/{batch_id}/"))


def test_the_page_goes_live_only_when_worker_events_can_reach_its_socket(alice, settings):
    console = alice[2]
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert 'data-cross-process="false"' in html(console.get("/jobs/"))
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer"}}
    assert 'data-cross-process="true"' in html(console.get("/jobs/"))


def test_a_finished_batch_shows_its_counts_progress_and_what_it_cost(alice):
    _, secret, console = alice
    batch_id = submit_batch(secret, [RERANK, CHAT, RERANK])
    run_batch.call(batch_id)
    batch = Batch.objects.get(public_id=batch_id)
    assert batch.state == "completed" and batch.total_cost_nano > 0
    page = console.get("/jobs/")
    row = page.context["page"].rows[0]
    assert (row.state, row.percent, row.summary) == ("completed", 100, "3 of 3 done")
    text = html(page)
    assert display_usd(batch.total_cost_nano) in text
    assert batch.expires_at.strftime("%Y-%m-%d") in text
    assert '<meta http-equiv="refresh"' not in text  # nothing runs: no reloading without JavaScript


def test_the_list_shows_no_other_accounts_jobs(alice, mallory):
    _, secret, _ = alice
    submit_batch(secret, [RERANK])
    generate_video(secret)
    page = mallory[2].get("/jobs/")
    assert rows(page) == [] and "No jobs yet" in html(page)


def test_filters_by_kind_state_text_and_created_range_in_the_query_string(alice):
    _, secret, console = alice
    done = submit_batch(secret, [RERANK], metadata={"team": "search"})
    run_batch.call(done)
    waiting = submit_batch(secret, [RERANK], metadata={"team": "ads"})
    clip = generate_video(secret, prompt="penguins on ice")
    assert rows(console.get("/jobs/", {"kind": "video"})) == [clip]
    assert rows(console.get("/jobs/", {"kind": "batch"})) == [waiting, done]
    assert rows(console.get("/jobs/", {"state": "completed"})) == [done]
    assert rows(console.get("/jobs/", {"state": "active"})) == [clip, waiting]
    assert rows(console.get("/jobs/", {"q": "SEARCH"})) == [done]
    assert rows(console.get("/jobs/", {"q": "penguin"})) == [clip]
    assert rows(console.get("/jobs/", {"q": waiting[-8:]})) == [waiting]
    today = timezone.localdate()
    assert len(rows(console.get("/jobs/", {"since": today.isoformat(), "until": today.isoformat()}))) == 3
    assert rows(console.get("/jobs/", {"until": (today - timedelta(days=1)).isoformat()})) == []
    both = console.get("/jobs/", {"kind": "batch", "state": "active"})
    assert rows(both) == [waiting]
    assert 'value="batch" selected' in html(both) and 'value="active" selected' in html(both)


def test_filters_by_project_and_refuses_someone_elses(alice, mallory):
    account, secret, console = alice
    default_batch = submit_batch(secret, [RERANK])
    other = accounts.create_project(account, "Research")
    research_batch = submit_batch(keys.create_key(other, label="r").secret, [RERANK])
    page = console.get("/jobs/", {"project": other.public_id})
    assert rows(page) == [research_batch] and ">Research</option>" in html(page)
    assert rows(console.get("/jobs/", {"project": accounts.default_project(account).public_id})) == [default_batch]
    foreign = console.get("/jobs/", {"project": accounts.default_project(mallory[0]).public_id})
    assert foreign.status_code == 400 and 'data-field="project"' in html(foreign)


@pytest.mark.parametrize(
    ("query", "field"),
    [({"since": "last tuesday"}, "since"), ({"state": "done-ish"}, "state"), ({"kind": "audio"}, "kind")],
)
def test_a_filter_that_does_not_parse_is_a_400_naming_it(alice, query, field):
    page = alice[2].get("/jobs/", query)
    assert page.status_code == 400
    assert f'data-field="{field}"' in html(page) and f"{field} must be" in html(page)


def test_the_refresh_gets_only_the_table_and_never_a_4xx(alice):
    _, secret, console = alice
    batch_id = submit_batch(secret, [RERANK])
    partial = console.get("/jobs/", {"since": "nonsense"}, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200
    text = html(partial)
    assert "<html" not in text and "data-refresh-region" in text and batch_id in text
    assert "HX-Request" in partial["Vary"]


def test_the_table_pages_by_25_across_both_kinds(alice):
    _, secret, console = alice
    for _ in range(27):
        submit_batch(secret, [RERANK])
    clip = generate_video(secret)
    first = console.get("/jobs/")
    assert len(rows(first)) == 25 and rows(first)[0] == clip
    second = console.get("/jobs/", {"page": "2"})
    assert len(rows(second)) == 3 and "Page 2 of 2" in html(second)
    assert set(rows(first)).isdisjoint(rows(second))


def test_the_list_makes_the_same_queries_for_one_job_or_many(alice, django_assert_max_num_queries):
    _, secret, console = alice
    submit_batch(secret, [RERANK])
    generate_video(secret)
    console.get("/jobs/")  # the session and account are warm
    with django_assert_max_num_queries(100) as measured:
        console.get("/jobs/")
    few = len(measured)  # now: the log is cleared by later requests
    for _ in range(6):
        submit_batch(secret, [RERANK])
        generate_video(secret)
    with django_assert_max_num_queries(few):
        console.get("/jobs/")


def test_the_list_needs_a_signed_in_user():
    response = Client().get("/jobs/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


# --- Detail pages -----------------------------------------------------------------------------


def test_a_batch_page_shows_status_and_pages_its_results(alice):
    _, secret, console = alice
    batch_id = submit_batch(secret, [RERANK] * 22 + [CHAT])
    run_batch.call(batch_id)
    batch = Batch.objects.get(public_id=batch_id)
    page = console.get(f"/jobs/batch/{batch_id}/")
    assert page.status_code == 200
    text = html(page)
    assert "23 in all: 23 completed, 0 failed, 0 cancelled" in text
    assert display_usd(batch.total_cost_nano) in text and "sandbox (simulated)" in text
    assert "<dt>Metadata</dt>" not in text
    assert [entry["item"].index for entry in page.context["items"]] == list(range(20))
    assert "ranked document(s)" in text and "Items 1–20 of 23" in text
    second = console.get(f"/jobs/batch/{batch_id}/", {"page": "2"})
    items = [entry["item"] for entry in second.context["items"]]
    assert [item.index for item in items] == [20, 21, 22]
    chat = items[-1]
    assert chat.result["content"][:40] in html(second) and display_usd(chat.cost_nano) in html(second)


def test_a_failed_item_shows_its_error_and_the_results_filter_by_item_state(alice):
    _, secret, console = alice
    batch_id = submit_batch(secret, [RERANK, RERANK, RERANK])
    Batch.objects.get(public_id=batch_id).items.filter(index=1).update(
        state="failed", error={"code": "UPSTREAM_ERROR", "message": "The vendor said no."}
    )
    text = html(console.get(f"/jobs/batch/{batch_id}/"))
    assert "UPSTREAM_ERROR" in text and "The vendor said no." in text
    failed = console.get(f"/jobs/batch/{batch_id}/", {"item_state": "failed"})
    assert [entry["item"].index for entry in failed.context["items"]] == [1]
    assert 'value="failed" selected' in html(failed)
    assert "No succeeded items." in html(console.get(f"/jobs/batch/{batch_id}/", {"item_state": "succeeded"}))
    bogus = console.get(f"/jobs/batch/{batch_id}/", {"item_state": "bogus"})
    assert bogus.status_code == 400 and 'data-field="item_state"' in html(bogus)
    assert [entry["item"].index for entry in bogus.context["items"]] == [0, 1, 2]


def test_a_video_page_plays_the_video_through_a_signed_url(alice):
    _, secret, console = alice
    job_id = generate_video(secret, prompt="a lighthouse at dusk")
    waiting = console.get(f"/jobs/video/{job_id}/")
    assert "<video" not in html(waiting) and "appears here once it is made" in html(waiting)
    assert video.run_job(job_id) == "succeeded"
    job = VideoJob.objects.get(public_id=job_id)
    page = console.get(f"/jobs/video/{job_id}/")
    text = html(page)
    assert "<video" in text and "a lighthouse at dusk" in text and "sandbox (simulated)" in text
    assert display_usd(job.cost_nano) in text and "1 s, 720p" in text
    mp4 = Client().get(page.context["video_url"].split("testserver", 1)[1])
    assert mp4.status_code == 200 and mp4["Content-Type"] == "video/mp4"
    assert b"ftyp" in b"".join(mp4.streaming_content)[:64]
    thumbnail = Client().get(page.context["thumbnail_url"].split("testserver", 1)[1])
    assert thumbnail.status_code == 200 and thumbnail["Content-Type"].startswith("image/")


def test_download_goes_to_a_signed_url_only_when_there_is_something(alice):
    _, secret, console = alice
    job_id = generate_video(secret)
    early = console.get(f"/jobs/video/{job_id}/download/", follow=True)
    assert any("there is a video only once it succeeded" in m for m in flashes(early))
    video.run_job(job_id)
    ready = console.get(f"/jobs/video/{job_id}/download/")
    assert ready.status_code == 302 and "/files/" in ready["Location"]
    batch_id = submit_batch(secret, [RERANK])
    none_yet = console.get(f"/jobs/batch/{batch_id}/download/", follow=True)
    assert any("export it first" in m for m in flashes(none_yet))


# --- Row actions ------------------------------------------------------------------------------


def test_cancel_asks_first_then_cancels_the_batch_and_releases_its_holds(alice):
    account, secret, console = alice
    batch_id = submit_batch(secret, [RERANK, RERANK])
    confirm = console.get(f"/jobs/batch/{batch_id}/cancel/", {"next": "/jobs/?kind=batch"})
    assert confirm.status_code == 200
    text = html(confirm)
    assert f"Cancel batch {batch_id}?" in text and "csrfmiddlewaretoken" in text and 'method="post"' in text
    assert Batch.objects.get(public_id=batch_id).state == "queued"  # asking changes nothing
    done = console.post(f"/jobs/batch/{batch_id}/cancel/", {"next": "/jobs/?kind=batch"})
    assert done.status_code == 302 and done["Location"] == "/jobs/?kind=batch"
    after = console.get(done["Location"])
    assert any(f"Batch {batch_id} cancelled" in m for m in flashes(after))
    assert Batch.objects.get(public_id=batch_id).state == "cancelled"
    assert not Hold.objects.filter(account=account, state=HoldState.OPEN).exists()
    assert ledger.get_balance(account).held_nano == 0


def test_the_dialog_gets_the_same_confirmation_as_a_fragment(alice):
    _, secret, console = alice
    batch_id = submit_batch(secret, [RERANK])
    fragment = console.get(f"/jobs/batch/{batch_id}/cancel/", HTTP_HX_REQUEST="true")
    text = html(fragment)
    assert fragment.status_code == 200 and "<html" not in text
    assert 'id="job-dialog-title"' in text and "csrfmiddlewaretoken" in text


def test_a_finished_batch_cannot_be_cancelled(alice):
    _, secret, console = alice
    batch_id = submit_batch(secret, [RERANK])
    run_batch.call(batch_id)
    refused = console.post(f"/jobs/batch/{batch_id}/cancel/")
    assert refused.status_code == 409 and "it cannot be cancelled now" in html(refused)
    assert Batch.objects.get(public_id=batch_id).state == "completed"


def test_export_makes_a_file_to_download_from_the_row_and_the_page(alice):
    _, secret, console = alice
    batch_id = submit_batch(secret, [RERANK, RERANK])
    run_batch.call(batch_id)
    form = console.get(f"/jobs/batch/{batch_id}/export/")
    assert 'name="format"' in html(form) and 'value="csv"' in html(form)
    done = console.post(f"/jobs/batch/{batch_id}/export/", {"format": "csv"}, follow=True)
    made = BatchExport.objects.get(batch__public_id=batch_id)
    assert made.format == "csv" and made.item_count == 2
    assert any(f"Export {made.public_id} ready (CSV, 2 items)" in m for m in flashes(done))
    assert console.get("/jobs/").context["page"].rows[0].can_download
    download = console.get(f"/jobs/batch/{batch_id}/download/")
    file = Client().get(download["Location"].split("testserver", 1)[1])
    lines = list(csv.DictReader(io.StringIO(b"".join(file.streaming_content).decode())))
    assert [line["index"] for line in lines] == ["0", "1"] and {line["state"] for line in lines} == {"succeeded"}
    page = html(console.get(f"/jobs/batch/{batch_id}/"))
    assert "CSV, 2 items" in page and made.public_id in page


def test_an_export_format_that_is_not_offered_is_a_400_naming_it(alice):
    _, secret, console = alice
    batch_id = submit_batch(secret, [RERANK])
    refused = console.post(f"/jobs/batch/{batch_id}/export/", {"format": "xlsx"})
    assert refused.status_code == 400 and 'data-field="format"' in html(refused)
    assert not BatchExport.objects.exists()


def test_set_retention_checks_the_days_and_saves_them(alice):
    _, secret, console = alice
    batch_id = submit_batch(secret, [RERANK])
    run_batch.call(batch_id)
    form = console.get(f"/jobs/batch/{batch_id}/retention/")
    assert 'value="30"' in html(form)  # today's retention, to edit
    refused = console.post(f"/jobs/batch/{batch_id}/retention/", {"days": "400"})
    assert refused.status_code == 400 and 'data-field="days"' in html(refused)
    assert Batch.objects.get(public_id=batch_id).retention_days == 30
    console.post(f"/jobs/batch/{batch_id}/retention/", {"days": "3"})
    batch = Batch.objects.get(public_id=batch_id)
    assert batch.retention_days == 3 and batch.expires_at == batch.finished_at + timedelta(days=3)


def test_deleting_a_batchs_results_purges_them_and_keeps_its_record(alice):
    _, secret, console = alice
    batch_id = submit_batch(secret, [RERANK, RERANK])
    assert console.post(f"/jobs/batch/{batch_id}/delete/").status_code == 409  # still queued
    run_batch.call(batch_id)
    console.post(f"/jobs/batch/{batch_id}/export/", {"format": "jsonl"})
    console.post(f"/jobs/batch/{batch_id}/delete/")
    batch = Batch.objects.get(public_id=batch_id)
    assert batch.purged_at is not None and not batch.items.exists() and not batch.exports.exists()
    page = console.get(f"/jobs/batch/{batch_id}/")
    assert page.status_code == 200 and "The results were deleted" in html(page)
    assert display_usd(batch.total_cost_nano) in html(page)
    assert page.context["row"].actions == []


def test_video_cancel_retention_and_delete(alice):
    account, secret, console = alice
    job_id = generate_video(secret)
    console.post(f"/jobs/video/{job_id}/cancel/")
    job = VideoJob.objects.get(public_id=job_id)
    assert job.state == "cancelled" and ledger.get_balance(account).held_nano == 0
    refused = console.post(f"/jobs/video/{job_id}/retention/", {"days": "91"})
    assert refused.status_code == 400 and 'data-field="days"' in html(refused)
    console.post(f"/jobs/video/{job_id}/retention/", {"days": "2"})
    job.refresh_from_db()
    assert job.retention_days == 2 and job.expires_at == job.created_at + timedelta(days=2)
    deleted = console.post(f"/jobs/video/{job_id}/delete/", {"next": f"/jobs/video/{job_id}/"})
    assert deleted["Location"] == "/jobs/"  # not the deleted job's page
    assert console.get(f"/jobs/video/{job_id}/").status_code == 404
    assert job_id not in rows(console.get("/jobs/"))


def test_an_offsite_next_is_ignored(alice):
    _, secret, console = alice
    batch_id = submit_batch(secret, [RERANK])
    done = console.post(f"/jobs/batch/{batch_id}/cancel/", {"next": "https://evil.example/"})
    assert done["Location"] == f"/jobs/batch/{batch_id}/"


def test_actions_need_the_csrf_token(alice):
    _, secret, _ = alice
    batch_id = submit_batch(secret, [RERANK])
    job_id = generate_video(secret)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice[0].owner)
    assert strict.post(f"/jobs/batch/{batch_id}/cancel/").status_code == 403
    assert strict.post(f"/jobs/video/{job_id}/delete/").status_code == 403
    assert Batch.objects.get(public_id=batch_id).state == "queued"
    assert VideoJob.objects.get(public_id=job_id).deleted_at is None


def test_another_accounts_jobs_are_a_404_on_every_page_and_action(alice, mallory):
    _, secret, _ = alice
    batch_id = submit_batch(secret, [RERANK])
    job_id = generate_video(secret)
    outsider = mallory[2]
    paths = [f"/jobs/batch/{batch_id}/{a}" for a in ("", "download/", "cancel/", "export/", "retention/", "delete/")]
    paths += [f"/jobs/video/{job_id}/{a}" for a in ("", "download/", "cancel/", "retention/", "delete/")]
    for path in paths:
        assert outsider.get(path).status_code == 404, path
        if not path.endswith(("/download/", f"{batch_id}/", f"{job_id}/")):
            assert outsider.post(path, {"days": "5", "format": "csv"}).status_code == 404, path
    assert Batch.objects.get(public_id=batch_id).state == "queued"
    assert VideoJob.objects.get(public_id=job_id).state == "queued"
    assert not BatchExport.objects.exists()
