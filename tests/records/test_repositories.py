"""The read side of the records, on SQLite and PostgreSQL: lists, one call in full, contacts, memory."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from callassist.dashboard.serialize import call_detail_json, calls_json, money
from callassist.store.contacts import ContactRepository, caller_memory, normalize_phone
from callassist.store.db import Database
from callassist.store.models import CallRow
from callassist.store.records import get_call, list_calls, list_messages, parse_json_text
from tests.records.seed import (
    ALEX,
    BOB,
    BOB_CALL,
    DETAILED,
    LIVE,
    NEWEST_FIRST,
    NY,
    OLDER,
    SUMMARY,
    TOTAL_NANOUSD,
)


async def test_calls_are_listed_newest_first_with_counts_and_cost(seeded: Database) -> None:
    async with seeded.session(read_only=True) as session:
        calls = await list_calls(session)
    assert [call.call_sid for call in calls] == NEWEST_FIRST
    by_sid = {call.call_sid: call for call in calls}

    detailed = by_sid[DETAILED]
    assert detailed.caller_name == "Alex Chen"  # not recorded on the call: the contact's name
    assert detailed.duration_s == 150.0
    assert detailed.cost_nanousd == TOTAL_NANOUSD
    assert detailed.cost_usd == Decimal("0.012345678")
    assert (detailed.summary, detailed.follow_up, detailed.urgency) == (SUMMARY, True, "normal")
    assert detailed.message_count == 1
    assert detailed.booking_count == 1  # the failed create_event and check_availability don't count

    assert by_sid[OLDER].caller_name == "Alex"  # the name recorded on the call wins
    assert by_sid[BOB_CALL].cost_usd == Decimal("0.0005")  # no usage rows: the call's own total
    assert by_sid[BOB_CALL].duration_s == 185.0
    assert by_sid[LIVE].ended_at is None and by_sid[LIVE].duration_s is None


async def test_calls_page_by_start_and_filter_by_caller(seeded: Database) -> None:
    async with seeded.session(read_only=True) as session:
        first = await list_calls(session, limit=2)
        second = await list_calls(session, limit=2, before=first[-1].started_at)
        third = await list_calls(session, limit=2, before=second[-1].started_at)
        from_bob = await list_calls(session, caller=BOB)
        from_nobody = await list_calls(session, caller="+15550000000")
    assert [call.call_sid for call in first + second + third] == NEWEST_FIRST
    assert [call.call_sid for call in from_bob] == [BOB_CALL]
    assert from_nobody == []
    page = calls_json(first, NY, limit=2)
    assert datetime.fromisoformat(page["next_before"]) == first[-1].started_at
    assert calls_json(third, NY, limit=2)["next_before"] is None


async def test_one_call_in_full(seeded: Database) -> None:
    async with seeded.session(read_only=True) as session:
        detail = await get_call(session, DETAILED)
        missing = await get_call(session, "CA" + "0" * 32)
    assert missing is None
    assert detail is not None
    assert detail.called_number == "+15559870000" and detail.model == "gpt-realtime-2.1"
    assert detail.details == {"summary": SUMMARY, "follow_up_needed": True}

    # Ordered by time, then by insertion for the two entries of the same instant.
    assert [(entry.role, entry.text[:14]) for entry in detail.transcript] == [
        ("assistant", "Hi, this is Da"),
        ("caller", "Hi, can you bo"),
        ("assistant", "Let me check W"),
        ("caller", "Actually, make"),
        ("system", "create_event: "),
        ("assistant", "You're booked "),
        ("assistant", "Anything else?"),
    ]
    interrupted = detail.transcript[2]
    assert interrupted.interrupted and interrupted.heard_ms == 1400 and interrupted.audio_ms == 5200

    assert [(tool.name, tool.ok) for tool in detail.tool_calls] == [
        ("check_availability", True),
        ("create_event", False),
        ("create_event", True),
    ]
    failed, booked = detail.tool_calls[1], detail.tool_calls[2]
    assert (failed.arguments, failed.result) == ("{not json", "timeout")  # not JSON: kept as text
    assert booked.arguments["start"] == "2026-11-25T14:30" and booked.result == {"booked": True, "id": "ev1"}
    assert booked.duration_ms == 120

    assert [usage.kind for usage in detail.usage] == ["response", "response", "transcription", "response"]
    assert detail.usage[2].seconds == 4.5 and detail.usage[3].purpose == "summary"
    assert detail.cost_usd == Decimal("0.012345678")
    assert [message.message for message in detail.messages] == ["Please bring the contract."]

    assert detail.latency.turns_ms == [700, 1020, 600]
    assert detail.latency.average_ms == 773.3
    assert detail.latency.p50_ms == 700
    assert detail.latency.max_ms == 1020
    assert detail.latency.greeting_ms == 850


async def test_detail_json_shape(seeded: Database) -> None:
    async with seeded.session(read_only=True) as session:
        detail = await get_call(session, DETAILED)
    assert detail is not None
    body = call_detail_json(detail, NY)
    assert body["started_at"] == "2026-11-24T10:00:00.000-05:00"
    assert body["cost_usd"] == "0.012346" and body["cost_usd_float"] == 0.012345678
    assert body["transcript"][2] == {
        "role": "assistant",
        "text": "Let me check Wednesday for",
        "at": "2026-11-24T10:00:07.000-05:00",
        "interrupted": True,
        "heard_ms": 1400,
        "audio_ms": 5200,
        "latency_ms": 700,
    }
    assert body["tool_calls"][0] == {
        "name": "check_availability",
        "arguments": {"date": "2026-11-25"},
        "result": {"free": ["14:30"]},
        "ok": True,
        "at": "2026-11-24T10:00:10.000-05:00",
        "duration_ms": 35,
    }
    assert body["latency"] == {
        "greeting_ms": 850,
        "turns_ms": [700, 1020, 600],
        "average_ms": 773.3,
        "p50_ms": 700,
        "max_ms": 1020,
    }


def test_stored_text_that_is_not_strict_json_stays_text() -> None:
    assert parse_json_text('{"ok": true}') == {"ok": True}
    assert parse_json_text("Request timed out") == "Request timed out"
    assert parse_json_text('{"delay": NaN}') == '{"delay": NaN}'  # JSON responses refuse NaN
    assert parse_json_text(None) is None


def test_money_is_rounded_for_show_and_exact_for_sums() -> None:
    assert money(12_345_678) == {
        "cost_usd": "0.012346",
        "cost_usd_float": 0.012345678,
        "cost_nanousd": 12_345_678,
    }
    assert money(0)["cost_usd"] == "0.000000"
    assert money(1_500_000_000)["cost_usd"] == "1.500000"


async def test_messages_newest_first(seeded: Database) -> None:
    async with seeded.session(read_only=True) as session:
        messages = await list_messages(session)
        newest = await list_messages(session, limit=1)
    assert [message.message for message in messages] == [
        "Please bring the contract.",
        "Invoice 42 is overdue.",
        "Call me back.",
    ]
    assert messages[0].callback_number == "+15551239999" and messages[0].urgency == "high"
    assert messages[2].call_sid is None
    assert newest == messages[:1]


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("+1 (555) 123-4567", "+15551234567"),
        ("+44 20.7946.0958", "+442079460958"),
        ("+33612345678", "+33612345678"),
    ],
)
def test_numbers_are_normalised(typed: str, expected: str) -> None:
    assert normalize_phone(typed) == expected


@pytest.mark.parametrize(
    ("typed", "complaint"),
    [
        ("555-123-4567", "and the country code"),
        ("+1 555 12", "8 to 15 digits"),
        ("+1234567890123456", "8 to 15 digits"),
        ("+1 555 CALL NOW", "8 to 15 digits"),
        ("  ", "empty"),
    ],
)
def test_bad_numbers_are_refused_readably(typed: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        normalize_phone(typed)


async def test_contacts_upsert_get_list_remove(database: Database) -> None:
    async with database.session() as session:
        contacts = ContactRepository(session)
        added = await contacts.upsert("+1 555 123 0000", "  Alex Chen ", "Prefers afternoons")
        await contacts.upsert("+447700900123", "bob Smith")
    assert (added.phone, added.name, added.note) == (ALEX, "Alex Chen", "Prefers afternoons")

    async with database.session() as session:
        contacts = ContactRepository(session)
        renamed = await contacts.upsert(ALEX, "Alex C.", note="")
        assert renamed.created_at == added.created_at and renamed.updated_at >= added.updated_at
        with pytest.raises(ValueError, match="name is empty"):
            await contacts.upsert(ALEX, " ")
        with pytest.raises(ValueError, match="country code"):
            await contacts.upsert("5551230000", "Alex")

    async with database.session(read_only=True) as session:
        contacts = ContactRepository(session)
        assert [(c.name, c.note) for c in await contacts.list()] == [("Alex C.", None), ("bob Smith", None)]
        found = await contacts.get("+1-555-123-0000")
        assert found is not None and found.name == "Alex C."
        assert await contacts.get("anonymous") is None

    async with database.session() as session:
        contacts = ContactRepository(session)
        assert await contacts.remove(ALEX) is True
        assert await contacts.remove(ALEX) is False
        assert [c.phone for c in await contacts.list()] == [BOB]


async def test_caller_memory_recalls_ended_summarised_calls(seeded: Database) -> None:
    async with seeded.session(read_only=True) as session:
        memory = await caller_memory(session, "+1 555-123-0000", calls=3, zone=NY)
        latest_only = await caller_memory(session, ALEX, calls=1, zone=NY)
        none_asked = await caller_memory(session, ALEX, calls=0, zone=NY)
        stranger = await caller_memory(session, "+15550009999", calls=3, zone=NY)
        hidden = await caller_memory(session, "anonymous", calls=3, zone=NY)
        no_number = await caller_memory(session, None, calls=3, zone=NY)
    # The live call and the one without a summary are left out.
    assert memory.past_calls == [
        f"Tue Nov 24: {SUMMARY} (follow-up needed)",
        "Fri Nov 20: Asked about opening hours",
    ]
    assert (memory.phone, memory.name, memory.note) == (ALEX, "Alex Chen", "Prefers afternoons")
    assert latest_only.past_calls == memory.past_calls[:1]
    assert none_asked.past_calls == [] and none_asked.name == "Alex Chen"
    assert not stranger.known and stranger.phone == "+15550009999"
    assert not hidden.known and not no_number.known and hidden.describe() == ""

    described = memory.describe()
    assert "Alex Chen" in described and "Prefers afternoons" in described
    assert f"- Tue Nov 24: {SUMMARY} (follow-up needed)" in described


async def test_caller_memory_dates_calls_in_the_owners_zone(database: Database) -> None:
    late = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)  # Friday evening in New York, Saturday in UTC
    async with database.session() as session:
        session.add(
            CallRow(
                call_sid="CA" + "f" * 32,
                caller_number=ALEX,
                started_at=late,
                ended_at=late.replace(minute=2),
                summary="  Wanted a quote ",
            )
        )
    async with database.session(read_only=True) as session:
        in_new_york = await caller_memory(session, ALEX, calls=3, zone=NY)
        in_utc = await caller_memory(session, ALEX, calls=3)
    assert in_new_york.past_calls == ["Fri Nov 20: Wanted a quote"]
    assert in_utc.past_calls == ["Sat Nov 21: Wanted a quote"]
    assert in_new_york.name is None and in_new_york.known
