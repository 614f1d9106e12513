from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing import ledger
from billing.models import AppendOnlyError, CreditBalance, EntryKind, Hold, HoldState, LedgerEntry, UsageRecord
from infrai.lib.money import format_usd, usd_to_nano
from tests.factories import make_account, unsaved_usage_record

pytestmark = pytest.mark.django_db
USD = 1_000_000_000


def test_money_is_exact_to_the_nano_dollar():
    assert usd_to_nano("0.0000002") == 200
    assert format_usd(200) == "0.0000002"
    assert format_usd(2 * USD) == "2.00"
    assert format_usd(-1_500_000_000) == "-1.50"
    with pytest.raises(ValueError):
        usd_to_nano(0.1)  # floats are refused
    with pytest.raises(ValueError):
        usd_to_nano("0.0000000001")


def test_a_credit_is_counted_once_per_reference():
    account = make_account()
    assert ledger.credit(account, 5 * USD, EntryKind.TOPUP, "topup:cs_1") is True
    assert ledger.credit(account, 5 * USD, EntryKind.TOPUP, "topup:cs_1") is False
    assert ledger.get_balance(account).balance_nano == 5 * USD
    assert LedgerEntry.objects.filter(reference="topup:cs_1").count() == 1


def test_a_tiny_charge_does_not_round_to_zero():
    account = make_account(credit_nano=USD)
    hold = ledger.reserve(account, 1000, "req-tiny")
    ledger.settle(hold, 200)
    assert ledger.get_balance(account).balance_nano == USD - 200


def test_a_hold_reduces_available_credit_and_settling_charges_the_actual_cost():
    account = make_account(credit_nano=10 * USD)
    hold = ledger.reserve(account, 3 * USD, "req-1", memo="chat")
    balance = ledger.get_balance(account)
    assert (balance.balance_nano, balance.held_nano, balance.available_nano) == (10 * USD, 3 * USD, 7 * USD)
    assert ledger.settle(hold, USD) is True
    balance = ledger.get_balance(account)
    assert (balance.balance_nano, balance.held_nano) == (9 * USD, 0)
    assert ledger.settle(hold, USD) is False, "a hold settles once"
    assert ledger.get_balance(account).balance_nano == 9 * USD
    kinds = list(LedgerEntry.objects.filter(account=account).order_by("id").values_list("kind", flat=True))
    assert kinds == [EntryKind.ADJUSTMENT, EntryKind.HOLD, EntryKind.RELEASE, EntryKind.USAGE]


def test_a_reservation_beyond_available_credit_is_refused_with_the_numbers():
    account = make_account(credit_nano=2 * USD)
    ledger.reserve(account, USD + 1, "req-a")
    with pytest.raises(ledger.InsufficientCredit) as refused:
        ledger.reserve(account, USD, "req-b")
    assert refused.value.balance_nano == 2 * USD
    assert refused.value.available_nano == USD - 1
    assert refused.value.required_nano == USD
    assert not Hold.objects.filter(reference="req-b").exists()
    assert ledger.get_balance(account).held_nano == USD + 1


def test_the_same_request_cannot_hold_twice():
    account = make_account(credit_nano=5 * USD)
    ledger.reserve(account, USD, "req-dup")
    with pytest.raises(ledger.DuplicateReference):
        ledger.reserve(account, USD, "req-dup")
    assert ledger.get_balance(account).held_nano == USD


def test_releasing_a_hold_charges_nothing():
    account = make_account(credit_nano=5 * USD)
    hold = ledger.reserve(account, USD, "req-fail")
    assert ledger.release(hold) is True
    balance = ledger.get_balance(account)
    assert (balance.balance_nano, balance.held_nano) == (5 * USD, 0)
    assert Hold.objects.get().state == HoldState.RELEASED


def test_the_sweeper_releases_expired_holds_only():
    account = make_account(credit_nano=5 * USD)
    ledger.reserve(account, USD, "old", ttl=timedelta(seconds=1))
    ledger.reserve(account, USD, "fresh", ttl=timedelta(hours=1))
    assert ledger.sweep_expired_holds(timezone.now() + timedelta(seconds=5)) == 1
    assert Hold.objects.get(reference="old").state == HoldState.EXPIRED
    assert Hold.objects.get(reference="fresh").state == HoldState.OPEN
    assert ledger.get_balance(account).held_nano == USD
    assert ledger.check_consistency() == []


def test_entries_are_append_only():
    account = make_account(credit_nano=USD)
    entry = LedgerEntry.objects.get(account=account)
    entry.amount_nano = 100 * USD
    with pytest.raises(AppendOnlyError):
        entry.save()
    with pytest.raises(AppendOnlyError):
        entry.delete()


def test_the_consistency_check_finds_a_tampered_balance():
    account = make_account(credit_nano=USD)
    call_command("check_ledger")
    CreditBalance.objects.filter(account=account).update(balance_nano=7 * USD)
    problems = ledger.check_consistency()
    assert [(p.balance_nano, p.ledger_balance_nano) for p in problems] == [(7 * USD, USD)]
    with pytest.raises(CommandError, match="1 account"):
        call_command("check_ledger")


@pytest.mark.django_db(transaction=True)
def test_one_hundred_simultaneous_reservations_never_spend_more_than_the_credit():
    # 25 connections x 4 calls: PostgreSQL's default 100-connection cap is shared with other tests.
    account = make_account(credit_nano=10 * USD)
    outcomes: list[str] = []
    barrier = threading.Barrier(25)

    def client(worker: int) -> None:
        barrier.wait()
        try:
            for n in range(4):
                try:
                    hold = ledger.reserve(account.pk, USD, f"req-{worker}-{n}")
                    ledger.settle(hold, USD)
                    outcomes.append("charged")
                except ledger.InsufficientCredit:
                    outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(w,)) for w in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    balance = ledger.get_balance(account)
    assert len(outcomes) == 100
    assert outcomes.count("charged") == 10, "exactly the credit is spent, never more"
    assert balance.balance_nano == 0 and balance.held_nano == 0
    assert ledger.check_consistency() == []


def test_many_holds_are_reserved_all_or_none():
    account = make_account(credit_nano=10 * USD)
    holds = ledger.reserve_many(account, [("b1:0", 3 * USD), ("b1:1", 3 * USD)])
    assert [h.amount_nano for h in holds] == [3 * USD, 3 * USD]
    assert ledger.get_balance(account).held_nano == 6 * USD
    with pytest.raises(ledger.InsufficientCredit):
        ledger.reserve_many(account, [("b2:0", 3 * USD), ("b2:1", 3 * USD)])
    assert not Hold.objects.filter(reference__startswith="b2:").exists()
    assert ledger.settle(Hold.objects.get(reference="b1:0"), USD) is True
    assert ledger.release(Hold.objects.get(reference="b1:1")) is True
    balance = ledger.get_balance(account)
    assert (balance.balance_nano, balance.held_nano) == (9 * USD, 0)
    assert ledger.check_consistency() == []


def _usage(account, request_id: str, cost_nano: int) -> UsageRecord:
    return unsaved_usage_record(account, request_id, cost_nano)


def test_a_settlement_writes_its_usage_record_once():
    account = make_account(credit_nano=5 * USD)
    hold = ledger.reserve(account, USD, "req-usage", memo="chat")
    assert ledger.settle(hold, 1234, usage=_usage(account, "req-usage", 1234)) is True
    assert ledger.settle(Hold.objects.get(pk=hold.pk), 1234, usage=_usage(account, "req-usage-2", 1234)) is False
    record = UsageRecord.objects.get()
    assert (record.request_id, record.cost_nano, record.units, record.output_tokens) == (
        "req-usage",
        1234,
        {"note": "exact"},
        34,
    )
    usage_entry = LedgerEntry.objects.get(reference="usage:req-usage")
    assert (usage_entry.amount_nano, usage_entry.memo, usage_entry.balance_after_nano) == (
        -1234,
        "chat",
        5 * USD - 1234,
    )
    assert Hold.objects.get(pk=hold.pk).state == HoldState.SETTLED
    assert ledger.check_consistency() == []


def test_a_refused_hold_writes_nothing():
    account = make_account(credit_nano=USD)
    with pytest.raises(ledger.InsufficientCredit):
        ledger.reserve(account, USD + 1, "req-too-big")
    assert not LedgerEntry.objects.filter(reference="hold:req-too-big").exists()
    assert not Hold.objects.exists()
    assert ledger.check_consistency() == []


def test_a_duplicate_hold_inside_a_transaction_leaves_that_transaction_usable():
    account = make_account(credit_nano=5 * USD)
    with transaction.atomic():
        ledger.reserve(account, USD, "req-in-tx")
        with pytest.raises(ledger.DuplicateReference):
            ledger.reserve(account, USD, "req-in-tx")
        ledger.reserve(account, USD, "req-in-tx-2")
    assert ledger.get_balance(account).held_nano == 2 * USD
    assert ledger.check_consistency() == []


@pytest.mark.django_db(transaction=True)
def test_a_hold_raced_by_settle_and_release_closes_once():
    account = make_account(credit_nano=10 * USD)
    holds = [ledger.reserve(account.pk, USD, f"race-{n}") for n in range(10)]
    results: dict[str, list[bool]] = {"settle": [], "release": []}
    barrier = threading.Barrier(2)

    def close(kind: str) -> None:
        barrier.wait()
        try:
            for hold in holds:
                fresh = Hold.objects.get(pk=hold.pk)
                if kind == "settle":
                    results[kind].append(
                        ledger.settle(fresh, USD // 2, usage=_usage(account, f"u-{hold.pk}", USD // 2))
                    )
                else:
                    results[kind].append(ledger.release(fresh))
        finally:
            connection.close()

    threads = [threading.Thread(target=close, args=(kind,)) for kind in ("settle", "release")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(10):
        assert results["settle"][n] != results["release"][n], "exactly one of settle and release closes each hold"
    settled = results["settle"].count(True)
    balance = ledger.get_balance(account)
    assert (balance.balance_nano, balance.held_nano) == (10 * USD - settled * (USD // 2), 0)
    assert UsageRecord.objects.count() == settled
    assert ledger.check_consistency() == []


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_reserve_and_settle_are_one_statement_each(on_postgres):
    account = make_account(credit_nano=5 * USD)
    with CaptureQueriesContext(connection) as reserving:
        hold = ledger.reserve(account.pk, USD, "req-one")
    usage = _usage(account, "req-one", 100)
    with CaptureQueriesContext(connection) as settling:
        ledger.settle(hold, 100, usage=usage)
    assert len(reserving.captured_queries) == 1, reserving.captured_queries
    assert len(settling.captured_queries) == 1, settling.captured_queries
    assert UsageRecord.objects.get().cost_nano == 100
    assert ledger.get_balance(account).balance_nano == 5 * USD - 100
    assert ledger.check_consistency() == []
