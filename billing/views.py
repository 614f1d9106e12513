"""Console billing: balance, holds, history (with CSV), and Stripe top-up with its return pages.

Nothing here credits anything: the success page only shows what the webhook has posted.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from billing import ledger
from billing.forms import TopUpForm
from billing.models import Hold, HoldState, LedgerEntry, TopUp
from billing.stripe_checkout import (
    DEFAULT_RETURN_PATH,
    TopUpError,
    TopUpUnavailable,
    abandon_topup,
    parse_amount,
    safe_return_path,
    start_topup,
)
from console import accounts
from console.models import Account
from infrai.lib.money import display_usd, format_usd, usd_to_nano

HISTORY_PAGE_SIZE = 25


class HttpResponseSeeOther(HttpResponseRedirect):
    status_code = 303


def _account(request: HttpRequest) -> Account:
    return accounts.ensure_account(request.user)  # type: ignore[arg-type]


def _base_url(request: HttpRequest) -> str:
    return settings.SITE_URL or request.build_absolute_uri("/").rstrip("/")


def _presets() -> list[Decimal]:
    low, high = Decimal(settings.TOPUP_MIN_USD), Decimal(settings.TOPUP_MAX_USD)
    return [Decimal(p) for p in settings.TOPUP_PRESETS_USD if low <= Decimal(p) <= high]


def _stripe_context() -> dict[str, Any]:
    base = settings.STRIPE_API_BASE or ""
    return {
        "test_mode": settings.STRIPE_TEST_MODE,
        "standin": base.startswith(("http://127.0.0.1", "http://localhost")),
    }


def signed_usd(nano: int) -> str:
    """A signed amount such as +$10.00 or −$1.50 (a real minus sign); empty for zero."""
    if not nano:
        return ""
    sign = "+" if nano > 0 else "\u2212"
    return f"{sign}{display_usd(abs(nano))}"


def _render_billing(
    request: HttpRequest, account: Account, form: TopUpForm, *, status: int = 200, error: str = ""
) -> HttpResponse:
    entries = LedgerEntry.objects.filter(account=account).order_by("-created_at", "-id")
    page = Paginator(entries, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    return_to = form["return_to"].value() or DEFAULT_RETURN_PATH
    return render(
        request,
        "billing/billing.html",
        {
            "account": account,
            "balance": ledger.get_balance(account),
            "holds": Hold.objects.filter(account=account, state=HoldState.OPEN).order_by("-created_at")[:50],
            "page": page,
            "history": [
                {"entry": e, "amount": signed_usd(e.amount_nano), "held": signed_usd(e.held_delta_nano)}
                for e in page.object_list
            ],
            "topups": TopUp.objects.filter(account=account)[:5],
            "form": form,
            "presets": _presets(),
            "return_to": safe_return_path(return_to),
            "topup_error": error,
            "min_nano": usd_to_nano(settings.TOPUP_MIN_USD),
            "max_nano": usd_to_nano(settings.TOPUP_MAX_USD),
            "nav": "billing",
            **_stripe_context(),
        },
        status=status,
    )


@login_required
@require_GET
def billing_page(request: HttpRequest) -> HttpResponse:
    initial = {"return_to": safe_return_path(request.GET.get("return_to"))}
    try:  # a 402 elsewhere links here with the shortfall as a suggestion
        initial["amount_usd"] = str(parse_amount(request.GET.get("amount_usd")))
    except TopUpError:
        pass
    form = TopUpForm(initial=initial)
    return _render_billing(request, _account(request), form)


@login_required
@require_POST
def topup(request: HttpRequest) -> HttpResponse:
    """Start Stripe Checkout for the chosen amount: 303 to Stripe's payment page."""
    account = _account(request)
    form = TopUpForm(request.POST)
    if not form.is_valid():
        return _render_billing(request, account, form, status=400)
    try:
        url = start_topup(account, form.cleaned_data["amount_usd"], form.cleaned_data["return_to"], _base_url(request))
    except TopUpError as exc:
        form.add_error("amount_usd", exc.form_message)
        return _render_billing(request, account, form, status=400)
    except TopUpUnavailable as exc:
        return _render_billing(request, account, form, status=503, error=str(exc))
    return HttpResponseSeeOther(url)


def _own_topup(request: HttpRequest, topup_id: str) -> TopUp:
    return get_object_or_404(TopUp, public_id=topup_id, account=_account(request))


def _status_context(request: HttpRequest, topup: TopUp) -> dict[str, Any]:
    return {"topup": topup, "balance": ledger.get_balance(topup.account_id), "return_path": topup.return_path}


@login_required
@require_GET
def topup_success(request: HttpRequest, topup_id: str) -> HttpResponse:
    """Where Stripe sends the browser after paying. Shows state only; the webhook credits."""
    topup = _own_topup(request, topup_id)
    return render(
        request,
        "billing/topup_success.html",
        {**_status_context(request, topup), "nav": "billing", **_stripe_context()},
    )


@login_required
@require_GET
def topup_status(request: HttpRequest, topup_id: str) -> HttpResponse:
    """The success page's status block, polled with htmx until Stripe's webhook has landed."""
    return render(request, "billing/_topup_status.html", _status_context(request, _own_topup(request, topup_id)))


@login_required
@require_GET
def topup_cancel(request: HttpRequest, topup_id: str) -> HttpResponse:
    topup = _own_topup(request, topup_id)
    abandon_topup(topup)
    return render(
        request,
        "billing/topup_cancel.html",
        {"topup": topup, "return_path": topup.return_path, "nav": "billing", **_stripe_context()},
    )


CSV_HEADER = ["date", "type", "description", "amount_usd", "held_change_usd", "balance_after_usd", "reference"]
CSV_CHUNK = 2000
Cursor = tuple[Any, int] | None


class _Echo:
    def write(self, value: str) -> str:
        return value


def _cell(text: str) -> str:
    # Spreadsheets run cells that start with these as formulas.
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_chunk(account_id: int, after: Cursor) -> tuple[str, Cursor]:
    """The next CSV_CHUNK entries (newest first) after `after` as CSV text, and the next cursor."""
    entries = LedgerEntry.objects.filter(account_id=account_id).order_by("-created_at", "-id")
    if after is not None:
        entries = entries.filter(Q(created_at__lt=after[0]) | Q(created_at=after[0], id__lt=after[1]))
    batch = list(entries[:CSV_CHUNK])
    writer = csv.writer(_Echo())
    text = "".join(
        writer.writerow(
            [
                entry.created_at.isoformat(),
                entry.get_kind_display(),
                _cell(entry.memo),
                format_usd(entry.amount_nano),
                format_usd(entry.held_delta_nano),
                format_usd(entry.balance_after_nano),
                _cell(entry.reference),
            ]
        )
        for entry in batch
    )
    cursor = (batch[-1].created_at, batch[-1].pk) if len(batch) == CSV_CHUNK else None
    return text, cursor


def _csv_rows(account_id: int) -> Iterator[str]:
    yield csv.writer(_Echo()).writerow(CSV_HEADER)
    text, cursor = _csv_chunk(account_id, None)
    yield text
    while cursor is not None:
        text, cursor = _csv_chunk(account_id, cursor)
        yield text


async def _csv_rows_async(account_id: int) -> AsyncIterator[str]:
    yield csv.writer(_Echo()).writerow(CSV_HEADER)
    text, cursor = await sync_to_async(_csv_chunk)(account_id, None)
    yield text
    while cursor is not None:
        text, cursor = await sync_to_async(_csv_chunk)(account_id, cursor)
        yield text


@login_required
@require_GET
def history_csv(request: HttpRequest) -> StreamingHttpResponse:
    """Every ledger entry of the account, newest first, amounts as exact USD decimal strings.

    Streamed in chunks; under ASGI (daphne) through an async iterator, which Django would
    otherwise buffer whole.
    """
    account = _account(request)
    rows = _csv_rows_async(account.pk) if isinstance(request, ASGIRequest) else _csv_rows(account.pk)
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d")
    response["Content-Disposition"] = f'attachment; filename="infrai-ledger-{account.public_id}-{stamp}.csv"'
    return response
