from __future__ import annotations

import os
import socket
from collections.abc import Iterator

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


@pytest.fixture(scope="session", autouse=True)
def _close_connection_pools(django_db_setup, django_db_blocker):
    """Before the test database is dropped, end the sessions that threads of async views still
    hold (asgiref's executor threads keep their connection), and close PostgreSQL's pool."""
    yield
    from django.db import connection, connections

    if connection.vendor == "postgresql" and connection.settings_dict["NAME"].startswith("test_"):
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    for conn in connections.all():
        if hasattr(conn, "close_pool"):
            conn.close_pool()


@pytest.fixture(autouse=True)
def _ledger_on_the_tests_connection(request, monkeypatch):
    """The ledger's event-loop pool (infrai/db_async.py) has connections of its own, which cannot
    see the rows a test writes inside its transaction (pytest-django's default). Such tests hold
    and settle through the sync path on the test's connection; transactional tests, and every
    server process a test starts, use the pool as production does."""
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(marker and (marker.kwargs.get("transaction") or (marker.args and marker.args[0])))
    if not transactional and "transactional_db" not in request.fixturenames:
        from infrai import db_async

        monkeypatch.setattr(db_async, "available", lambda: False)


@pytest.fixture
def silent_upstream() -> Iterator[str]:
    """A SIMULATED vendor on loopback that accepts calls and never answers; yields its base URL."""
    from tests.live import listening_socket

    held: list[socket.socket] = []
    yield from listening_socket(held.append)
    for conn in held:
        conn.close()
