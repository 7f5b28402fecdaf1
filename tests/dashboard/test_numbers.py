"""Numbers at a glance over the seeded records: per owner day, the shares, the percentiles."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

from callassist.dashboard.numbers import Day, bar_chart, charts, nearest_rank, numbers
from callassist.store.db import Database
from tests.records.seed import TOTAL_NANOUSD, seed

NY = ZoneInfo("America/New_York")


async def test_a_week_of_the_seeded_calls(database: Database) -> None:
    await seed(database)
    async with database.session(read_only=True) as session:
        figures = await numbers(session, NY, days=7, today=date(2026, 11, 24))
    by_day = {day.day: day for day in figures.days}
    assert len(figures.days) == 7 and figures.days[-1].day == date(2026, 11, 24)
    # Nov 24: the detailed call (150 s) and the one still in progress (no length yet).
    assert by_day[date(2026, 11, 24)].calls == 2
    assert by_day[date(2026, 11, 24)].seconds == 150
    assert by_day[date(2026, 11, 23)].calls == 1  # Bob, 12:00 UTC = 07:00 in New York
    assert by_day[date(2026, 11, 20)].calls == 1
    assert figures.calls == 5
    assert by_day[date(2026, 11, 24)].cost == Decimal(TOTAL_NANOUSD) / Decimal(1_000_000_000)
    assert (figures.with_message, figures.with_booking, figures.with_transfer) == (2, 1, 0)
    assert figures.share(figures.with_message) == "40%"
    assert sorted(by_day[date(2026, 11, 24)].latencies) == [600, 700, 1020]
    assert (figures.p50, figures.p95) == (700, 1020)
    assert len(charts(figures)) == 4


async def test_no_calls_no_division_by_zero(database: Database) -> None:
    async with database.session(read_only=True) as session:
        figures = await numbers(session, NY, days=30, today=date(2026, 1, 1))
    assert figures.calls == 0 and figures.cost_per_call is None and figures.p50 is None
    assert figures.share(0) == "–"
    assert all(bar.height == 0 for chart in charts(figures) for bar in chart.bars)


def test_percentiles_and_bars() -> None:
    assert nearest_rank([], 0.5) is None
    assert nearest_rank([300, 100, 200], 0.5) == 200
    assert nearest_rank(list(range(1, 101)), 0.95) == 95
    days = [Day(date(2026, 11, n)) for n in (1, 2)]
    chart = bar_chart("t", days, [1.0, 4.0], ["one", "four"])
    assert [bar.height for bar in chart.bars] == [35.0, 140.0]
    assert chart.bars[1].y == 0 and chart.bars[0].title == "Sun 01 Nov: one"
