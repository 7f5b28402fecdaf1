"""Reads and writes of calendar_events inside a session the caller owns (and so its transaction).

Every write is one UPDATE ... RETURNING or INSERT, so two writers can't lose each other's change
(SEQUENCE is bumped in SQL, not read and rewritten) on either SQLite or PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.calendar.base import CalendarEvent, NewEvent
from callassist.store.models import CalendarEventRow, EventStatus, utc_now

UID_DOMAIN = "callassist"


def new_event_uid() -> str:
    """A globally unique iCalendar UID (RFC 5545 suggests the form <unique>@<domain>)."""
    return f"{uuid.uuid4()}@{UID_DOMAIN}"


def to_calendar_event(row: CalendarEventRow) -> CalendarEvent:
    return CalendarEvent(
        id=row.id,
        title=row.title,
        # A row just added still holds the caller's own datetimes; hand back UTC like a loaded one.
        start=row.start.astimezone(UTC),
        end=row.end.astimezone(UTC),
        all_day=row.all_day,
        caller_number=row.caller_number,
        caller_name=row.caller_name,
        notes=row.notes,
        created_at=row.created_at.astimezone(UTC),
    )


class CalendarEventRepository:
    """calendar_events queries. Cancelled rows are only visible through `get_any`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def overlapping(
        self, start: datetime, end: datetime, *, caller_number: str | None = None
    ) -> list[CalendarEventRow]:
        """Confirmed events overlapping [start, end) (optionally only one caller's), by start."""
        # In UTC: datetimes sharing a tzinfo compare by wall time, wrong across a DST change.
        if end.astimezone(UTC) <= start.astimezone(UTC):
            # [t, t) is empty; the SQL below would instead find the events covering instant t.
            return []
        query = _confirmed().where(CalendarEventRow.start < end, CalendarEventRow.end > start)
        if caller_number is not None:
            query = query.where(CalendarEventRow.caller_number == caller_number)
        query = query.order_by(CalendarEventRow.start, CalendarEventRow.end, CalendarEventRow.id)
        return list(await self.session.scalars(query))

    async def get(self, event_id: str) -> CalendarEventRow | None:
        """The confirmed event with this id, or None."""
        return await self.session.scalar(_confirmed().where(CalendarEventRow.id == event_id))

    async def get_any(self, event_id: str) -> CalendarEventRow | None:
        """The event with this id whatever its status (history, dashboards)."""
        return await self.session.get(CalendarEventRow, event_id)

    async def add(
        self, event: NewEvent, *, event_id: str | None = None, all_day: bool = False
    ) -> CalendarEventRow:
        now = utc_now()
        row = CalendarEventRow(
            id=event_id or new_event_uid(),
            title=event.title,
            start=event.start.astimezone(UTC),
            end=event.end.astimezone(UTC),
            all_day=all_day,
            caller_number=event.caller_number,
            caller_name=event.caller_name,
            notes=event.notes,
            status=EventStatus.confirmed.value,
            created_at=now,
            updated_at=now,
            sequence=0,
        )
        self.session.add(row)
        await self.session.flush()
        return row

    async def reschedule(
        self,
        event_id: str,
        *,
        start: datetime,
        end: datetime,
        title: str | None = None,
        notes: str | None = None,
    ) -> CalendarEventRow | None:
        """Move a confirmed event (title/notes unchanged when None); None if there is none."""
        changes: dict[str, object] = {"start": start, "end": end}
        if title is not None:
            changes["title"] = title
        if notes is not None:
            changes["notes"] = notes
        return await self._change_confirmed(event_id, changes)

    async def cancel(self, event_id: str) -> CalendarEventRow | None:
        """Mark a confirmed event cancelled (the row stays); None if there is none."""
        now = utc_now()
        return await self._change_confirmed(
            event_id, {"status": EventStatus.cancelled.value, "cancelled_at": now}, now=now
        )

    async def _change_confirmed(
        self, event_id: str, changes: dict[str, object], *, now: datetime | None = None
    ) -> CalendarEventRow | None:
        statement = (
            update(CalendarEventRow)
            .where(
                CalendarEventRow.id == event_id,
                CalendarEventRow.status == EventStatus.confirmed.value,
            )
            .values(
                **changes,
                updated_at=now or utc_now(),
                sequence=CalendarEventRow.sequence + 1,
            )
            .returning(CalendarEventRow)
            # Nothing else in this session holds the row; RETURNING hands back the fresh state.
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        return await self.session.scalar(statement)


def _confirmed() -> Select[CalendarEventRow]:
    return select(CalendarEventRow).where(CalendarEventRow.status == EventStatus.confirmed.value)
