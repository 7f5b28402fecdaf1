"""The tables, as SQLAlchemy declarative models. One class per table; migrations live beside.

Adding a table: declare it here (on `Base`), then write its own migration in
migrations/versions/ (see migrations/README). Constraint names come from `NAMING_CONVENTION`, so a
migration names them the same way on SQLite and PostgreSQL and later ALTERs can find them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from callassist.store.types import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
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


# Call records (revision 0002) ---------------------------------------------------------------------
# Money is stored as integer nano-dollars: exact on SQLite and PostgreSQL alike (a token of cached
# mini audio costs 300 n$; transcription ~75,000 n$ per second).


class ContactRow(Base):
    """Someone the owner knows, by phone number: the assistant greets them by name."""

    __tablename__ = "contacts"

    phone: Mapped[str] = mapped_column(String, primary_key=True)  # E.164
    name: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)
    # Revision 0004: a VIP always rings the owner; a blocked number is refused politely, unanswered.
    vip: Mapped[bool] = mapped_column(default=False, server_default=false())
    blocked: Mapped[bool] = mapped_column(default=False, server_default=false())


class CallRow(Base):
    """One call the assistant answered, written when it starts and completed when it ends."""

    __tablename__ = "calls"

    call_sid: Mapped[str] = mapped_column(String, primary_key=True)
    stream_sid: Mapped[str | None] = mapped_column(String)
    caller_number: Mapped[str | None] = mapped_column(String, index=True)
    called_number: Mapped[str | None] = mapped_column(String)
    caller_name: Mapped[str | None] = mapped_column(Text)
    is_owner: Mapped[bool] = mapped_column(default=False, server_default=false())
    dial_status: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String)
    started_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    greeting_latency_ms: Mapped[int | None]
    reconnects: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    cost_nanousd: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    summary: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    follow_up: Mapped[bool | None]
    urgency: Mapped[str | None] = mapped_column(String(16))
    summary_json: Mapped[str | None] = mapped_column(Text)


class TranscriptEntryRow(Base):
    """Who said what, as heard: an interrupted assistant turn keeps only what the caller heard."""

    __tablename__ = "transcript_entries"
    __table_args__ = (
        CheckConstraint("role IN ('caller', 'assistant', 'system')", name="role"),
        UniqueConstraint("call_sid", "item_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(ForeignKey("calls.call_sid", ondelete="CASCADE"), index=True)
    item_id: Mapped[str | None] = mapped_column(String)
    response_id: Mapped[str | None] = mapped_column(String)
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    spoken_at: Mapped[datetime]
    interrupted: Mapped[bool] = mapped_column(default=False, server_default=false())
    heard_ms: Mapped[int | None]
    audio_ms: Mapped[int | None]
    latency_ms: Mapped[int | None]  # assistant turns: caller stopped speaking -> first audio sent


class CallSegmentRow(Base):
    """Who the caller was with, in order: `assistant`, `hold` (the owner being rung; `outcome` says
    how that ended: connected, declined, no-answer, busy, failed, caller-hung-up) and `owner` (put
    through; ended when Twilio reports the conference over). A call without a transfer has none."""

    __tablename__ = "call_segments"
    __table_args__ = (UniqueConstraint("call_sid", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(ForeignKey("calls.call_sid", ondelete="CASCADE"))
    seq: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32))


class ToolCallRow(Base):
    """A tool the model called: what it asked, what it got back, how long it took."""

    __tablename__ = "tool_calls"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(ForeignKey("calls.call_sid", ondelete="CASCADE"), index=True)
    call_id: Mapped[str] = mapped_column(String)
    name: Mapped[str] = mapped_column(String)
    arguments: Mapped[str] = mapped_column(Text)
    result: Mapped[str] = mapped_column(Text)
    ok: Mapped[bool]
    started_at: Mapped[datetime]
    duration_ms: Mapped[int]


class UsageRow(Base):
    """Tokens and cost of one model response, or the seconds of one transcribed caller turn."""

    __tablename__ = "usage_records"
    __table_args__ = (CheckConstraint("kind IN ('response', 'transcription')", name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(ForeignKey("calls.call_sid", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str | None] = mapped_column(String)  # response id or caller item id
    purpose: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str | None] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String)
    text_in: Mapped[int] = mapped_column(default=0)
    audio_in: Mapped[int] = mapped_column(default=0)
    cached_text: Mapped[int] = mapped_column(default=0)
    cached_audio: Mapped[int] = mapped_column(default=0)
    text_out: Mapped[int] = mapped_column(default=0)
    audio_out: Mapped[int] = mapped_column(default=0)
    seconds: Mapped[float | None]
    cost_nanousd: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class MessageRow(Base):
    """A message a caller left for the owner."""

    __tablename__ = "messages"
    __table_args__ = (CheckConstraint("urgency IN ('low', 'normal', 'high', 'urgent')", name="urgency"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    call_sid: Mapped[str | None] = mapped_column(
        ForeignKey("calls.call_sid", ondelete="SET NULL"), index=True
    )
    caller_number: Mapped[str | None] = mapped_column(String)
    caller_name: Mapped[str | None] = mapped_column(Text)
    callback_number: Mapped[str | None] = mapped_column(String)
    message: Mapped[str] = mapped_column(Text)
    urgency: Mapped[str] = mapped_column(String(16), default="normal", server_default="normal")
    created_at: Mapped[datetime] = mapped_column(default=utc_now, index=True)
    done_at: Mapped[datetime | None]  # when the owner marked it done (the dashboard's inbox)


class OutboxRow(Base):
    """A notice to the owner (SMS or e-mail), kept until delivered: nothing is lost if a channel is down.

    `dedupe_key` makes enqueueing idempotent; a worker claims a row by setting `locked_until`, and
    only a successful send marks it `sent`.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint("channel IN ('sms', 'email')", name="channel"),
        CheckConstraint("status IN ('pending', 'sent', 'failed')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String, unique=True)
    channel: Mapped[str] = mapped_column(String(8))
    sender: Mapped[str | None] = mapped_column(Text)  # SMS: the Twilio number to send from
    recipient: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    call_sid: Mapped[str | None] = mapped_column(String, index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(default=utc_now, index=True)
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    sent_at: Mapped[datetime | None]


# Stream admissions (revision 0003) ----------------------------------------------------------------


class StreamAdmissionRow(Base):
    """What Twilio's signed webhooks said about a call, and whether its one Media Stream was opened.

    The stream's identity (caller, attestation, called number, the owner's missed dial) is read from
    here, never from the stream itself; `stream_started_at` makes a CallSid's stream single-use,
    across restarts. Rows come only from signed webhooks (one per real call) and are kept like the
    call history, so a webhook replayed months later still finds its call spent.
    """

    __tablename__ = "stream_admissions"

    call_sid: Mapped[str] = mapped_column(String, primary_key=True)
    caller_number: Mapped[str | None] = mapped_column(String)  # Twilio's From, as signed
    called_number: Mapped[str | None] = mapped_column(String)  # Twilio's To
    stir_verstat: Mapped[str | None] = mapped_column(String(64))  # SHAKEN/STIR: TN-Validation-Passed-A...
    dial_status: Mapped[str | None] = mapped_column(String(32))  # the owner's DialCallStatus, if rung
    first_seen_at: Mapped[datetime] = mapped_column(default=utc_now)
    # The stream token's issue time (epoch seconds, as inside the token); None until one is issued.
    token_issued: Mapped[int | None] = mapped_column(BigInteger)
    stream_sid: Mapped[str | None] = mapped_column(String)
    stream_started_at: Mapped[datetime | None]
    # Revision 0004: the key the owner pressed on the screening whisper ("1" took the call), if any.
    owner_choice: Mapped[str | None] = mapped_column(String(8))


# Voicemails (revision 0005) ------------------------------------------------------------------------


class VoicemailRow(Base):
    """A message the caller left on Twilio's `<Record>` when the assistant couldn't answer, attached
    to the call by its CallSid. Filled in by Twilio's signed callbacks as they come: the `<Record
    action>` (URL, SID, duration, the key that ended it), the recording status callback and the
    transcription callback (text, when Twilio provides one). No foreign key: a call turned away
    before its record was written (all lines busy) still keeps its message."""

    __tablename__ = "voicemails"

    call_sid: Mapped[str] = mapped_column(String, primary_key=True)
    caller_number: Mapped[str | None] = mapped_column(String)  # Twilio's From, as signed
    called_number: Mapped[str | None] = mapped_column(String)
    recording_sid: Mapped[str | None] = mapped_column(String(64))
    recording_url: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[int | None]
    finished_on_key: Mapped[str | None] = mapped_column(String(8))
    recording_status: Mapped[str | None] = mapped_column(String(16))
    transcription_status: Mapped[str | None] = mapped_column(String(16))
    transcription: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utc_now, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)
