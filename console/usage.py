"""The Usage page's queries: filtered usage records and daily spend per model."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDate

from billing.models import UsageRecord
from console.models import Account

PALETTE = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#14b8a6", "#f97316"]


@dataclass
class Filters:
    key: str = ""
    model: str = ""
    capability: str = ""
    since: date | None = None
    until: date | None = None


def records(account: Account, filters: Filters) -> QuerySet[UsageRecord]:
    rows = UsageRecord.objects.filter(account=account).select_related("key")
    if filters.key:
        rows = rows.filter(key__public_id=filters.key)
    if filters.model:
        rows = rows.filter(model=filters.model)
    if filters.capability:
        rows = rows.filter(capability=filters.capability)
    if filters.since:
        rows = rows.filter(created_at__date__gte=filters.since)
    if filters.until:
        rows = rows.filter(created_at__date__lte=filters.until)
    return rows.order_by("-created_at")


@dataclass
class Bar:
    x: int
    y: int
    height: int
    color: str
    title: str


@dataclass
class Chart:
    width: int
    height: int
    bars: list[Bar]
    days: list[tuple[int, str]]
    legend: list[tuple[str, str]]
    max_nano: int


def daily_spend_chart(rows: QuerySet[UsageRecord], days: int = 30, today: date | None = None) -> Chart:
    """A stacked bar per day, one colour per model, as plain SVG geometry for the template."""
    from infrai.lib.money import display_usd

    end = today or date.today()
    start = end - timedelta(days=days - 1)
    per_day: dict[date, dict[str, int]] = defaultdict(dict)
    totals = (
        rows.filter(created_at__date__gte=start, created_at__date__lte=end)
        .annotate(day=TruncDate("created_at"))
        .values("day", "model")
        .annotate(cost=Sum("cost_nano"))
    )
    models: list[str] = []
    for row in totals:
        per_day[row["day"]][row["model"]] = row["cost"] or 0
        if row["model"] not in models:
            models.append(row["model"])
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(models))}
    max_nano = max((sum(v.values()) for v in per_day.values()), default=0)
    width, height, slot = days * 20, 120, 20
    bars: list[Bar] = []
    labels: list[tuple[int, str]] = []
    for i in range(days):
        day = start + timedelta(days=i)
        if i % 7 == 0 or i == days - 1:
            labels.append((i * slot + 2, day.strftime("%b %d")))
        y = height
        for model in sorted(per_day.get(day, {})):
            cost = per_day[day][model]
            h = max(1, round(cost * height / max_nano)) if max_nano and cost else 0
            y -= h
            bars.append(
                Bar(i * slot + 3, y, h, colors[model], f"{day:%Y-%m-%d} {model or 'unknown'}: {display_usd(cost)}")
            )
    return Chart(width, height, bars, labels, [(m or "unknown", colors[m]) for m in sorted(models)], max_nano)
