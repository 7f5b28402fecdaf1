"""The tables, as SQLAlchemy declarative models. One class per table; migrations live beside.

Adding a table: declare it here (on `Base`), then write its own migration in
migrations/versions/ (see migrations/README). Constraint names come from `NAMING_CONVENTION`, so a
migration names them the same way on SQLite and PostgreSQL and later ALTERs can find them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, MetaData, String, Text, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from callassist.store.types import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Every `Mapped[datetime]` is an instant: aware in, aware UTC out, naive refused. (A plain
    # class attribute is what SQLAlchemy reads, hence no ClassVar.)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012


class EventStatus(StrEnum):
    confirmed = "confirmed"
    cancelled = "cancelled"


class CalendarEventRow(Base):
    """An event of the local calendar. Cancelling keeps the row: history is never deleted."""

    __tablename__ = "calendar_events"
    __table_args__ = (
        CheckConstraint("status IN ('confirmed', 'cancelled')", name="status"),
        CheckConstraint('"end" > start', name="end_after_start"),
    )

    # The iCalendar UID, so an event can be exported to or matched with CalDAV unchanged.
    id: Mapped[str] = mapped_column(String, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    start: Mapped[datetime] = mapped_column(index=True)
    end: Mapped[datetime] = mapped_column(index=True)
    all_day: Mapped[bool] = mapped_column(default=False, server_default=false())
    caller_number: Mapped[str | None] = mapped_column(String, index=True)
    caller_name: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(
        String(16), default=EventStatus.confirmed.value, server_default=EventStatus.confirmed.value
    )
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)
    cancelled_at: Mapped[datetime | None]
    # iCalendar SEQUENCE: bumped on every change so a CalDAV client knows which copy is newer.
    sequence: Mapped[int] = mapped_column(default=0, server_default=text("0"))

    def __repr__(self) -> str:
        return f"CalendarEventRow(id={self.id!r}, start={self.start!r}, status={self.status!r})"
