"""The playground's Video tab: the form and its field errors, jobs created and billed like
/v1/video/generate, the 402 with its top-up, the rows, the polling endpoint, cancel, "View code",
and another account's job ids answering 404."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.test import Client

from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from playground import snippets
from tests.factories import make_account, signed_in_client
from videos import video
from videos.models import VideoJob

pytestmark = pytest.mark.django_db

USD = 10**9
SANDBOX_PER_SECOND = USD // 100  # sandbox-video: $0.01 a second
PAGE = "/playground/video/"
GENERATE = "/playground/video/generate/"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _video_settings(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VIDEO_SANDBOX_RENDER_FPS = 0


@pytest.fixture
def alice():
    return make_account("alice@example.com", credit_nano=USD)


@pytest.fixture
def bob():
    return make_account("bob@example.com", credit_nano=USD)


def form(**fields: str) -> dict[str, str]:
    return {
        "prompt": "a red kite over green hills",
        "model": "",
        "aspect": "16:9",
        "resolution": "720p",
        "duration_seconds": "4",
        **fields,
    }


def submit(client: Client, **fields: str):
    return client.post(GENERATE, form(**fields))


def created_job(response) -> VideoJob:
    assert response.status_code == 302, response.content[:2000]
    job_id = response["Location"].split("created=")[1]
    return VideoJob.objects.get(public_id=job_id)


def rows(html: str) -> list[str]:
    return re.findall(r'data-job-id="(vid_[^"]+)"', html)


def text(response) -> str:
    return unescape(response.content.decode())


# --- The page ---------------------------------------------------------------------------------


def test_the_page_needs_sign_in(client):
    response = client.get(PAGE)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_form_offers_what_the_usable_models_make(alice):
    page = text(signed_in_client(alice).get(PAGE))
    assert '<option value="">Best available</option>' in page
    assert '<option value="sandbox-video"' in page
    assert "sora-2" not in page.split('id="pg-video-limits"')[0], "no OpenAI key here: Sora is not offered"
    for choice in ('value="16:9"', 'value="9:16"', 'value="1:1"', 'value="720p"', 'value="1080p"', 'value="10"'):
        assert choice in page
    assert 'value="4k"' not in page, "no usable model makes 4k"
    assert re.search(r'data-testid="estimate-cost">\$0\.04<', page), "4 s at $0.01 a second"
    assert "No videos yet" in page


@pytest.mark.parametrize(
    ("backend", "live"),
    [("channels.layers.InMemoryChannelLayer", "off"), ("channels_redis.pubsub.RedisPubSubChannelLayer", "on")],
)
def test_the_page_listens_live_only_when_the_workers_updates_can_reach_it(alice, settings, backend, live):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": backend, "CONFIG": {}}}
    page = text(signed_in_client(alice).get(PAGE))
    assert f'data-live-updates="{live}"' in page


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"duration_seconds": "11"}, "duration_seconds", "from 1 to 10 seconds, not 11"),
        ({"duration_seconds": "2.5"}, "duration_seconds", "duration_seconds must be"),
        ({"aspect": "4:3"}, "aspect", "aspect must be one of"),
        ({"resolution": "4k"}, "resolution", "not 4k"),
        ({"resolution": "8k"}, "resolution", "resolution must be one of"),
        ({"prompt": "  "}, "prompt", "prompt must be a non-empty string"),
        ({"model": "no-such-model"}, "model", "Unknown model"),
    ],
)
def test_a_bad_field_is_named_beside_it_and_nothing_is_held(alice, fields, field, says):
    client = signed_in_client(alice)
    response = submit(client, **fields)
    assert response.status_code == 400
    page = text(response)
    error = re.search(rf'data-testid="field-error-{field}">([^<]+)<', page)
    assert error, f"no error beside {field}"
    assert says in error.group(1)
    assert f'name="{field}"' in page.split(f'data-testid="field-error-{field}"')[0].rsplit("<label", 1)[1]
    assert not VideoJob.objects.exists()
    assert ledger.get_balance(alice).available_nano == USD

    partial = client.post(GENERATE, form(**fields), **HTMX)
    assert partial.status_code == 200, "htmx swaps 2xx only; the partial carries the error"
    assert f'data-testid="field-error-{field}"' in text(partial)
    assert "<html" not in text(partial)


def test_a_submitted_video_is_held_queued_and_then_charged_once_like_the_api(alice):
    client = signed_in_client(alice)
    job = created_job(submit(client, duration_seconds="5", aspect="9:16"))
    assert (job.state, job.vendor, job.model, job.duration_seconds, job.aspect) == (
        "queued",
        "sandbox",
        "sandbox-video",
        5,
        "9:16",
    )
    assert job.key is None and job.project == alice.projects.get()
    hold = Hold.objects.get(pk=job.hold_id)
    assert (hold.state, hold.amount_nano) == (HoldState.OPEN, 5 * SANDBOX_PER_SECOND)
    assert ledger.get_balance(alice).available_nano == USD - 5 * SANDBOX_PER_SECOND

    page = text(client.get(f"{PAGE}?created={job.public_id}"))
    assert rows(page) == [job.public_id]
    assert "$0.05 held" in page and 'data-testid="state">Queued<' in page
    assert "View code" in page and "/v1/video/generate" in page

    assert video.run_job(job.public_id) == "succeeded"
    hold.refresh_from_db()
    assert hold.state == HoldState.SETTLED
    usage = UsageRecord.objects.get(request_id=job.request_id)
    assert (usage.capability, usage.cost_nano, usage.units) == ("video", 5 * SANDBOX_PER_SECOND, {"seconds": 5})
    balance = ledger.get_balance(alice)
    assert balance.balance_nano == balance.available_nano == USD - 5 * SANDBOX_PER_SECOND


def test_a_finished_row_plays_the_video_with_its_poster_and_facts(alice):
    client = signed_in_client(alice)
    job = created_job(submit(client))
    video.run_job(job.public_id)
    job.refresh_from_db()

    row = text(client.get(f"/playground/video/jobs/{job.public_id}/"))
    assert 'data-testid="state">Done<' in row and 'data-finished="true"' in row
    src = re.search(r'<video[^>]* src="([^"]+)"[^>]* poster="([^"]+)"', row)
    assert src, row
    mp4 = client.get(src.group(1).replace("http://testserver", ""))
    assert mp4.status_code == 200
    assert b"ftyp" in b"".join(mp4.streaming_content)[:64]
    poster = client.get(src.group(2).replace("http://testserver", ""))
    assert poster.status_code == 200 and poster["Content-Type"].startswith("image/")
    assert 'data-testid="download"' in row
    assert "$0.04 charged" in row and "pill-sandbox" in row and job.request_id in row


def test_a_failed_job_shows_its_error_and_is_not_charged(alice):
    client = signed_in_client(alice)
    job = created_job(submit(client))
    video.fail(job, "VENDOR_ERROR", "The sandbox gave up on purpose.")
    row = text(client.get(f"/playground/video/jobs/{job.public_id}/"))
    assert 'data-testid="state">Failed<' in row
    assert "The sandbox gave up on purpose." in row and "VENDOR_ERROR" in row
    assert "not charged" in row
    assert ledger.get_balance(alice).available_nano == USD


def test_htmx_answers_a_fresh_form_the_new_row_on_top_and_its_code(alice):
    client = signed_in_client(alice)
    older = created_job(submit(client, prompt="the first one"))
    response = client.post(GENERATE, form(prompt="the second one", idempotency_key="k-2"), **HTMX)
    assert response.status_code == 200
    body = text(response)
    newest = VideoJob.objects.exclude(pk=older.pk).get()
    assert '<form id="pg-video-form"' in body
    assert 'hx-swap-oob="afterbegin:#pg-video-jobs"' in body and rows(body) == [newest.public_id]
    assert '<div id="pg-video-code" hx-swap-oob="true">' in body
    assert "http://testserver/v1/video/generate" in body and "the second one" in body
    assert re.search(r'name="idempotency_key" value="(?!k-2")', body), "the next submit is a new job"
    assert rows(text(client.get(PAGE))) == [newest.public_id, older.public_id]


def test_the_same_idempotency_key_twice_is_one_job_and_one_hold(alice):
    client = signed_in_client(alice)
    first = created_job(submit(client, idempotency_key="double-click"))
    second = created_job(submit(client, idempotency_key="double-click"))
    assert first.pk == second.pk
    assert VideoJob.objects.count() == 1
    assert Hold.objects.filter(state=HoldState.OPEN).count() == 1


def test_too_little_credit_is_a_402_with_the_shortfall_and_a_top_up_back_here():
    poor = make_account("poor@example.com", credit_nano=SANDBOX_PER_SECOND)
    client = signed_in_client(poor)
    response = submit(client, duration_seconds="4")
    assert response.status_code == 402
    page = text(response)
    assert "Not enough credit" in page
    assert re.search(r'data-testid="required">\$0\.04<', page)
    assert re.search(r'data-testid="available-credit">\$0\.01<', page)
    assert "short by $0.03" in page
    assert 'name="return_to" value="/playground/video/"' in page
    assert 'data-testid="topup"' in page
    assert not VideoJob.objects.exists() and not Hold.objects.exists()

    partial = client.post(GENERATE, form(), **HTMX)
    assert partial.status_code == 200 and 'data-testid="topup"' in text(partial)


def test_polling_answers_state_and_progress_of_the_callers_jobs_only(alice, bob):
    mine = created_job(submit(signed_in_client(alice)))
    theirs = created_job(submit(signed_in_client(bob)))
    client = signed_in_client(alice)
    url = f"/playground/video/jobs/?ids={mine.public_id},{theirs.public_id},vid_nonsense"
    assert client.get(url).json() == {
        "jobs": [{"job_id": mine.public_id, "state": "queued", "progress": 0, "finished": False}]
    }
    video.run_job(mine.public_id)
    assert client.get(url).json()["jobs"] == [
        {"job_id": mine.public_id, "state": "succeeded", "progress": 100, "finished": True}
    ]


def test_cancel_stops_the_job_and_releases_its_hold(alice):
    client = signed_in_client(alice)
    job = created_job(submit(client))
    row = text(client.post(f"/playground/video/jobs/{job.public_id}/cancel/", **HTMX))
    assert 'data-testid="state">Cancelled<' in row and "not charged" in row
    job.refresh_from_db()
    assert job.state == "cancelled"
    assert Hold.objects.get(pk=job.hold_id).state == HoldState.RELEASED
    assert ledger.get_balance(alice).available_nano == USD
    plain = client.post(f"/playground/video/jobs/{job.public_id}/cancel/")
    assert plain.status_code == 302 and plain["Location"] == PAGE


def test_another_accounts_job_is_a_404_on_every_endpoint(alice, bob):
    theirs = created_job(submit(signed_in_client(bob)))
    client = signed_in_client(alice)
    for response in (
        client.get(f"/playground/video/jobs/{theirs.public_id}/"),
        client.post(f"/playground/video/jobs/{theirs.public_id}/cancel/"),
        client.post(f"/playground/video/jobs/{theirs.public_id}/cancel/", **HTMX),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["field"] == "job_id"
    theirs.refresh_from_db()
    assert theirs.state == "queued"
    page = text(client.get(f"{PAGE}?created={theirs.public_id}"))
    assert theirs.public_id not in page and "theirs" not in page and "View code" not in page


def test_the_estimate_follows_the_choices_and_names_what_cannot_be_made(alice):
    client = signed_in_client(alice)
    estimate = text(client.get("/playground/video/estimate/?model=sandbox-video&duration_seconds=7"))
    assert re.search(r'data-testid="estimate-cost">\$0\.07<', estimate) and "7 s" in estimate
    refused = text(client.get("/playground/video/estimate/?resolution=4k"))
    assert "not 4k" in refused and "estimate-cost" not in refused


def test_view_code_makes_the_same_request_against_the_users_base_url():
    body = {
        "prompt": 'say "hi"',
        "model": "sandbox-video",
        "duration_seconds": 4,
        "aspect": "1:1",
        "resolution": "720p",
    }
    code = snippets.video("https://console.example", body)
    assert "curl https://console.example/v1/video/generate" in code["curl"]
    assert '"prompt": "say \\"hi\\""' in code["curl"] and '"aspect": "1:1"' in code["curl"]
    assert "https://console.example/v1/video/status/" in code["curl"]
    assert 'base_url="https://console.example/v1"' in code["python"]
    assert '"duration_seconds": 4' in code["python"] and "/video/status/" in code["python"]
    compile(code["python"], "snippet.py", "exec")
    assert 'fetch("https://console.example/v1/video/generate"' in code["javascript"]
    assert "video/status/" in code["javascript"]


def test_a_rendering_job_can_be_cancelled_from_its_row_and_the_worker_keeps_nothing(alice):
    client = signed_in_client(alice)
    job = created_job(submit(client))
    assert video.claim(job.public_id, "worker-token") is not None
    running = text(client.get(f"/playground/video/jobs/{job.public_id}/"))
    assert 'data-testid="state">Rendering<' in running and "Cancel</button>" in running
    row = text(client.post(f"/playground/video/jobs/{job.public_id}/cancel/", **HTMX))
    assert 'data-testid="state">Cancelled<' in row and "Cancel</button>" not in row
    assert Hold.objects.get(pk=job.hold_id).state == HoldState.RELEASED
    assert not UsageRecord.objects.filter(request_id=job.request_id).exists()


def test_without_javascript_the_page_reloads_itself_only_while_a_video_is_being_made(alice):
    client = signed_in_client(alice)
    refresh = '<noscript><meta http-equiv="refresh" content="5"></noscript>'
    assert refresh not in text(client.get(PAGE))
    job = created_job(submit(client))
    assert refresh in text(client.get(PAGE))
    video.run_job(job.public_id)
    assert refresh not in text(client.get(PAGE))


def test_a_reused_idempotency_key_with_another_prompt_is_explained_not_hidden(alice):
    client = signed_in_client(alice)
    created_job(submit(client, idempotency_key="sent-once"))
    response = submit(client, prompt="something else entirely", idempotency_key="sent-once")
    assert response.status_code == 422
    page = text(response)
    assert "different request body" in page and "<code>idempotency_key</code>" in page
    assert VideoJob.objects.count() == 1
