"""What the ring the owner confirms needs from the store: who a caller is to the owner (a contact's
name, VIP, blocked), the key the owner pressed on the whisper, and the record of a refused call.

The owner's choice is kept on the call's `stream_admissions` row (written by the signed webhooks of
the owner's own leg, keyed by the caller's CallSid), so `/voice/dial-result` believes a pressed 1,
never the dial status alone: a voicemail or a phone's screening bot answers too.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from callassist import caller_text
from callassist.store.contacts import normalize_phone
from callassist.store.db import Database
from callassist.store.models import CallRow, ContactRow, StreamAdmissionRow, utc_now

# The outcome of a call refused because its number is blocked (shown by `callassist calls`).
BLOCKED_OUTCOME = "blocked"
TOOK_IT = "1"  # the key that bridges the owner
_MAX_CHOICE = 8
_MAX_NUMBER = 64


@dataclass(frozen=True, slots=True)
class Standing:
    """Who a caller's number is to the owner."""

    name: str | None = None  # the contact's name, one clean line; never what a caller said
    vip: bool = False
    blocked: bool = False


async def standing(database: Database, number: str | None) -> Standing:
    """The contact behind `number` (E.164); nobody for a hidden or malformed number."""
    try:
        phone = normalize_phone(number or "")
    except ValueError:
        return Standing()
    async with database.session(read_only=True) as session:
        row = await session.get(ContactRow, phone)
        if row is None:
            return Standing()
        return Standing(caller_text.name(row.name), bool(row.vip), bool(row.blocked))


async def record_owner_choice(database: Database, call_sid: str, digits: str) -> None:
    """The key the owner pressed on the whisper for the caller's call `call_sid` (the first webhook,
    /voice/incoming, created its row)."""
    async with database.session() as session:
        insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
        # Normally there: but if the store failed /voice/incoming, a pressed 1 must still count.
        await session.execute(
            insert(StreamAdmissionRow)
            .values(call_sid=call_sid, first_seen_at=utc_now())
            .on_conflict_do_nothing(index_elements=[StreamAdmissionRow.call_sid])
        )
        await session.execute(
            update(StreamAdmissionRow)
            .where(StreamAdmissionRow.call_sid == call_sid)
            .values(owner_choice=digits[:_MAX_CHOICE] or None)
            .execution_options(synchronize_session=False)
        )


async def caller_number(database: Database, call_sid: str) -> str | None:
    """The caller's number as the call's signed /voice/incoming webhook gave it, if recorded."""
    return (await caller_identity(database, call_sid))[0]


async def caller_identity(database: Database, call_sid: str) -> tuple[str | None, bool]:
    """The caller's number as the signed /voice/incoming webhook gave it, and whether the carrier
    vouched for it (SHAKEN/STIR attestation A)."""
    async with database.session(read_only=True) as session:
        row = await session.get(StreamAdmissionRow, call_sid)
    if row is None:
        return None, False
    return row.caller_number, (row.stir_verstat or "").startswith("TN-Validation-Passed-A")


async def owner_choice(database: Database, call_sid: str) -> str | None:
    """What the owner pressed on the whisper for this call, if anything."""
    async with database.session(read_only=True) as session:
        row = await session.get(StreamAdmissionRow, call_sid)
        return row.owner_choice if row is not None else None


async def record_blocked_call(
    database: Database, call_sid: str, caller_number: str | None, called_number: str | None
) -> None:
    """A call refused because its number is blocked: one ended record, outcome "blocked". A replayed
    webhook finds it there (and, like any recorded call, never gets a stream token)."""
    now = utc_now()
    async with database.session() as session:
        insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
        await session.execute(
            insert(CallRow)
            .values(
                call_sid=call_sid,
                caller_number=(caller_number or None) and caller_number[:_MAX_NUMBER],
                called_number=(called_number or None) and called_number[:_MAX_NUMBER],
                started_at=now,
                ended_at=now,
                outcome=BLOCKED_OUTCOME,
            )
            .on_conflict_do_nothing(index_elements=[CallRow.call_sid])
        )
