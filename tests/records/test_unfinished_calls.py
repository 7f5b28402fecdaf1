"""At start-up, calls a killed process left open are closed and the owner is told what was done in
them: every message the caller was told was taken (from the messages table) and every booking."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from callassist.call.aftercall import close_unfinished_calls
from callassist.settings import Settings
from callassist.store.db import Database
from callassist.store.models import CallRow, MessageRow, OutboxRow, ToolCallRow

CALLER = "+15551230000"
STARTED = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


def settings() -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        timezone="America/New_York",
        smtp_url="smtp://127.0.0.1:9",
        notify_email="dana@example.com",
    )


async def test_a_message_committed_before_the_crash_is_in_the_notice_even_without_its_tool_record(
    tmp_path: Path,
) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'callassist.db'}")
    await database.upgrade()
    try:
        async with database.session() as session:
            session.add(CallRow(call_sid="CA1", caller_number=CALLER, started_at=STARTED))
            await session.flush()
            # Killed between the message's commit and its tool call's: only the message is there.
            session.add(
                MessageRow(
                    call_sid="CA1",
                    caller_number=CALLER,
                    caller_name="Alex Kim",
                    callback_number="+15559990000",
                    message="Please call me back about the contract.",
                    urgency="high",
                    created_at=STARTED + timedelta(seconds=30),
                )
            )
            # A booking recorded before the kill (its outcome is committed before the caller hears it).
            session.add(
                ToolCallRow(
                    call_sid="CA1",
                    call_id="call_1",
                    name="create_event",
                    arguments=json.dumps({"title": "Contract", "caller_name": "Alex Kim"}),
                    result=json.dumps(
                        {
                            "ok": True,
                            "event": {
                                "title": "Contract",
                                "spoken": "Wednesday at 2 pm",
                                "duration": "one hour",
                            },
                        }
                    ),
                    ok=True,
                    started_at=STARTED + timedelta(seconds=40),
                    duration_ms=20,
                )
            )
        assert await close_unfinished_calls(database, settings(), notify=True) == 1
        async with database.session(read_only=True) as session:
            call = await session.get(CallRow, "CA1")
            [notice] = list(await session.scalars(select(OutboxRow)))
    finally:
        await database.close()
    assert call is not None and call.outcome == "interrupted"
    assert notice.subject == "Urgent call from Alex Kim (+15551230000)"
    lines = notice.body.splitlines()
    assert lines[0].startswith("URGENT: Call from Alex Kim (+15551230000)")
    assert lines[1:] == [
        'Message (high): "Please call me back about the contract." Call back: +15559990000.',
        'Booked: Wednesday at 2 pm, one hour ("Contract").',
    ]
