"""Voicemails in the store: one row per call, filled in by Twilio's callbacks in whatever order they
arrive (the `<Record action>`, the recording status callback, the transcription callback)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.store.models import VoicemailRow, utc_now


@dataclass(frozen=True, slots=True)
class Voicemail:
    call_sid: str
    caller_number: str | None
    recording_sid: str | None
    recording_url: str | None
    duration_s: int | None
    finished_on_key: str | None
    recording_status: str | None
    transcription_status: str | None
    transcription: str | None
    created_at: datetime


def _record(row: VoicemailRow) -> Voicemail:
    return Voicemail(
        call_sid=row.call_sid,
        caller_number=row.caller_number,
        recording_sid=row.recording_sid,
        recording_url=row.recording_url,
        duration_s=row.duration_s,
        finished_on_key=row.finished_on_key,
        recording_status=row.recording_status,
        transcription_status=row.transcription_status,
        transcription=row.transcription,
        created_at=row.created_at,
    )


async def save_voicemail(session: AsyncSession, call_sid: str, **values: Any) -> Voicemail:
    """Create the call's voicemail row if needed (a callback may come before the action), then set
    the given, non-None columns. Returns the row as it now stands."""
    now = utc_now()
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
        await session.execute(
            insert(VoicemailRow)
            .values(call_sid=call_sid, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=[VoicemailRow.call_sid])
        )
    elif await session.get(VoicemailRow, call_sid) is None:
        session.add(VoicemailRow(call_sid=call_sid, created_at=now, updated_at=now))
        await session.flush()
    changes = {name: value for name, value in values.items() if value is not None}
    if changes:
        await session.execute(
            update(VoicemailRow).where(VoicemailRow.call_sid == call_sid).values(**changes, updated_at=now)
        )
    row = await session.scalar(
        select(VoicemailRow)
        .where(VoicemailRow.call_sid == call_sid)
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return _record(row)


async def get_voicemail(session: AsyncSession, call_sid: str) -> Voicemail | None:
    row = await session.get(VoicemailRow, call_sid)
    return None if row is None else _record(row)
