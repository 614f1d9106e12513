from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing import ledger
from console.models import Account, ProjectKey
from infrai.lib.env import EnvError, env_bool, env_decimal, env_int
from tests.factories import bearer

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_ENV = {
    "SECRET_KEY": "Zq8-vN3x!pL0a7Ry2#mK9cWd5Tf1Hs6Gb4Je-uXo_Qi8Ve3Nr7Ly0Mz2Kw5Pt9Ua",
    "KEY_HASH_SECRET": "k" * 64,
    "BYOK_ENCRYPTION_KEYS": "x",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/infrai",
    "ALLOWED_HOSTS": "console.example.com",
    "SITE_URL": "https://console.example.com",
    "STRIPE_SECRET_KEY": "sk_live_x",
    "STRIPE_WEBHOOK_SECRET": "whsec_x",
}


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _in_production([sys.executable, "manage.py", *args], env)


def _in_production(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV and k != "REDIS_URL"}
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "infrai.settings.production", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_refuse_to_start_without_their_secrets():
    result = _manage("check", env={})
    assert result.returncode != 0
    assert "production settings need these environment variables" in result.stderr
    assert "SECRET_KEY" in result.stderr and "BYOK_ENCRYPTION_KEYS" in result.stderr


def test_production_settings_pass_the_deploy_check():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr + result.stdout


def test_production_static_files_have_hashed_names_served_as_immutable(tmp_path):
    env = {**PRODUCTION_ENV, "STATIC_ROOT": str(tmp_path)}
    collected = _manage("collectstatic", "--noinput", env=env)
    assert collected.returncode == 0, collected.stderr
    templates = "".join(p.read_text() for p in (ROOT / "templates").glob("**/*.html"))
    named = sorted(set(re.findall(r"{% static '([^']+)' %}", templates)))
    assert "console/console.css" in named
    # Every file a template names is in the manifest (a missing one would be a 500 in production),
    # and WhiteNoise serves its hashed name with a year's immutable caching.
    probe = (
        "import django, json, sys; django.setup()\n"
        "from django.templatetags.static import static\n"
        "from django.test import Client\n"
        "urls = [static(name) for name in json.loads(sys.argv[1])]\n"
        "answer = Client().get(urls[0], secure=True, HTTP_HOST='console.example.com')\n"
        "print(json.dumps({'urls': urls, 'status': answer.status_code, 'cache': answer.get('Cache-Control')}))\n"
    )
    result = _in_production([sys.executable, "-c", probe, json.dumps(named)], env)
    assert result.returncode == 0, result.stderr
    served = json.loads(result.stdout)
    assert all(re.fullmatch(r"/static/.+\.[0-9a-f]{12}\.(css|js)", url) for url in served["urls"]), served["urls"]
    assert served["status"] == 200 and "immutable" in served["cache"]


def test_production_settings_refuse_a_stripe_key_without_its_webhook_secret():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "STRIPE_WEBHOOK_SECRET"}
    result = _manage("check", env=env)
    assert result.returncode != 0 and "STRIPE_WEBHOOK_SECRET is required" in result.stderr


def test_env_helpers_refuse_values_they_cannot_parse(monkeypatch):
    monkeypatch.setenv("X_BOOL", "maybe")
    monkeypatch.setenv("X_INT", "ten")
    monkeypatch.setenv("X_DEC", "1,5")
    with pytest.raises(EnvError, match="X_BOOL"):
        env_bool("X_BOOL")
    with pytest.raises(EnvError, match="X_INT"):
        env_int("X_INT", 1)
    with pytest.raises(EnvError, match="X_DEC"):
        env_decimal("X_DEC", "0")
    monkeypatch.setenv("X_BOOL", "yes")
    assert env_bool("X_BOOL") is True


@pytest.mark.django_db
def test_create_account_and_create_project_key_commands(client):
    out = StringIO()
    call_command("create_account", "ops@example.com", "--credit-usd", "12.50", stdout=out)
    account = Account.objects.get(owner__email="ops@example.com")
    assert ledger.get_balance(account).balance_nano == 12_500_000_000
    out = StringIO()
    call_command("create_project_key", "ops@example.com", "--label", "cron", stdout=out)
    secret = out.getvalue().strip().splitlines()[-1]
    assert secret.startswith("ifr_pk_proj_")
    assert ProjectKey.objects.get().label == "cron"
    assert client.get("/v1/account/balance", **bearer(secret)).json()["balance_usd"] == "12.50"


@pytest.mark.django_db
def test_the_commands_explain_bad_input():
    with pytest.raises(CommandError, match="not an e-mail"):
        call_command("create_account", "nope")
    with pytest.raises(CommandError, match="--credit-usd"):
        call_command("create_account", "a@example.com", "--credit-usd", "ten")
    with pytest.raises(CommandError, match="no account"):
        call_command("create_project_key", "ghost@example.com")
    call_command("create_account", "b@example.com", stdout=StringIO())
    with pytest.raises(CommandError, match="no project named"):
        call_command("create_project_key", "b@example.com", "--project", "Nope")
