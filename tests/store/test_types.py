"""UTCDateTime: aware instants in, the same instants out as aware UTC, naive refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import StatementError

from callassist.store.db import Database
from callassist.store.models import CalendarEventRow
from callassist.store.types import UTCDateTime

KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30: a half-hour offset catches hour-only arithmetic
LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def test_bind_converts_to_utc_naive_on_sqlite_aware_on_postgresql() -> None:
    column = UTCDateTime()
    value = datetime(2026, 7, 1, 9, 30, 15, 123456, tzinfo=KOLKATA)
    assert column.process_bind_param(value, sqlite.dialect()) == datetime(2026, 7, 1, 4, 0, 15, 123456)
    on_postgres = column.process_bind_param(value, postgresql.dialect())
    assert on_postgres == value
    assert on_postgres is not None and on_postgres.tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(datetime(2026, 7, 1, 9, 0), sqlite.dialect())


def test_results_are_aware_utc() -> None:
    column = UTCDateTime()
    assert column.process_result_value(datetime(2026, 1, 1, 12), sqlite.dialect()) == datetime(
        2026, 1, 1, 12, tzinfo=UTC
    )
    offset = datetime(2026, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))
    back = column.process_result_value(offset, postgresql.dialect())
    assert back == offset
    assert back is not None and back.tzinfo is UTC


def _row(event_id: str, start: datetime, end: datetime) -> CalendarEventRow:
    return CalendarEventRow(id=event_id, title="round trip", start=start, end=end)


async def test_round_trip_across_zones(database: Database) -> None:
    start = datetime(2026, 3, 29, 1, 59, 59, 999999, tzinfo=KOLKATA)
    end = datetime(2026, 3, 28, 21, 0, tzinfo=LOS_ANGELES)
    async with database.session() as session:
        session.add(_row("zones@test", start, end))
    async with database.session(read_only=True) as session:
        row = await session.get_one(CalendarEventRow, "zones@test")
        stored = await session.scalar(text("SELECT start FROM calendar_events WHERE id = 'zones@test'"))
    assert (row.start, row.end) == (start, end)  # the same instants...
    assert row.start.tzinfo is UTC and row.end.tzinfo is UTC  # ...told in UTC
    assert row.created_at.tzinfo is UTC
    if database.dialect_name == "sqlite":
        # Stored as UTC wall time, so text order is time order.
        assert str(stored).startswith("2026-03-28 20:29:59.999999")


async def test_queries_compare_instants_not_wall_times(database: Database) -> None:
    start = datetime(2026, 6, 1, 8, 0, tzinfo=LOS_ANGELES)  # 15:00Z
    async with database.session() as session:
        session.add(_row("la@test", start, start + timedelta(hours=1)))
    async with database.session(read_only=True) as session:
        # 15:30 UTC given in Kolkata time (21:00 local) must still fall inside the event.
        probe = datetime(2026, 6, 1, 21, 0, tzinfo=KOLKATA)
        found = await session.scalars(
            select(CalendarEventRow.id).where(CalendarEventRow.start <= probe, CalendarEventRow.end > probe)
        )
        assert list(found) == ["la@test"]


async def test_naive_datetime_refused_by_the_database_layer(database: Database) -> None:
    with pytest.raises(StatementError, match="naive"):
        async with database.session() as session:
            session.add(_row("naive@test", datetime(2026, 1, 1, 9), datetime(2026, 1, 1, 10)))
    with pytest.raises(StatementError, match="naive"):
        async with database.session(read_only=True) as session:
            await session.scalars(
                select(CalendarEventRow).where(CalendarEventRow.start > datetime(2026, 1, 1))
            )
