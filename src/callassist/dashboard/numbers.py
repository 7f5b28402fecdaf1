"""Numbers at a glance: calls, minutes and cost per day, turn latency p50/p95 per day, and what
calls ended in (a message, a booking, a transfer), over the last N days; with the small SVG bar
charts the page draws from them (geometry here, markup in the template, no script).

Two queries for the whole period (calls with their flags and cost; assistant turn latencies), then
grouping by the owner's day in Python: a year of calls is ~10,000 rows at most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.store.models import CallRow, MessageRow, ToolCallRow, TranscriptEntryRow, UsageRow
from callassist.store.records import BOOKING_TOOLS, usd

# A year of days would read every turn of the year (~90,000 rows at 10,000 calls): ~0.5 s.
PERIODS = (7, 30, 90)
TRANSFER_TOOLS = ("transfer_to_owner",)


def nearest_rank(values: list[int], share: float) -> int | None:
    """The nearest-rank percentile: always a value some turn really had."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class Day:
    day: date
    calls: int = 0
    seconds: float = 0.0
    cost: Decimal = Decimal(0)
    latencies: list[int] = field(default_factory=list)

    @property
    def minutes(self) -> float:
        return round(self.seconds / 60, 1)

    @property
    def p50(self) -> int | None:
        return nearest_rank(self.latencies, 0.5)

    @property
    def p95(self) -> int | None:
        return nearest_rank(self.latencies, 0.95)


@dataclass
class Numbers:
    days: list[Day]
    calls: int
    minutes: float
    cost: Decimal
    with_message: int
    with_booking: int
    with_transfer: int
    p50: int | None
    p95: int | None

    @property
    def cost_per_call(self) -> Decimal | None:
        return self.cost / self.calls if self.calls else None

    def share(self, count: int) -> str:
        return f"{100 * count / self.calls:.0f}%" if self.calls else "–"


async def numbers(session: AsyncSession, zone: ZoneInfo, days: int, today: date | None = None) -> Numbers:
    today = today or datetime.now(zone).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, time(0), tzinfo=zone).astimezone(UTC)
    usage_cost = (
        select(func.sum(UsageRow.cost_nanousd)).where(UsageRow.call_sid == CallRow.call_sid).scalar_subquery()
    )
    has_message = exists().where(MessageRow.call_sid == CallRow.call_sid)
    has_booking = exists().where(
        ToolCallRow.call_sid == CallRow.call_sid,
        ToolCallRow.ok.is_(True),
        ToolCallRow.name.in_(BOOKING_TOOLS),
    )
    has_transfer = exists().where(
        ToolCallRow.call_sid == CallRow.call_sid,
        ToolCallRow.ok.is_(True),
        ToolCallRow.name.in_(TRANSFER_TOOLS),
    )
    rows = await session.execute(
        select(
            CallRow.call_sid,
            CallRow.started_at,
            CallRow.ended_at,
            CallRow.cost_nanousd,
            usage_cost,
            has_message,
            has_booking,
            has_transfer,
        ).where(CallRow.started_at >= since)
    )
    by_day = {first + timedelta(days=n): Day(first + timedelta(days=n)) for n in range(days)}
    messages = bookings = transfers = 0
    day_of_call: dict[str, Day] = {}
    for call_sid, started, ended, call_cost, summed, message, booking, transfer in rows:
        day = by_day.get(_as_utc(started).astimezone(zone).date())
        if day is None:
            continue
        day_of_call[call_sid] = day
        day.calls += 1
        if ended is not None:
            day.seconds += max(0.0, (_as_utc(ended) - _as_utc(started)).total_seconds())
        day.cost += usd(int(summed) if summed is not None else call_cost)
        messages += bool(message)
        bookings += bool(booking)
        transfers += bool(transfer)
    # By the period's calls (their index), never a scan of every transcript line ever kept. A turn
    # counts on its call's day (the day the caller rang).
    period_calls = select(CallRow.call_sid).where(CallRow.started_at >= since)
    latencies = await session.execute(
        select(TranscriptEntryRow.call_sid, TranscriptEntryRow.latency_ms).where(
            TranscriptEntryRow.call_sid.in_(period_calls),
            TranscriptEntryRow.role == "assistant",
            TranscriptEntryRow.latency_ms.is_not(None),
        )
    )
    every: list[int] = []
    for call_sid, latency in latencies:
        day = day_of_call.get(call_sid)
        if day is not None and latency is not None:
            day.latencies.append(latency)
            every.append(latency)
    listed = list(by_day.values())
    return Numbers(
        days=listed,
        calls=sum(day.calls for day in listed),
        minutes=round(sum(day.seconds for day in listed) / 60, 1),
        cost=sum((day.cost for day in listed), Decimal(0)),
        with_message=messages,
        with_booking=bookings,
        with_transfer=transfers,
        p50=nearest_rank(every, 0.5),
        p95=nearest_rank(every, 0.95),
    )


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored as UTC).
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# Charts ------------------------------------------------------------------------------------------

CHART_WIDTH = 600
CHART_HEIGHT = 140


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str  # what a screen reader and a hover say: "Tue 24 Nov: 3 calls"
    second_y: float | None = None  # a marker on the bar (the p95 over the p50)


@dataclass(frozen=True)
class Chart:
    title: str
    bars: list[Bar]
    maximum: str
    labels: list[tuple[float, str]]  # (percent from the left, text) under the bars, a few only
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT


def bar_chart(
    title: str,
    days: list[Day],
    values: list[float],
    describe: list[str],
    unit: str = "",
    markers: list[float | None] | None = None,
    prefix: str = "",
) -> Chart:
    """Bars of `values` per day, scaled to the largest (or the largest marker), with titles."""
    top = max([*values, *(m for m in markers or [] if m is not None), 0.0]) or 1.0
    step = CHART_WIDTH / max(1, len(values))
    gap = min(2.0, step / 4)
    bars: list[Bar] = []
    for index, (day, value, text) in enumerate(zip(days, values, describe, strict=True)):
        height = CHART_HEIGHT * value / top
        marker = markers[index] if markers else None
        bars.append(
            Bar(
                x=round(index * step + gap / 2, 2),
                y=round(CHART_HEIGHT - height, 2),
                width=round(step - gap, 2),
                height=round(height, 2),
                title=f"{day.day.strftime('%a %d %b')}: {text}",
                second_y=round(CHART_HEIGHT - CHART_HEIGHT * marker / top, 2) if marker is not None else None,
            )
        )
    every = max(1, len(days) // 6)
    labels = [
        (round(index * step + step / 2, 2), day.day.strftime("%d %b"))
        for index, day in enumerate(days)
        if index % every == 0
    ]
    return Chart(title, bars, f"{prefix}{top:g}{unit}", labels)


def charts(figures: Numbers) -> list[Chart]:
    days = figures.days
    return [
        bar_chart("Calls per day", days, [d.calls for d in days], [f"{d.calls} calls" for d in days]),
        bar_chart(
            "Minutes per day", days, [d.minutes for d in days], [f"{d.minutes} min" for d in days], " min"
        ),
        bar_chart(
            "Cost per day",
            days,
            [float(d.cost) for d in days],
            [f"${d.cost:.2f}" for d in days],
            prefix="$",
        ),
        bar_chart(
            "Turn latency per day (bar: median; mark: 95th percentile)",
            days,
            [float(d.p50 or 0) for d in days],
            [f"median {d.p50} ms, p95 {d.p95} ms" if d.p50 is not None else "no turns" for d in days],
            " ms",
            markers=[float(d.p95) if d.p95 is not None else None for d in days],
        ),
    ]
