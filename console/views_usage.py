from __future__ import annotations

from datetime import date

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from billing.models import UsageRecord
from console import accounts, usage
from console.models import ProjectKey


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@login_required
def usage_page(request: HttpRequest) -> HttpResponse:
    account = accounts.ensure_account(request.user)  # type: ignore[arg-type]
    filters = usage.Filters(
        key=request.GET.get("key", ""),
        model=request.GET.get("model", ""),
        capability=request.GET.get("capability", ""),
        since=_date(request.GET.get("since")),
        until=_date(request.GET.get("until")),
    )
    errors = [
        f"{name} must be a date like 2026-01-31"
        for name in ("since", "until")
        if request.GET.get(name) and not _date(request.GET.get(name))
    ]
    rows = usage.records(account, filters)
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    mine = UsageRecord.objects.filter(account=account)
    context = {
        "nav": "usage",
        "filters": filters,
        "errors": errors,
        "page": page,
        "chart": usage.daily_spend_chart(rows),
        "keys": ProjectKey.objects.filter(project__account=account).select_related("project"),
        "models": mine.order_by("model").values_list("model", flat=True).distinct(),
        "capabilities": mine.order_by("capability").values_list("capability", flat=True).distinct(),
        "query": request.GET.copy(),
    }
    context["query"].pop("page", None)
    return render(request, "console/usage.html", context, status=400 if errors else 200)
