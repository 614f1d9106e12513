"""Every rule about credit lives here: posting entries, holds, settlement and checks.

Each posting is one transaction that (1) moves the account's balance row with a single guarded
UPDATE ... RETURNING and (2) appends its entries, whose `reference` is unique in the database.
A repeated reference (a retried webhook, a replayed request) fails the insert, rolls the whole
transaction back and is reported as a duplicate, so nothing is ever counted twice.

The hot path (`reserve`, `settle`, `release`) is one statement per step on PostgreSQL: a
data-modifying CTE that moves the balance (or closes the hold) and inserts the entries, the hold
row and the usage record. In autocommit it is its own transaction, so the balance row stays
locked only for that statement and its commit. Other databases (SQLite) take the same steps as
separate statements in one transaction, with the same rows and the same guards.

`areserve`, `asettle` and `arelease` are the same steps for async callers: on PostgreSQL the same
statements on the event loop's own connection pool (infrai/db_async.py), with no thread hand-off;
elsewhere the sync functions in a worker thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing.models import CreditBalance, EntryKind, Hold, HoldState, LedgerEntry, UsageRecord
from console.models import Account
from infrai import db_async
from infrai.lib.ids import public_id
from infrai.lib.sync import in_thread

if TYPE_CHECKING:
    from psycopg import AsyncConnection


DEFAULT_HOLD_TTL = timedelta(minutes=15)


class InsufficientCredit(Exception):
    def __init__(self, balance_nano: int, held_nano: int, required_nano: int) -> None:
        super().__init__("insufficient credit")
        self.balance_nano = balance_nano
        self.held_nano = held_nano
        self.required_nano = required_nano

    @property
    def available_nano(self) -> int:
        return self.balance_nano - self.held_nano


class DuplicateReference(Exception):
    """The reference was posted before: the earlier posting stands and nothing changed."""


@dataclass(frozen=True)
class Line:
    kind: str
    reference: str
    amount_nano: int = 0
    held_delta_nano: int = 0
    memo: str = ""


@dataclass
class Posting:
    """The balance after a posting; `entries` is filled by `post` only (the one-statement hot path
    does not build entry objects it would not use)."""

    balance_nano: int
    held_nano: int
    entries: list[LedgerEntry] = field(default_factory=list)


def open_balance(account: Account) -> CreditBalance:
    balance, _ = CreditBalance.objects.get_or_create(account=account)
    return balance


def get_balance(account: Account | int) -> CreditBalance:
    return CreditBalance.objects.get(account_id=_account_id(account))


def _account_id(account: Account | int) -> int:
    return account if isinstance(account, int) else account.pk


def _balance_row(account_id: int) -> QuerySet:
    return CreditBalance.objects.filter(account_id=account_id).values_list("balance_nano", "held_nano")


def _refusal(account_id: int, balance_row: Sequence[int] | None, required_nano: int) -> Exception:
    """Why a guarded statement moved nothing, from the balance row read after it."""
    if balance_row is None:
        return CreditBalance.DoesNotExist(f"account {account_id} has no balance row")
    return InsufficientCredit(int(balance_row[0]), int(balance_row[1]), required_nano)


def _move_balance(
    account_id: int, amount_nano: int, held_delta_nano: int, require_available: int | None
) -> tuple[int, int] | None:
    table = CreditBalance._meta.db_table
    # The table name comes from the model; every value is a parameter.
    sql = f"UPDATE {table} SET balance_nano = balance_nano + %s, held_nano = held_nano + %s, updated_at = %s WHERE account_id = %s"  # noqa: S608
    params: list[object] = [amount_nano, held_delta_nano, timezone.now(), account_id]
    if require_available is not None:
        sql += " AND balance_nano - held_nano >= %s"
        params.append(require_available)
    sql += " RETURNING balance_nano, held_nano"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return (int(row[0]), int(row[1])) if row else None


def post(
    account: Account | int,
    lines: Sequence[Line],
    *,
    require_available: int | None = None,
    also: Callable[[Posting], None] | None = None,
) -> Posting:
    """Apply `lines` atomically. Raises DuplicateReference or InsufficientCredit.

    `require_available`: refuse unless balance - held >= this before the change (the guard and
    the change are one statement, so concurrent callers cannot both pass it).
    `also`: work that must commit or fail with the posting (a usage record, a hold row).
    """
    account_id = _account_id(account)
    amount = sum(line.amount_nano for line in lines)
    held_delta = sum(line.held_delta_nano for line in lines)
    try:
        with transaction.atomic():
            moved = _move_balance(account_id, amount, held_delta, require_available)
            if moved is None:
                raise _refusal(account_id, _balance_row(account_id).first(), require_available or 0)
            posting = Posting(balance_nano=moved[0], held_nano=moved[1])
            now = timezone.now()
            posting.entries = LedgerEntry.objects.bulk_create(
                [
                    LedgerEntry(
                        account_id=account_id,
                        kind=line.kind,
                        amount_nano=line.amount_nano,
                        held_delta_nano=line.held_delta_nano,
                        balance_after_nano=posting.balance_nano,
                        reference=line.reference,
                        memo=line.memo,
                        created_at=now,
                    )
                    for line in lines
                ]
            )
            if also is not None:
                also(posting)
            return posting
    except IntegrityError as exc:
        _raise_if_duplicate(exc, [line.reference for line in lines])
        raise


def _duplicates(references: list[str]) -> QuerySet:
    return LedgerEntry.objects.filter(reference__in=references)


def _raise_if_duplicate(exc: IntegrityError, references: list[str]) -> None:
    if _duplicates(references).exists():
        raise DuplicateReference(", ".join(references)) from exc


async def _araise_if_duplicate(conn: AsyncConnection, exc: IntegrityError, references: list[str]) -> None:
    if await db_async.fetchone(conn, *_compiled(_duplicates(references).query.exists())) is not None:
        raise DuplicateReference(", ".join(references)) from exc


def _compiled(query: Any) -> tuple[str, tuple[Any, ...]]:
    """The SQL and parameters of an ORM query, for the async pool (compiling makes no query)."""
    return query.get_compiler(connection=connection).as_sql()


def _one_statement_path() -> bool:
    return connection.vendor == "postgresql"


@contextmanager
def _statement_scope() -> Iterator[None]:
    """In autocommit a single statement is its own transaction (no BEGIN/COMMIT round trips);
    inside a caller's transaction it gets a savepoint, so a failure (a duplicate reference)
    leaves that transaction usable."""
    if connection.in_atomic_block:
        with transaction.atomic():
            yield
    else:
        yield


# Field types whose Python value is what the database takes (no conversion by the ORM).
_STORED_AS_IS = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "BigIntegerField",
        "BooleanField",
        "CharField",
        "ForeignKey",
        "IntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "SmallIntegerField",
        "TextField",
    }
)


@functools.cache
def _insert_shape(model: type[models.Model], source: str) -> tuple[str, tuple[tuple[models.Field, bool], ...]]:
    """The INSERT ... SELECT text for `model` and its fields, each with whether its value needs
    the ORM's conversion (JSON, datetimes): built once per model, not per call."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    # Table and column names come from the model; every value is a parameter.
    sql = f"INSERT INTO {model._meta.db_table} ({columns}) SELECT {placeholders} FROM {source}"  # noqa: S608
    return sql, tuple((f, f.get_internal_type() not in _STORED_AS_IS) for f in fields)


def _insert_select(instance: models.Model, source: str) -> tuple[str, list[Any]]:
    """`INSERT INTO <table> (...) SELECT <values> FROM <source>` for an unsaved model instance,
    its values converted as the ORM would save them."""
    sql, fields = _insert_shape(type(instance), source)
    values = [
        f.get_db_prep_save(f.pre_save(instance, add=True), connection) if converted else getattr(instance, f.attname)
        for f, converted in fields
    ]
    return sql, values


def credit(account: Account | int, amount_nano: int, kind: str, reference: str, memo: str = "") -> bool:
    """Add credit once per reference; False if that reference was already credited."""
    if amount_nano <= 0:
        raise ValueError("a credit must be positive")
    try:
        post(account, [Line(kind=kind, reference=reference, amount_nano=amount_nano, memo=memo)])
    except DuplicateReference:
        return False
    return True


def debit(account: Account | int, amount_nano: int, kind: str, reference: str, memo: str = "") -> bool:
    """Take credit once per reference (refunds, adjustments); may take the balance below zero."""
    if amount_nano <= 0:
        raise ValueError("a debit must be positive")
    try:
        post(account, [Line(kind=kind, reference=reference, amount_nano=-amount_nano, memo=memo)])
    except DuplicateReference:
        return False
    return True


def grant_signup_credit(account: Account, provider: str, uid: str) -> bool:
    """The sign-up grant, once per social identity (provider + uid) for ever."""
    from infrai.lib.money import usd_to_nano

    amount = usd_to_nano(settings.SIGNUP_GRANT_USD)
    if amount <= 0:
        return False
    return credit(
        account, amount, EntryKind.SIGNUP_GRANT, f"signup:{provider}:{uid}", memo=f"Sign-up credit ({provider})"
    )


# --- Holds ------------------------------------------------------------------------------------


RESERVE_SQL = """
WITH moved AS (
    UPDATE billing_creditbalance SET held_nano = held_nano + %s, updated_at = %s
     WHERE account_id = %s AND balance_nano - held_nano >= %s
 RETURNING balance_nano, held_nano
), entry AS (
    INSERT INTO billing_ledgerentry
           (account_id, kind, amount_nano, held_delta_nano, balance_after_nano, reference, memo, created_at)
    SELECT %s, %s, 0, %s, balance_nano, %s, %s, %s FROM moved
), hold AS (
    INSERT INTO billing_hold (public_id, account_id, reference, amount_nano, state, memo, created_at, expires_at)
    SELECT %s, %s, %s, %s, %s, %s, %s, %s FROM moved
 RETURNING id
)
SELECT hold.id FROM hold
"""


def reserve(
    account: Account | int, amount_nano: int, reference: str, ttl: timedelta = DEFAULT_HOLD_TTL, memo: str = ""
) -> Hold:
    """Reserve `amount_nano` of available credit for a call, or raise InsufficientCredit."""
    _check_hold_amount(amount_nano)
    account_id = _account_id(account)
    if not _one_statement_path():
        return _reserve_in_steps(account_id, amount_nano, reference, timezone.now(), ttl, memo)
    hold, params = _reserve_statement(account_id, amount_nano, reference, ttl, memo)
    try:
        with _statement_scope(), connection.cursor() as cursor:
            cursor.execute(RESERVE_SQL, params)
            row = cursor.fetchone()
    except IntegrityError as exc:
        _raise_if_duplicate(exc, [_hold_reference(reference)])
        raise
    if row is None:
        raise _refusal(account_id, _balance_row(account_id).first(), amount_nano)
    return _reserved(hold, row[0])


async def areserve(
    account: Account | int, amount_nano: int, reference: str, ttl: timedelta = DEFAULT_HOLD_TTL, memo: str = ""
) -> Hold:
    """`reserve` for async callers."""
    if not db_async.available():
        return await in_thread(reserve, account, amount_nano, reference, ttl, memo)
    _check_hold_amount(amount_nano)
    account_id = _account_id(account)
    hold, params = _reserve_statement(account_id, amount_nano, reference, ttl, memo)
    async with db_async.connection() as conn:
        try:
            row = await db_async.fetchone(conn, RESERVE_SQL, params)
        except IntegrityError as exc:
            await _araise_if_duplicate(conn, exc, [_hold_reference(reference)])
            raise
        if row is None:
            raise _refusal(
                account_id, await db_async.fetchone(conn, *_compiled(_balance_row(account_id).query)), amount_nano
            )
    return _reserved(hold, row[0])


def _check_hold_amount(amount_nano: int) -> None:
    if amount_nano < 0:
        raise ValueError("a hold cannot be negative")


def _hold_reference(reference: str) -> str:
    return f"hold:{reference}"


def _reserve_statement(
    account_id: int, amount_nano: int, reference: str, ttl: timedelta, memo: str
) -> tuple[Hold, list[Any]]:
    """The unsaved hold and the parameters of RESERVE_SQL that inserts it."""
    now = timezone.now()
    hold = Hold(
        public_id=public_id("hold"),
        account_id=account_id,
        reference=reference,
        amount_nano=amount_nano,
        state=HoldState.OPEN,
        memo=memo,
        created_at=now,
        expires_at=now + ttl,
    )
    params = [
        *(amount_nano, now, account_id, amount_nano),
        *(account_id, EntryKind.HOLD.value, amount_nano, _hold_reference(reference), memo, now),
        *(hold.public_id, account_id, reference, amount_nano, HoldState.OPEN.value, memo, now, hold.expires_at),
    ]
    return hold, params


def _reserved(hold: Hold, hold_id: int) -> Hold:
    """The hold as the ORM would return it after saving."""
    hold.pk = int(hold_id)
    hold._state.adding = False
    hold._state.db = connection.alias
    return hold


def _reserve_in_steps(account_id: int, amount_nano: int, reference: str, now: Any, ttl: timedelta, memo: str) -> Hold:
    holder: list[Hold] = []

    def create_hold(_: Posting) -> None:
        holder.append(
            Hold.objects.create(
                account_id=account_id,
                reference=reference,
                amount_nano=amount_nano,
                memo=memo,
                created_at=now,
                expires_at=now + ttl,
            )
        )

    post(
        account_id,
        [Line(kind=EntryKind.HOLD, reference=f"hold:{reference}", held_delta_nano=amount_nano, memo=memo)],
        require_available=amount_nano,
        also=create_hold,
    )
    return holder[0]


def reserve_many(
    account: Account | int, holds: Sequence[tuple[str, int]], ttl: timedelta = DEFAULT_HOLD_TTL, memo: str = ""
) -> list[Hold]:
    """Reserve several holds (reference, amount) at once, all or none: one guarded posting for
    their total, so a batch either has credit for every item or is refused whole."""
    for _, amount in holds:
        _check_hold_amount(amount)
    account_id = _account_id(account)
    now = timezone.now()
    total = sum(amount for _, amount in holds)
    created: list[Hold] = []

    def create_holds(_: Posting) -> None:
        created.extend(
            Hold.objects.bulk_create(
                [
                    Hold(
                        account_id=account_id,
                        reference=ref,
                        amount_nano=amount,
                        memo=memo,
                        created_at=now,
                        expires_at=now + ttl,
                    )
                    for ref, amount in holds
                ]
            )
        )

    post(
        account_id,
        [
            Line(kind=EntryKind.HOLD, reference=f"hold:{ref}", held_delta_nano=amount, memo=memo)
            for ref, amount in holds
        ],
        require_available=total,
        also=create_holds,
    )
    return created


CLOSE_HOLD_SQL = """
WITH closed AS (
    UPDATE billing_hold SET state = %s, charged_nano = %s, closed_at = %s
     WHERE id = %s AND state = 'open'
 RETURNING account_id, amount_nano, reference, memo
), moved AS (
    UPDATE billing_creditbalance b
       SET balance_nano = b.balance_nano - %s, held_nano = b.held_nano - c.amount_nano, updated_at = %s
      FROM closed c
     WHERE b.account_id = c.account_id
 RETURNING b.balance_nano, b.held_nano
), entries AS (
    INSERT INTO billing_ledgerentry
           (account_id, kind, amount_nano, held_delta_nano, balance_after_nano, reference, memo, created_at)
    SELECT c.account_id, %s, 0, -c.amount_nano, m.balance_nano, 'release:' || c.reference, '', %s
      FROM closed c, moved m
    UNION ALL
    SELECT c.account_id, %s, -%s::bigint, 0, m.balance_nano, 'usage:' || c.reference, c.memo, %s
      FROM closed c, moved m WHERE %s::bigint > 0
){usage}
SELECT m.balance_nano, m.held_nano FROM moved m
"""


def _close_hold(
    hold: Hold,
    state: str,
    charged_nano: int,
    also: Callable[[Posting], None] | None,
    usage: UsageRecord | None = None,
) -> bool:
    """Move an open hold to `state` exactly once, releasing it and charging `charged_nano`;
    `usage` (an unsaved record) is written with it, `also` runs in the same transaction."""
    if not _one_statement_path():
        return _close_hold_in_steps(hold, state, charged_nano, also, usage)
    sql, params, now = _close_statement(hold, state, charged_nano, usage)
    try:
        with transaction.atomic() if also is not None else _statement_scope():
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                row = cursor.fetchone()
            if row is None:
                return False
            if also is not None:
                also(Posting(balance_nano=int(row[0]), held_nano=int(row[1])))
    except IntegrityError as exc:
        _raise_if_duplicate(exc, _close_references(hold))
        raise
    _mark_closed(hold, state, charged_nano, now)
    return True


async def _aclose_hold(hold: Hold, state: str, charged_nano: int, usage: UsageRecord | None) -> bool:
    if not db_async.available():
        return await in_thread(_close_hold, hold, state, charged_nano, None, usage)
    sql, params, now = _close_statement(hold, state, charged_nano, usage)
    async with db_async.connection() as conn:
        try:
            row = await db_async.fetchone(conn, sql, params)
        except IntegrityError as exc:
            await _araise_if_duplicate(conn, exc, _close_references(hold))
            raise
    if row is None:
        return False
    _mark_closed(hold, state, charged_nano, now)
    return True


def _close_statement(
    hold: Hold, state: str, charged_nano: int, usage: UsageRecord | None
) -> tuple[str, list[Any], datetime]:
    """CLOSE_HOLD_SQL with its parameters (and the usage insert), and the closing time."""
    now = timezone.now()
    params: list[Any] = [
        *(state, charged_nano, now, hold.pk),
        *(charged_nano, now),
        *(EntryKind.RELEASE.value, now, EntryKind.USAGE.value, charged_nano, now, charged_nano),
    ]
    usage_sql = ""
    if usage is not None:
        insert, values = _insert_select(usage, "moved")
        usage_sql = f", usage AS (\n    {insert}\n)"
        params += values
    return CLOSE_HOLD_SQL.format(usage=usage_sql), params, now


def _close_references(hold: Hold) -> list[str]:
    return [f"release:{hold.reference}", f"usage:{hold.reference}"]


def _mark_closed(hold: Hold, state: str, charged_nano: int, now: datetime) -> None:
    hold.state = state
    hold.charged_nano = charged_nano
    hold.closed_at = now


def _close_hold_in_steps(
    hold: Hold,
    state: str,
    charged_nano: int,
    also: Callable[[Posting], None] | None,
    usage: UsageRecord | None,
) -> bool:
    def write_rest(posting: Posting) -> None:
        if usage is not None:
            usage.save(force_insert=True)
        if also is not None:
            also(posting)

    now = timezone.now()
    with transaction.atomic():
        claimed = Hold.objects.filter(pk=hold.pk, state=HoldState.OPEN).update(
            state=state, charged_nano=charged_nano, closed_at=now
        )
        if not claimed:
            return False
        lines = [Line(kind=EntryKind.RELEASE, reference=f"release:{hold.reference}", held_delta_nano=-hold.amount_nano)]
        if charged_nano:
            lines.append(
                Line(
                    kind=EntryKind.USAGE, reference=f"usage:{hold.reference}", amount_nano=-charged_nano, memo=hold.memo
                )
            )
        post(hold.account_id, lines, also=write_rest)
    _mark_closed(hold, state, charged_nano, now)
    return True


def settle(
    hold: Hold,
    charged_nano: int,
    also: Callable[[Posting], None] | None = None,
    *,
    usage: UsageRecord | None = None,
) -> bool:
    """Charge the actual cost and release the hold; False if it was closed already.

    `usage`: the call's unsaved UsageRecord, written with the settlement (on PostgreSQL in the
    same statement). `also`: other work that must commit or fail with it."""
    _check_charge(charged_nano)
    return _close_hold(hold, HoldState.SETTLED, charged_nano, also, usage)


async def asettle(hold: Hold, charged_nano: int, *, usage: UsageRecord | None = None) -> bool:
    """`settle` for async callers (without `also`: nothing else can share its statement)."""
    _check_charge(charged_nano)
    return await _aclose_hold(hold, HoldState.SETTLED, charged_nano, usage)


def _check_charge(charged_nano: int) -> None:
    if charged_nano < 0:
        raise ValueError("a charge cannot be negative")


def release(hold: Hold) -> bool:
    """Release a hold without charging (the call failed before costing anything)."""
    return _close_hold(hold, HoldState.RELEASED, 0, None)


async def arelease(hold: Hold) -> bool:
    """`release` for async callers."""
    return await _aclose_hold(hold, HoldState.RELEASED, 0, None)


def sweep_expired_holds(now: object | None = None) -> int:
    """Release holds whose call never settled (crashed worker, lost connection)."""
    cutoff = now or timezone.now()
    released = 0
    for hold in Hold.objects.filter(state=HoldState.OPEN, expires_at__lt=cutoff).order_by("expires_at")[:1000]:
        if _close_hold(hold, HoldState.EXPIRED, 0, None):
            released += 1
    return released


# --- Consistency ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discrepancy:
    account_id: int
    balance_nano: int
    ledger_balance_nano: int
    held_nano: int
    ledger_held_nano: int
    open_holds_nano: int


def check_consistency() -> list[Discrepancy]:
    """Accounts whose balance row disagrees with the ledger's sums or with their open holds."""
    from django.db.models import Sum

    sums = {
        row["account_id"]: (row["amount"] or 0, row["held"] or 0)
        for row in LedgerEntry.objects.values("account_id").annotate(
            amount=Sum("amount_nano"), held=Sum("held_delta_nano")
        )
    }
    open_holds = {
        row["account_id"]: row["total"] or 0
        for row in Hold.objects.filter(state=HoldState.OPEN).values("account_id").annotate(total=Sum("amount_nano"))
    }
    problems = []
    for balance in CreditBalance.objects.all():
        ledger_amount, ledger_held = sums.get(balance.account_id, (0, 0))
        holds = open_holds.get(balance.account_id, 0)
        if (balance.balance_nano, balance.held_nano) != (ledger_amount, ledger_held) or holds != ledger_held:
            problems.append(
                Discrepancy(
                    balance.account_id, balance.balance_nano, ledger_amount, balance.held_nano, ledger_held, holds
                )
            )
    return problems
