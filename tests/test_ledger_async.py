"""The async hot path of the ledger (areserve / asettle / arelease): the same rules and results as
the sync one. On PostgreSQL it runs on the event loop's own pool, on SQLite in a worker thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import IntegrityError, InterfaceError, OperationalError, connection
from django.forms.models import model_to_dict

from billing import ledger
from billing.models import CreditBalance, EntryKind, Hold, HoldState, LedgerEntry, UsageRecord
from infrai import db_async
from tests.factories import make_account, unsaved_usage_record

pytestmark = pytest.mark.django_db(transaction=True)
USD = 1_000_000_000
T = TypeVar("T")


def run(awaitable: Awaitable[T]) -> T:
    """Run on a fresh event loop, as each test-client request does, closing that loop's pool."""

    async def main() -> T:
        try:
            return await awaitable
        finally:
            await db_async.close_pools()

    return asyncio.run(main())


def usage(account, request_id: str, cost_nano: int) -> UsageRecord:
    return unsaved_usage_record(
        account, request_id, cost_nano, units={"note": "exact", "n": [1, 2]}, latency_ms=7, cache_hit=True
    )


def balance_of(account) -> tuple[int, int]:
    balance = ledger.get_balance(account)
    return balance.balance_nano, balance.held_nano


def test_areserve_holds_credit_and_returns_a_saved_hold():
    account = make_account(credit_nano=10 * USD)
    hold = run(ledger.areserve(account, 3 * USD, "req-1", memo="chat"))
    assert balance_of(account) == (10 * USD, 3 * USD)
    assert (hold._state.adding, hold._state.db, hold.state) == (False, "default", HoldState.OPEN)
    stored = Hold.objects.get(pk=hold.pk)
    assert (stored.public_id, stored.reference, stored.amount_nano, stored.memo, stored.expires_at) == (
        hold.public_id,
        "req-1",
        3 * USD,
        "chat",
        hold.expires_at,
    )
    entry = LedgerEntry.objects.get(reference="hold:req-1")
    assert (entry.kind, entry.amount_nano, entry.held_delta_nano, entry.balance_after_nano) == (
        EntryKind.HOLD,
        0,
        3 * USD,
        10 * USD,
    )
    assert ledger.check_consistency() == []


def test_areserve_beyond_available_credit_is_refused_with_the_numbers():
    account = make_account(credit_nano=2 * USD)
    run(ledger.areserve(account, USD + 1, "req-a"))
    with pytest.raises(ledger.InsufficientCredit) as refused:
        run(ledger.areserve(account.pk, USD, "req-b"))
    assert (refused.value.balance_nano, refused.value.available_nano, refused.value.required_nano) == (
        2 * USD,
        USD - 1,
        USD,
    )
    assert not Hold.objects.filter(reference="req-b").exists()
    assert not LedgerEntry.objects.filter(reference="hold:req-b").exists()
    assert balance_of(account) == (2 * USD, USD + 1)


def test_areserve_without_a_balance_row_raises_does_not_exist():
    account = make_account()
    CreditBalance.objects.filter(account=account).delete()
    with pytest.raises(CreditBalance.DoesNotExist):
        run(ledger.areserve(account, USD, "req-nobody"))


def test_areserve_refuses_a_negative_hold_and_asettle_a_negative_charge():
    account = make_account(credit_nano=USD)
    with pytest.raises(ValueError):
        run(ledger.areserve(account, -1, "req-neg"))
    hold = ledger.reserve(account, USD, "req-pos")
    with pytest.raises(ValueError):
        run(ledger.asettle(hold, -1))


def test_the_same_request_cannot_hold_twice():
    account = make_account(credit_nano=5 * USD)

    async def twice() -> None:
        await ledger.areserve(account, USD, "req-dup")
        await ledger.areserve(account, USD, "req-dup")

    with pytest.raises(ledger.DuplicateReference):
        run(twice())
    assert balance_of(account) == (5 * USD, USD)
    assert ledger.check_consistency() == []


def test_asettle_charges_exactly_once():
    account = make_account(credit_nano=10 * USD)

    async def settle_twice() -> tuple[Hold, bool, bool]:
        hold = await ledger.areserve(account, 3 * USD, "req-1", memo="chat")
        return hold, await ledger.asettle(hold, USD), await ledger.asettle(hold, USD)

    hold, first, second = run(settle_twice())
    assert (first, second) == (True, False)
    assert (hold.state, hold.charged_nano) == (HoldState.SETTLED, USD)
    assert hold.closed_at is not None
    assert balance_of(account) == (9 * USD, 0)
    assert run(ledger.asettle(Hold.objects.get(pk=hold.pk), USD)) is False
    assert balance_of(account) == (9 * USD, 0)
    kinds = list(LedgerEntry.objects.filter(account=account).order_by("id").values_list("kind", flat=True))
    assert kinds == [EntryKind.ADJUSTMENT, EntryKind.HOLD, EntryKind.RELEASE, EntryKind.USAGE]
    stored = Hold.objects.get(pk=hold.pk)
    assert (stored.state, stored.charged_nano) == (HoldState.SETTLED, USD)
    assert ledger.check_consistency() == []


def test_arelease_returns_the_credit():
    account = make_account(credit_nano=5 * USD)
    hold = run(ledger.areserve(account, USD, "req-fail"))
    assert run(ledger.arelease(hold)) is True
    assert (hold.state, hold.charged_nano) == (HoldState.RELEASED, 0)
    assert run(ledger.arelease(hold)) is False
    assert balance_of(account) == (5 * USD, 0)
    assert Hold.objects.get().state == HoldState.RELEASED
    assert not LedgerEntry.objects.filter(kind=EntryKind.USAGE).exists()
    assert ledger.check_consistency() == []


def test_asettle_writes_the_same_usage_record_as_settle():
    account = make_account(credit_nano=5 * USD)
    sync_hold = ledger.reserve(account, USD, "req-sync", memo="chat")
    assert ledger.settle(sync_hold, 1234, usage=usage(account, "req-sync", 1234)) is True
    async_hold = run(ledger.areserve(account, USD, "req-async", memo="chat"))
    assert run(ledger.asettle(async_hold, 1234, usage=usage(account, "req-async", 1234))) is True

    def fields(request_id: str) -> dict:
        return model_to_dict(UsageRecord.objects.get(request_id=request_id), exclude=["id", "request_id", "created_at"])

    assert fields("req-async") == fields("req-sync")
    assert fields("req-async")["units"] == {"note": "exact", "n": [1, 2]}
    entry = LedgerEntry.objects.get(reference="usage:req-async")
    assert (entry.amount_nano, entry.memo, entry.balance_after_nano) == (-1234, "chat", 5 * USD - 2 * 1234)
    assert balance_of(account) == (5 * USD - 2 * 1234, 0)
    assert ledger.check_consistency() == []


def test_a_repeated_usage_request_id_fails_the_whole_settlement():
    account = make_account(credit_nano=5 * USD)
    first = ledger.reserve(account, USD, "req-u1")
    ledger.settle(first, 10, usage=usage(account, "same-request", 10))
    second = run(ledger.areserve(account, USD, "req-u2"))
    with pytest.raises(IntegrityError):
        run(ledger.asettle(second, 10, usage=usage(account, "same-request", 10)))
    with pytest.raises(IntegrityError):
        ledger.settle(Hold.objects.get(pk=second.pk), 10, usage=usage(account, "same-request", 10))
    assert Hold.objects.get(pk=second.pk).state == HoldState.OPEN
    assert balance_of(account) == (5 * USD - 10, USD)
    assert ledger.check_consistency() == []


def test_one_hundred_concurrent_reservations_take_exactly_the_credit():
    account = make_account(credit_nano=37 * USD)

    async def one(n: int) -> Hold | ledger.InsufficientCredit:
        try:
            return await ledger.areserve(account.pk, USD, f"req-{n}")
        except ledger.InsufficientCredit as refused:
            return refused

    async def all_at_once() -> list[Hold | ledger.InsufficientCredit]:
        return await asyncio.gather(*(one(n) for n in range(100)))

    outcomes = run(all_at_once())
    holds = [o for o in outcomes if isinstance(o, Hold)]
    refusals = [o for o in outcomes if isinstance(o, ledger.InsufficientCredit)]
    assert (len(holds), len(refusals)) == (37, 63)
    assert all(r.available_nano >= 0 for r in refusals), "never below zero"
    assert Hold.objects.filter(account=account, state=HoldState.OPEN).count() == 37
    assert balance_of(account) == (37 * USD, 37 * USD)

    async def settle_all() -> list[bool]:
        return await asyncio.gather(*(ledger.asettle(hold, USD) for hold in holds))

    assert run(settle_all()) == [True] * 37
    assert balance_of(account) == (0, 0)
    assert ledger.check_consistency() == []


def test_async_and_sync_steps_interleaved_keep_the_ledger_consistent():
    account = make_account(credit_nano=10 * USD)
    a = ledger.reserve(account, USD, "mix-a")
    b = run(ledger.areserve(account, 2 * USD, "mix-b"))
    assert run(ledger.asettle(a, USD // 2)) is True
    assert ledger.settle(Hold.objects.get(pk=b.pk), USD) is True
    assert run(ledger.asettle(b, USD)) is False, "settled by the sync path already"
    c = run(ledger.areserve(account, 3 * USD, "mix-c"))
    assert ledger.release(Hold.objects.get(pk=c.pk)) is True
    d = ledger.reserve(account, USD, "mix-d")
    assert run(ledger.arelease(d)) is True
    assert ledger.release(d) is False
    assert balance_of(account) == (10 * USD - USD // 2 - USD, 0)
    assert ledger.check_consistency() == []


def test_psycopg_errors_leave_as_djangos():
    with pytest.raises(OperationalError), db_async.django_errors():
        raise psycopg.OperationalError("server closed the connection")
    with pytest.raises(InterfaceError), db_async.django_errors():
        raise psycopg.InterfaceError("connection is closed")
    with pytest.raises(IntegrityError), db_async.django_errors():
        raise psycopg.errors.UniqueViolation("duplicate key")


# --- PostgreSQL: the event loop's own pool ----------------------------------------------------


def test_on_postgresql_the_hot_path_uses_no_thread(on_postgres, monkeypatch):
    def no_thread(*args, **kwargs):
        raise AssertionError("handed off to a thread")

    monkeypatch.setattr(ledger, "in_thread", no_thread)
    account = make_account(credit_nano=5 * USD)
    record = usage(account, "req-1", 100)

    async def hot_path() -> tuple[bool, bool]:
        settled = await ledger.areserve(account, USD, "req-1")
        released = await ledger.areserve(account, USD, "req-2")
        with pytest.raises(ledger.InsufficientCredit):
            await ledger.areserve(account, 4 * USD, "req-3")
        with pytest.raises(ledger.DuplicateReference):
            await ledger.areserve(account, USD, "req-1")
        return await ledger.asettle(settled, 100, usage=record), await ledger.arelease(released)

    assert run(hot_path()) == (True, True)
    assert balance_of(account) == (5 * USD - 100, 0)
    assert ledger.check_consistency() == []


def test_on_postgresql_the_pool_uses_djangos_database_and_settings(on_postgres, settings):
    async def inspect() -> tuple[object, dict, object]:
        first = await db_async.pool()
        assert await db_async.pool() is first, "one pool per loop"
        return first, dict(first.kwargs), first.max_size

    pool, kwargs, max_size = run(inspect())
    assert kwargs["dbname"] == connection.settings_dict["NAME"]
    assert (kwargs["autocommit"], kwargs["cursor_factory"]) == (True, psycopg.AsyncCursor)
    assert max_size == settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]
    assert pool.closed
    assert run(db_async.pool()) is not pool, "a new loop gets its own pool"


def _terminate_async_sessions() -> int:
    from django.db import connection as thread_connection

    sql = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = %s"
    )
    try:
        with thread_connection.cursor() as cursor:
            cursor.execute(sql, [db_async.APPLICATION_NAME])
            terminated = len(cursor.fetchall())
            for _ in range(100):  # the backends exit shortly after the signal
                cursor.execute(sql.replace("pg_terminate_backend(pid)", "pid"), [db_async.APPLICATION_NAME])
                if not cursor.fetchall():
                    break
                time.sleep(0.05)
        return terminated
    finally:
        thread_connection.close()


def test_on_postgresql_the_pool_recovers_when_its_sessions_are_terminated(on_postgres):
    account = make_account(credit_nano=10 * USD)

    async def scenario() -> tuple[int, str]:
        await asyncio.gather(*(ledger.areserve(account, USD, f"before-{n}") for n in range(3)))
        terminated = await sync_to_async(_terminate_async_sessions, thread_sensitive=False)()
        try:
            await ledger.areserve(account, USD, "after-1")
            first = "succeeded"
        except OperationalError:
            first = "OperationalError"
        await ledger.areserve(account, USD, "after-2")
        return terminated, first

    terminated, first = run(scenario())
    assert terminated >= 1
    assert first in ("succeeded", "OperationalError")
    assert Hold.objects.filter(reference="after-2").exists()
    assert ledger.check_consistency() == []
