"""Column types shared by every table: instants are stored in UTC and come back timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[datetime]):
    """An instant in time: aware datetimes in, aware UTC datetimes out.

    PostgreSQL stores it as timestamptz. SQLite has no time zones, so it stores naive UTC text whose
    lexical order is its time order (range queries and indexes stay correct). A naive datetime is
    refused rather than guessed at: "09:00" without a zone is a different instant for every caller.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(DateTime(timezone=_keeps_offsets(dialect)))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"UTCDateTime needs a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: give it a time zone")
        in_utc = value.astimezone(UTC)
        return in_utc if _keeps_offsets(dialect) else in_utc.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _keeps_offsets(dialect: Dialect) -> bool:
    return dialect.name == "postgresql"
