"""One realistic set of call records, written through the ORM models the recorder uses.

Alex (a contact) called four times: an old call, one without a summary, the detailed one with an
interrupted assistant turn, tool calls, usage and a message, and one still in progress. Bob left a
message about an invoice; one more message has no call. The owner was told about the detailed
call by SMS (sent) and by e-mail (failed: the server refused it); the SMS about Bob's call is still
being retried; an e-mail about Carol's message (no call) failed at once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from callassist.store.db import Database
from callassist.store.models import (
    CallRow,
    ContactRow,
    MessageRow,
    OutboxRow,
    ToolCallRow,
    TranscriptEntryRow,
    UsageRow,
)

NY = ZoneInfo("America/New_York")
ALEX = "+15551230000"
BOB = "+447700900123"
DETAILED = "CA" + "a" * 32
OLDER = "CA" + "b" * 32
NO_SUMMARY = "CA" + "c" * 32
LIVE = "CA" + "d" * 32
BOB_CALL = "CA" + "e" * 32
NEWEST_FIRST = [LIVE, DETAILED, BOB_CALL, NO_SUMMARY, OLDER]

START = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tue Nov 24, 10:00 in New York
# 1,234,567 + 10,000,000 + 345 + 1,110,766 nano-dollars: $0.012345678
USAGE_COSTS = [1_234_567, 10_000_000, 345, 1_110_766]
TOTAL_NANOUSD = sum(USAGE_COSTS)
SUMMARY = "Asked to book a meeting; booked Wed 25th 2:30 pm"


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def call_rows() -> list[CallRow]:
    return [
        CallRow(
            call_sid=DETAILED,
            stream_sid="MZ" + "a" * 32,
            caller_number=ALEX,
            called_number="+15559870000",
            caller_name=None,  # the contact's name fills in
            model="gpt-realtime-2.1",
            started_at=START,
            ended_at=at(150),
            outcome="caller-hung-up",
            dial_status="no-answer",
            greeting_latency_ms=850,
            cost_nanousd=TOTAL_NANOUSD,
            summary=SUMMARY,
            reason="booking",
            follow_up=True,
            urgency="normal",
            summary_json=json.dumps({"summary": SUMMARY, "follow_up_needed": True}),
        ),
        CallRow(
            call_sid=OLDER,
            caller_number=ALEX,
            caller_name="Alex",
            started_at=datetime(2026, 11, 20, 14, 0, tzinfo=UTC),
            ended_at=datetime(2026, 11, 20, 14, 1, tzinfo=UTC),
            outcome="caller-hung-up",
            summary="Asked about opening hours",
            follow_up=False,
        ),
        CallRow(
            call_sid=NO_SUMMARY,
            caller_number=ALEX,
            started_at=datetime(2026, 11, 22, 14, 0, tzinfo=UTC),
            ended_at=datetime(2026, 11, 22, 14, 0, 20, tzinfo=UTC),
            outcome="error",
        ),
        CallRow(call_sid=LIVE, caller_number=ALEX, started_at=at(3600)),
        CallRow(
            call_sid=BOB_CALL,
            caller_number=BOB,
            caller_name="Bob Smith",
            started_at=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
            ended_at=datetime(2026, 11, 23, 12, 3, 5, tzinfo=UTC),
            outcome="caller-hung-up",
            cost_nanousd=500_000,  # no usage rows: the call's own total is the cost
            summary="Left a message about the invoice",
            follow_up=True,
            urgency="high",
        ),
    ]


def transcript_rows() -> list[TranscriptEntryRow]:
    def entry(seconds: float, role: str, text: str, **extra: object) -> TranscriptEntryRow:
        return TranscriptEntryRow(call_sid=DETAILED, role=role, text=text, spoken_at=at(seconds), **extra)

    # Inserted out of time order: the reader must order by spoken_at, then by id.
    return [
        entry(1, "assistant", "Hi, this is Dana's assistant. How can I help?", audio_ms=2600, heard_ms=2600),
        entry(
            7,
            "assistant",
            "Let me check Wednesday for",
            interrupted=True,
            heard_ms=1400,
            audio_ms=5200,
            latency_ms=700,
        ),
        entry(5, "caller", "Hi, can you book me a meeting on Wednesday at 2 pm? [urgent]"),
        entry(9, "caller", "Actually, make it 2:30."),
        entry(12.5, "system", "create_event: booked"),
        entry(
            12.5,
            "assistant",
            "You're booked for Wednesday at 2:30 pm.",
            audio_ms=2400,
            heard_ms=2400,
            latency_ms=1020,
        ),
        entry(20, "assistant", "Anything else?", audio_ms=900, heard_ms=900, latency_ms=600),
    ]


def tool_rows() -> list[ToolCallRow]:
    arguments = {"start": "2026-11-25T14:30", "duration_minutes": 30, "caller_name": "Alex Chen"}
    return [
        ToolCallRow(
            call_sid=DETAILED,
            call_id="call_1",
            name="check_availability",
            arguments=json.dumps({"date": "2026-11-25"}),
            result=json.dumps({"free": ["14:30"]}),
            ok=True,
            started_at=at(10),
            duration_ms=35,
        ),
        ToolCallRow(
            call_sid=DETAILED,
            call_id="call_2",
            name="create_event",
            arguments="{not json",
            result="timeout",
            ok=False,
            started_at=at(11),
            duration_ms=8000,
        ),
        ToolCallRow(
            call_sid=DETAILED,
            call_id="call_3",
            name="create_event",
            arguments=json.dumps(arguments),
            result=json.dumps({"booked": True, "id": "ev1"}),
            ok=True,
            started_at=at(12),
            duration_ms=120,
        ),
    ]


def usage_rows() -> list[UsageRow]:
    kinds = ["response", "response", "transcription", "response"]
    return [
        UsageRow(
            call_sid=DETAILED,
            kind=kind,
            ref=f"ref_{index}",
            model="gpt-realtime-2.1",
            purpose="summary" if index == 3 else None,
            status="completed",
            text_in=100 * index,
            audio_in=50,
            cached_text=10,
            cached_audio=0,
            text_out=20,
            audio_out=300,
            seconds=4.5 if kind == "transcription" else None,
            cost_nanousd=cost,
            created_at=at(5 + index),
        )
        for index, (kind, cost) in enumerate(zip(kinds, USAGE_COSTS, strict=True))
    ]


def message_rows() -> list[MessageRow]:
    return [
        MessageRow(
            call_sid=DETAILED,
            caller_number=ALEX,
            caller_name="Alex Chen",
            callback_number="+15551239999",
            message="Please bring the contract.",
            urgency="high",
            created_at=at(60),
        ),
        MessageRow(
            call_sid=BOB_CALL,
            caller_number=BOB,
            caller_name="Bob Smith",
            callback_number=None,
            message="Invoice 42 is overdue.",
            created_at=datetime(2026, 11, 23, 12, 2, tzinfo=UTC),
        ),
        MessageRow(
            call_sid=None,
            caller_number=None,
            caller_name="Carol",
            callback_number="+15550001111",
            message="Call me back.",
            urgency="low",
            created_at=datetime(2026, 11, 21, 9, tzinfo=UTC),
        ),
    ]


OWNER_PHONE = "+15550002222"
OWNER_EMAIL = "dana@example.com"
# In every notice's body, which is never shown by the records (only what became of the notice is).
NOTICE_BODY_MARK = "BODY-OF-THE-NOTICE"
SMTP_REFUSAL = "mail.example.com: 554 5.7.1 [message rejected] as spam"
TWILIO_REFUSAL = "Twilio refused the SMS: HTTP 503, error None: Service Unavailable"
BAD_ADDRESS = "'dana@' is not an e-mail address"
# (call_sid, channel, status) of the seeded notices, newest first (the two about the detailed call
# were created together: the one inserted later comes first).
NOTICES_NEWEST_FIRST = [
    (DETAILED, "email", "failed"),
    (DETAILED, "sms", "sent"),
    (BOB_CALL, "sms", "pending"),
    (None, "email", "failed"),
]


def notice_rows() -> list[OutboxRow]:
    bob_ended = datetime(2026, 11, 23, 12, 3, 5, tzinfo=UTC)
    carol_left = datetime(2026, 11, 21, 9, 0, 30, tzinfo=UTC)

    def notice(key: str, **fields: object) -> OutboxRow:
        return OutboxRow(dedupe_key=key, body=f"{NOTICE_BODY_MARK}: {key}", **fields)

    return [
        notice(
            "call-summary:sms:" + DETAILED,
            call_sid=DETAILED,
            channel="sms",
            sender="+15559870000",
            recipient=OWNER_PHONE,
            status="sent",
            attempts=1,
            created_at=at(151),
            next_attempt_at=at(151),
            sent_at=at(152),
        ),
        notice(
            "call-summary:email:" + DETAILED,
            call_sid=DETAILED,
            channel="email",
            recipient=OWNER_EMAIL,
            subject="Call from Alex Chen (+15551230000)",
            status="failed",
            attempts=3,
            last_error=SMTP_REFUSAL,
            created_at=at(151),
            next_attempt_at=at(171),
        ),
        notice(
            "call-summary:sms:" + BOB_CALL,
            call_sid=BOB_CALL,
            channel="sms",
            sender="+15559870000",
            recipient=OWNER_PHONE,
            status="pending",
            attempts=2,
            last_error=TWILIO_REFUSAL,
            created_at=bob_ended,
            next_attempt_at=bob_ended + timedelta(seconds=20),
        ),
        notice(
            "message:email:carol",
            call_sid=None,
            channel="email",
            recipient="dana@",
            subject="Message from Carol",
            status="failed",
            attempts=1,
            last_error=BAD_ADDRESS,
            created_at=carol_left,
            next_attempt_at=carol_left,
        ),
    ]


async def seed(database: Database) -> None:
    """Write the whole set (the database must be migrated)."""
    async with database.session() as session:
        session.add(
            ContactRow(
                phone=ALEX, name="Alex Chen", note="Prefers afternoons", created_at=START, updated_at=START
            )
        )
        session.add_all(call_rows())
        await session.flush()
        # One at a time: the ids must follow this (deliberately unsorted) order.
        for row in transcript_rows():
            session.add(row)
            await session.flush()
        session.add_all([*tool_rows(), *usage_rows(), *message_rows()])
        # One at a time, like the transcript: the ids follow this order.
        for row in notice_rows():
            session.add(row)
            await session.flush()
