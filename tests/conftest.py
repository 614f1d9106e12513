from __future__ import annotations

import os

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def on_postgres(settings):
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL")
    return True


def pytest_report_header(config):
    return f"database: {'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'SQLite'}; redis: {'REDIS_URL' if os.environ.get('REDIS_URL') else 'none'}"


@pytest.fixture(autouse=True)
def _release_upstream_clients():
    yield
    from gateway.http import discard_clients_of_closed_loops

    discard_clients_of_closed_loops()
