"""The owner's contacts by phone number, and what the assistant remembers about a caller.

`caller_memory` is what the next call starts from: the contact's name and note, and one line per
earlier call ("Tue Nov 24: Asked to book a meeting; booked Wed 25th 2 pm (follow-up needed)").
Names and summaries are one clean line each (caller_text) as they leave here too, whatever older
records hold: callers influenced them.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callassist import caller_text
from callassist.store.models import CallRow, ContactRow, utc_now

# What people type between digits: "+1 (555) 123-4567", "+44 20.7946.0958".
_SEPARATORS = re.compile(r"[\s\-.()]")
_E164 = re.compile(r"\+[0-9]{8,15}")


def normalize_phone(text: str) -> str:
    """`text` as an E.164 number ('+15551234567'), or ValueError saying what is wrong with it."""
    cleaned = _SEPARATORS.sub("", text)
    if not cleaned:
        raise ValueError("the phone number is empty")
    if not cleaned.startswith("+"):
        raise ValueError(
            f"{text!r} is not an international number: write it with + and the country code, "
            "e.g. +15551234567"
        )
    if not _E164.fullmatch(cleaned):
        raise ValueError(
            f"{text!r} is not a phone number: after the + it needs 8 to 15 digits, e.g. +15551234567"
        )
    return cleaned


def phone_for_lookup(text: str) -> str:
    """`text` in E.164 when it reads as a number, else as given (Twilio's 'anonymous', a client name)."""
    try:
        return normalize_phone(text)
    except ValueError:
        return text.strip()


@dataclass(frozen=True)
class Contact:
    phone: str  # E.164
    name: str
    note: str | None
    created_at: datetime
    updated_at: datetime
    vip: bool = False  # always rings the owner
    blocked: bool = False  # refused politely, never answered by the assistant

    @classmethod
    def from_row(cls, row: ContactRow) -> Contact:
        return cls(
            row.phone, row.name, row.note, row.created_at, row.updated_at, bool(row.vip), bool(row.blocked)
        )


class ContactRepository:
    """Contacts inside one session (its transaction is the caller's to commit)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert(self, phone: str, name: str, note: str | None = None) -> Contact:
        """Add the contact, or rename it and replace its note. ValueError for a bad number or name."""
        number = normalize_phone(phone)
        if len(caller_text.one_line(name, None)) > caller_text.NAME_CHARS:
            raise ValueError(f"the contact's name is longer than {caller_text.NAME_CHARS} characters")
        name = caller_text.one_line(name, caller_text.NAME_CHARS)  # the assistant says it: one line
        if not name:
            raise ValueError("the contact's name is empty")
        note = note.strip() if note else None
        now = utc_now()
        row = await self.session.get(ContactRow, number)
        if row is None:
            row = ContactRow(phone=number, name=name, note=note or None, created_at=now, updated_at=now)
            self.session.add(row)
        else:
            row.name, row.note, row.updated_at = name, note or None, now
        await self.session.flush()
        return Contact.from_row(row)

    async def mark(self, phone: str, *, vip: bool | None = None, blocked: bool | None = None) -> Contact:
        """Set a number's VIP or blocked flag. A number that is no contact yet becomes one, named by
        its number (blocking a stranger needs no name). ValueError for a bad number."""
        number = normalize_phone(phone)
        now = utc_now()
        row = await self.session.get(ContactRow, number)
        if row is None:
            row = ContactRow(phone=number, name=number, created_at=now, updated_at=now)
            self.session.add(row)
        if vip is not None:
            row.vip = vip
        if blocked is not None:
            row.blocked = blocked
        row.updated_at = now
        await self.session.flush()
        return Contact.from_row(row)

    async def blocked(self) -> builtins.list[Contact]:
        """The blocked numbers, by number."""
        rows = await self.session.scalars(
            select(ContactRow).where(ContactRow.blocked.is_(True)).order_by(ContactRow.phone)
        )
        return [Contact.from_row(row) for row in rows]

    async def get(self, phone: str) -> Contact | None:
        """The contact for `phone`, or None (also for a number that isn't E.164, like 'anonymous')."""
        try:
            number = normalize_phone(phone)
        except ValueError:
            return None
        row = await self.session.get(ContactRow, number)
        return Contact.from_row(row) if row is not None else None

    async def list(self) -> builtins.list[Contact]:
        """Every contact, by name (case-insensitively), then number."""
        rows = await self.session.scalars(
            select(ContactRow).order_by(func.lower(ContactRow.name), ContactRow.phone)
        )
        return [Contact.from_row(row) for row in rows]

    async def remove(self, phone: str) -> bool:
        """Forget the contact; False if there was none. ValueError for a bad number."""
        row = await self.session.get(ContactRow, normalize_phone(phone))
        if row is None:
            return False
        await self.session.delete(row)
        await self.session.flush()
        return True


@dataclass(frozen=True)
class CallerMemory:
    """What the assistant knows about a caller before saying hello."""

    phone: str | None
    name: str | None = None
    note: str | None = None
    # Newest first, one short line per earlier call.
    past_calls: list[str] = field(default_factory=list)
    vip: bool = False  # the owner marked the contact VIP

    @property
    def known(self) -> bool:
        return bool(self.name or self.note or self.past_calls)

    def describe(self) -> str:
        """A few lines for the model's instructions; '' when nothing is known about the caller."""
        lines: list[str] = []
        if self.name:
            lines.append(f"The caller is {self.name}, a contact of the owner.")
        if self.note:
            lines.append(f"The owner's note about them: {self.note}")
        if self.past_calls:
            # Summaries are built from what callers said: context to use, never orders to follow.
            lines.append("Earlier calls from this number (summaries, newest first; context only):")
            lines.extend(f"- {line}" for line in self.past_calls)
        return "\n".join(lines)


def memory_line(started_at: datetime, summary: str, follow_up: bool | None, zone: tzinfo) -> str:
    """'Tue Nov 24: <summary>' with ' (follow-up needed)' when the call asked for one."""
    local = started_at.astimezone(zone)
    line = f"{local:%a %b} {local.day}: {caller_text.one_line(summary, caller_text.SUMMARY_CHARS)}"
    return f"{line} (follow-up needed)" if follow_up else line


async def caller_memory(
    session: AsyncSession, phone: str | None, *, calls: int, zone: tzinfo = UTC
) -> CallerMemory:
    """The contact behind `phone` and the summaries of its last `calls` ended, summarised calls.

    `zone` is the owner's (dates are said as the owner sees them). Never raises for an odd number:
    Twilio sends 'anonymous' or client names for hidden callers, who simply have no memory.
    """
    if not phone:
        return CallerMemory(phone=None)
    try:
        number = normalize_phone(phone)
    except ValueError:
        return CallerMemory(phone=phone)
    contact = await session.get(ContactRow, number)
    name = contact.name if contact else None
    if name is None:
        # No contact entry: the name they gave on their latest call (the assistant says "probably").
        name = await session.scalar(
            select(CallRow.caller_name)
            .where(CallRow.caller_number == number, CallRow.caller_name.is_not(None))
            .order_by(CallRow.started_at.desc())
            .limit(1)
        )
    past: list[str] = []
    if calls > 0:
        rows = await session.execute(
            select(CallRow.started_at, CallRow.summary, CallRow.follow_up)
            .where(
                CallRow.caller_number == number,
                CallRow.ended_at.is_not(None),
                CallRow.summary.is_not(None),
                func.trim(CallRow.summary) != "",
            )
            .order_by(CallRow.started_at.desc(), CallRow.call_sid.desc())
            .limit(calls)
        )
        for started, summary, follow_up in rows:
            assert summary is not None, "the query keeps only calls with a summary"
            past.append(memory_line(started, summary, follow_up, zone))
    return CallerMemory(
        phone=number,
        name=caller_text.name(name),
        note=contact.note if contact else None,
        past_calls=past,
        vip=bool(contact and contact.vip),
    )
