"""Generated files go through Django's storage API, so S3 (here a SIMULATED S3 by moto) works by setting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.core.files.storage import storages
from moto import mock_aws

from tests.factories import bearer, make_account, make_key
from tests.live import ROOT

pytestmark = pytest.mark.django_db


@pytest.fixture
def s3_storage(settings, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        import boto3

        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="infrai-test")
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": "infrai-test"}},
        }
        storages._storages.pop("default", None)  # noqa: SLF001 - forget the cached file-system storage
        yield boto3.client("s3", region_name="us-east-1")
        storages._storages.pop("default", None)  # noqa: SLF001


def test_generated_images_are_stored_in_s3_and_served_by_signed_url(client, s3_storage):
    secret = make_key(make_account(credit_nano=10**9))
    body = {"prompt": "a lighthouse", "size": "256x256"}
    url = client.post("/v1/ai/image", json.dumps(body), content_type="application/json", **bearer(secret)).json()[
        "images"
    ][0]["url"]
    keys = [o["Key"] for o in s3_storage.list_objects_v2(Bucket="infrai-test").get("Contents", [])]
    assert len(keys) == 1 and keys[0].startswith("images/") and keys[0].endswith(".png")
    served = client.get(url.split("testserver", 1)[1])
    assert served.status_code == 200 and b"".join(served.streaming_content).startswith(b"\x89PNG")


def test_storage_options_must_be_a_json_object():
    env = {"STORAGE_OPTIONS_JSON": "[1, 2]", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "STORAGE_OPTIONS_JSON must be a JSON object" in result.stderr
