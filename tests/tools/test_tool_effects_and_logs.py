"""Tools that change the world are recorded before the caller hears "done"; logs never carry what
callers said to a tool (card numbers, PINs), only the tool's name and how it ended."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, field_validator
from sqlalchemy import func, select

from callassist.calendar.booking import BookingService
from callassist.calendar.local import LocalCalendar
from callassist.calendar.timeutil import WorkingHours
from callassist.call.recorder import CallRecorder
from callassist.store import writer as recorder_module
from callassist.store.db import Database
from callassist.store.models import ToolCallRow
from callassist.store.writer import RecordWriter
from callassist.tools import all_tools
from callassist.tools.registry import ToolContext, ToolError, ToolOutcome, ToolRegistry
from callassist.tools.services import ToolServices
from tests.support.recording import start_call

CARD = "4111111111111111"
PIN = "7391"
CALLER = "+15551230000"
NY = ZoneInfo("America/New_York")


class Payment(BaseModel):
    card: str
    note: str = ""

    @field_validator("card")
    @classmethod
    def _card(cls, value: str) -> str:
        if not value.startswith("5"):
            raise ValueError(f"{value} is not a card we take")  # echoes the input, as validators do
        return value


class Thing(BaseModel):
    what: str


def leaky_registry() -> ToolRegistry:
    registry = ToolRegistry(default_timeout_s=0.5)

    @registry.tool()
    async def pay(ctx: ToolContext, args: Payment) -> dict[str, Any]:
        """Take a payment."""
        if args.note == "refuse":
            raise ToolError(f"Card {args.card} was declined (PIN {PIN} wrong).")
        if args.note == "crash":
            raise RuntimeError(f"gateway said no to {args.card} with PIN {PIN}")
        if args.note == "slow":
            await asyncio.Event().wait()  # until the registry's timeout
        return {"charged": True}

    return registry


def spoken_digit_runs(*texts: str) -> set[str]:
    """Every 4-digit window of every run of 4+ digits in what the caller said."""
    runs = [run for text in texts for run in re.findall(r"\d{4,}", text)]
    return {run[i : i + 4] for run in runs for i in range(len(run) - 3)}


@contextmanager
def logs_at_debug(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Ours at every level; other libraries' at INFO, as `serve` runs them (aiosqlite's DEBUG lines
    quote every statement's parameters: they are never on in production)."""
    with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, logger="callassist"):
        yield


def leaked(records: list[logging.LogRecord], secrets: set[str]) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    texts = [formatter.format(record) for record in records]  # with any traceback and stack
    return [text for text in texts if any(secret in text for secret in secrets)]


@pytest.fixture
async def recorder(database: Database) -> AsyncIterator[CallRecorder]:
    writer = RecordWriter(database)
    writer.start()
    recorder = CallRecorder(writer, "CA1", logger=logging.getLogger("callassist.call.test"))
    start_call(recorder, CALLER)
    try:
        yield recorder
    finally:
        await writer.stop()


async def tool_rows(database: Database) -> list[ToolCallRow]:
    async with database.session(read_only=True) as session:
        return list(await session.scalars(select(ToolCallRow).order_by(ToolCallRow.id)))


def booking_context(database: Database, recorder: CallRecorder, **extra: Any) -> ToolContext:
    """A caller's tool context with the local calendar bookable every day 09:00-17:00."""
    calendar = LocalCalendar(database)
    booking = BookingService(calendar, WorkingHours.parse("Mon-Sun 09:00-17:00"), NY)
    return ToolContext(
        call_sid="CA1",
        caller_number=CALLER,
        is_owner=False,
        services=ToolServices(owner_name="Dana", booking=booking),
        recorder=recorder,
        **extra,
    )


# Logs ---------------------------------------------------------------------------------------------


async def test_no_log_record_carries_digits_a_caller_gave_a_tool(caplog: pytest.LogCaptureFixture) -> None:
    registry = leaky_registry()
    ctx = ToolContext(call_sid="CA1", caller_number=CALLER, is_owner=False, services=None)
    calls = {
        "invalid arguments": {"card": CARD},  # the validator's message quotes the number
        "refused": {"card": "5" + CARD[1:], "note": "refuse"},  # so does the refusal
        "failed": {"card": "5" + CARD[1:], "note": "crash"},  # and the exception
        "timeout": {"card": "5" + CARD[1:], "note": "slow"},
        "ok": {"card": "5" + CARD[1:]},
    }
    outcomes: dict[str, ToolOutcome] = {}
    with logs_at_debug(caplog):
        for expected, arguments in calls.items():
            outcomes[expected] = await registry.call("pay", f"call_{expected}", json.dumps(arguments), ctx)
        await registry.call("pay", "call_bad_json", '{"card": "' + CARD, ctx)
        await registry.call(f"pay_{CARD}", "call_unknown", json.dumps({"card": CARD}), ctx)
    assert {name: outcome.status for name, outcome in outcomes.items()} == {name: name for name in calls}
    assert CARD in outcomes["invalid arguments"].output["error"]  # the model is still told why
    secrets = spoken_digit_runs(CARD, "5" + CARD[1:], PIN)
    assert leaked(caplog.records, secrets) == []
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("tool pay invalid arguments in ") for message in messages)
    assert any(message.startswith("tool pay refused in ") for message in messages)
    assert any(message.startswith("tool pay failed: RuntimeError at ") for message in messages)
    assert any("tool pay timed out" in message for message in messages)


async def test_the_real_tools_log_no_echo_of_what_was_said(
    database: Database, recorder: CallRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = booking_context(database, recorder)
    tools = all_tools()
    said = {
        "cancel_event": {"event_id": CARD},  # "No booking '4111...' made from this number"
        "reschedule_event": {"event_id": CARD, "start": "2030-01-07T10:00"},
        "take_message": {"caller_name": "Alex", "message": f"My PIN is {PIN}", "callback_number": CARD},
    }
    with logs_at_debug(caplog):
        for name, arguments in said.items():
            outcome = await tools.call(name, f"call_{name}", json.dumps(arguments), ctx)
            assert not outcome.ok
    assert leaked(caplog.records, spoken_digit_runs(CARD, PIN)) == []


async def test_a_failed_write_logs_the_database_error_not_the_row(
    database: Database,
    recorder: CallRecorder,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recorder_module, "RETRY_DELAYS_S", (0.0,))
    with logs_at_debug(caplog), pytest.raises(Exception, match="CHECK constraint"):
        # An urgency the table refuses: SQLAlchemy's error text would quote the whole row.
        await recorder.message(
            caller_number=CALLER,
            caller_name="Alex",
            callback_number=CARD,
            message=f"My card is {CARD} and my PIN {PIN}",
            urgency="bogus",
        )
    assert leaked(caplog.records, spoken_digit_runs(CARD, PIN)) == []
    assert any("IntegrityError" in record.getMessage() for record in caplog.records)


# Effects ------------------------------------------------------------------------------------------


async def test_a_tool_with_effects_answers_only_once_its_record_is_committed(
    database: Database, recorder: CallRecorder
) -> None:
    await recorder.close()  # the call's row is there
    registry = ToolRegistry()

    @registry.tool(effects=True)
    async def book(ctx: ToolContext, args: Thing) -> dict[str, Any]:
        """Book something."""
        return {"booked": args.what}

    @registry.tool()
    async def look(ctx: ToolContext, args: Thing) -> dict[str, Any]:
        """Look something up."""
        return {"seen": args.what}

    ctx = ToolContext(call_sid="CA1", caller_number=CALLER, is_owner=False, services=None, recorder=recorder)
    looked = await registry.call("look", "call_look", '{"what": "x"}', ctx)
    booked = await registry.call("book", "call_book", '{"what": "a table"}', ctx)
    # Committed before the outcome was returned (no flush): a SIGKILL now loses nothing.
    assert [(row.name, row.call_id, row.ok) for row in await tool_rows(database)] == [
        ("book", "call_book", True)
    ]
    assert booked.recorded and not looked.recorded
    # The journal records every outcome afterwards: the one already committed is not written twice.
    recorder.tool_call(booked)
    recorder.tool_call(looked)
    await recorder.close()
    assert sorted(row.call_id for row in await tool_rows(database)) == ["call_book", "call_look"]


async def test_booking_cancelling_moving_and_messages_are_tools_with_effects(
    database: Database, recorder: CallRecorder
) -> None:
    # caller_verified: their own bookings, moved and cancelled below
    ctx = booking_context(database, recorder, caller_verified=True)
    tools = all_tools()
    day = (datetime.now(NY) + timedelta(days=2)).date().isoformat()
    created = await tools.call(
        "create_event",
        "call_create",
        json.dumps({"title": "Meeting", "start": f"{day}T10:00", "caller_name": "Alex"}),
        ctx,
    )
    assert created.ok, created.output
    event_id = created.output["event"]["id"]
    steps = [
        ("reschedule_event", {"event_id": event_id, "start": f"{day}T11:00"}),
        ("cancel_event", {"event_id": event_id}),
        ("take_message", {"caller_name": "Alex", "message": "Call me back"}),
        ("check_availability", {"date": day}),  # reads only: batched as before
    ]
    for name, arguments in steps:
        outcome = await tools.call(name, f"call_{name}", json.dumps(arguments), ctx)
        assert outcome.ok, outcome.output
    async with database.session(read_only=True) as session:
        committed = set(await session.scalars(select(ToolCallRow.name)))
        count = await session.scalar(select(func.count(ToolCallRow.id)))
    assert committed == {"create_event", "reschedule_event", "cancel_event", "take_message"}
    assert count == 4
