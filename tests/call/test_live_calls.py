"""Calls on the GPT-Live engine end to end: simulated Twilio <-> callassist <-> fake GPT-Live, over
real sockets (CALLASSIST_ENGINE=live). The fake checks every client event against the SDK's Live
types; tools run through delegation with arguments the fake backend builds from our schemas."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from callassist.calendar.timeutil import localize
from callassist.engine.live import GREETING_CUE, SPEAK_CUE
from callassist.simulator.audio import tone
from callassist.simulator.call import SimulatedCall
from callassist.store.db import Database
from callassist.store.models import CallRow, MessageRow, ToolCallRow, TranscriptEntryRow, UsageRow
from tests.fakes.live_script import Delegate, LiveReply, output_of
from tests.fakes.live_server import FakeLiveSession, LiveScript
from tests.fakes.realtime_server import Reply, Script
from tests.fakes.script import Say, UseTool
from tests.support.live_stack import LiveStack, LiveStackFactory, live_stack_factory

ZONE = ZoneInfo("America/New_York")
CALLER = "+15551230000"
SETTINGS: dict[str, Any] = {"timezone": "America/New_York", "working_hours": "Mon-Sun 09:00-17:00"}


def noise(ms: int, seed: int) -> bytes:
    """Distinct, deterministic 'audio': any reordering, loss or duplication shows up byte for byte."""
    return random.Random(seed).randbytes(ms * 8)


@pytest.fixture
async def make_live_stack(tmp_path: Path) -> AsyncIterator[LiveStackFactory]:
    async with live_stack_factory(tmp_path) as factory:
        yield factory
        assert factory.protocol_problems() == []


async def caller_turn(stack: LiveStack, call: SimulatedCall, said_before: int) -> None:
    """The caller says something; wait until the model has said something more, and it was heard."""
    session = stack.fake.sessions[-1]
    said = time.monotonic()
    await call.say(tone(800, 300))
    await stack.fake.wait_until(lambda: len(session.said) > said_before, timeout=10)
    await call.wait_until_quiet(quiet_ms=300, timeout=10, after=said)


async def record_of(database: Database, call_sid: str) -> dict[str, Any]:
    async with database.session(read_only=True) as session:
        call = await session.get(CallRow, call_sid)
        turns = list(
            await session.scalars(
                select(TranscriptEntryRow)
                .where(TranscriptEntryRow.call_sid == call_sid)
                .order_by(TranscriptEntryRow.spoken_at, TranscriptEntryRow.id)
            )
        )
        tools = list(await session.scalars(select(ToolCallRow).where(ToolCallRow.call_sid == call_sid)))
        usage = list(await session.scalars(select(UsageRow).where(UsageRow.call_sid == call_sid)))
        messages = list(await session.scalars(select(MessageRow).where(MessageRow.call_sid == call_sid)))
    return {"call": call, "turns": turns, "tools": tools, "usage": usage, "messages": messages}


def starts(session: FakeLiveSession) -> list[str]:
    return [e.type for e in session.client_events if e.type == "session.start"]


async def test_greeting_first_then_audio_passes_byte_exact_both_ways(
    make_live_stack: LiveStackFactory,
) -> None:
    greeting, answer = noise(1200, 1), noise(1500, 2)
    script = LiveScript(
        replies=[
            LiveReply([Say("Hello, Dana's assistant.", audio=greeting)]),
            LiveReply([Say("Sure.", audio=answer)]),
        ],
        transcripts=["Can you add a meeting tomorrow?"],
    )
    stack = await make_live_stack(script, **SETTINGS)
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=300, timeout=10)
    assert bytes(call.audio_received) == greeting  # the assistant spoke first
    await caller_turn(stack, call, said_before=1)
    await call.hang_up()
    session = stack.fake.sessions[0]
    await stack.fake.wait_until(lambda: session.closed, timeout=5)

    # Caller audio reached GPT-Live byte for byte (silence included); the model's reached the caller.
    assert bytes(session.audio_in) == bytes(call.audio_sent)
    assert bytes(call.audio_received) == greeting + answer
    assert bytes(call.audio_heard) == greeting + answer
    assert call.violations == [] and call.count("clear_in") == 0
    # One session, started for Twilio's audio, closed with session.close (its final usage read).
    assert starts(session) == ["session.start"]
    assert session.config["audio"]["format"] == {"type": "audio/pcmu", "rate": 8000}
    assert session.config["model"] == "gpt-live-1.1"
    assert any(e.type == "session.close" for e in session.client_events)
    assert session.errors_sent == []


async def test_a_booking_a_message_and_a_goodbye_through_delegation(
    make_live_stack: LiveStackFactory,
) -> None:
    tomorrow = datetime.now(ZONE).date() + timedelta(days=1)
    wanted = localize(datetime.combine(tomorrow, datetime.min.time()).replace(hour=14), ZONE)
    goodbye = noise(900, 7)

    def said(name: str) -> Any:
        return lambda outputs: str(
            output_of(outputs, name).get("say") or output_of(outputs, name).get("error")
        )

    booking = {"title": "Meeting with Alex Kim", "start": "tomorrow 14:00", "caller_name": "Alex Kim"}
    message = {"caller_name": "Alex Kim", "message": "Please bring the contract.", "urgency": "normal"}
    script = LiveScript(
        replies=[
            LiveReply([Say("Hi, Dana's assistant.", audio=noise(600, 3))]),
            LiveReply(
                [Say("Let me book that.", audio=noise(400, 4))],
                Delegate([UseTool("create_event", booking)], result=said("create_event"), spoken=None),
            ),
            LiveReply(
                [Say("Sure.", audio=noise(300, 5))],
                Delegate([UseTool("take_message", message)], result=said("take_message")),
            ),
            LiveReply([Say("Goodbye!", audio=goodbye)], Delegate([UseTool("end_call", {"reason": "done"})])),
        ],
        transcripts=[
            "This is Alex Kim, can I meet Dana tomorrow at 2 pm?",
            "Please tell Dana to bring the contract.",
            "That's all, bye.",
        ],
    )
    stack = await make_live_stack(script, **SETTINGS)
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=300, timeout=10)
    session = stack.fake.sessions[0]
    await caller_turn(stack, call, said_before=1)
    await stack.fake.wait_until(lambda: len(session.function_outputs) == 1, timeout=10)
    await stack.fake.wait_until(lambda: len(session.said) >= 3, timeout=10)  # the result, said
    await caller_turn(stack, call, said_before=3)
    await stack.fake.wait_until(lambda: len(session.said) >= 5, timeout=10)
    await call.say(tone(800, 300))
    await call.wait_closed(timeout=15)  # the assistant hung up once its goodbye was heard
    assert call.close_code == 1000
    assert bytes(call.audio_heard).endswith(goodbye)
    await stack.server.services.registry.wait_idle(10)

    booked, noted = (json.loads(output) for _, output in session.function_outputs[:2])
    assert booked["ok"] is True, booked
    assert datetime.fromisoformat(booked["event"]["start"]) == wanted  # 14:00 local, that day's offset
    assert noted["ok"] is True, noted
    assert session.said[2].text.strip() == booked["say"]  # the model said the backend's result

    record = await record_of(stack.server.services.database, call.call_sid)
    assert record["call"].outcome == "assistant-hung-up"
    assert record["call"].summary == "The caller asked a question and the assistant answered it."
    assert record["call"].model == "gpt-live-1.1"
    assert sorted(tool.name for tool in record["tools"]) == ["create_event", "end_call", "take_message"]
    [stored] = record["messages"]
    assert "contract" in stored.message and stored.caller_number == CALLER
    caller_words = [t.text for t in record["turns"] if t.role == "caller"]
    assert caller_words[:2] == script.transcripts[:2]
    assert any(t.role == "assistant" and t.text.startswith("Hi, Dana's assistant") for t in record["turns"])
    # Cost: the session's seconds at GPT-Live's rate, and the backend's tokens at its model's.
    session_rows = [row for row in record["usage"] if row.purpose == "live-session"]
    backend_rows = [row for row in record["usage"] if row.model == "gpt-5.4-mini"]
    assert session_rows and all(row.model == "gpt-live-1.1" for row in session_rows)
    assert len(backend_rows) >= 3 and all(row.cost_nanousd > 0 for row in backend_rows)
    assert record["call"].cost_nanousd == sum(row.cost_nanousd for row in record["usage"])


async def test_a_dropped_session_gets_the_conversation_back_and_no_second_greeting(
    make_live_stack: LiveStackFactory,
) -> None:
    greeting = noise(500, 11)
    script = LiveScript(
        replies=[
            LiveReply([Say("Hello, Dana's assistant.", audio=greeting)]),
            LiveReply([Say("Tuesday at ten works.", audio=noise(500, 12))]),
            LiveReply([Say("Yes, still Tuesday at ten.", audio=noise(500, 13))]),
        ],
        transcripts=["Can we meet Tuesday?", "So we agreed on Tuesday?"],
    )
    stack = await make_live_stack(script, **SETTINGS)
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=300, timeout=10)
    await caller_turn(stack, call, said_before=1)
    await stack.fake.sessions[0].drop()
    second = await stack.fake.wait_for_session(1)
    await stack.fake.wait_until(lambda: second.start is not None, timeout=5)
    items = [(item["role"], item["content"][0]["text"]) for item in second.config["input"]]
    assert ("user", "Can we meet Tuesday?") in items and ("assistant", "Tuesday at ten works.") in items
    assert second.commentary == []  # no greeting cue: the caller was answered already
    await caller_turn(stack, call, said_before=0)
    await call.hang_up()
    assert bytes(call.audio_heard).count(greeting) == 1  # greeted once
    assert [s.text for s in second.said] == ["Yes, still Tuesday at ten."]


async def test_talking_over_the_assistant_stops_what_twilio_still_had_and_keeps_what_was_heard(
    make_live_stack: LiveStackFactory,
) -> None:
    long_greeting, answer = noise(6000, 21), noise(600, 22)
    script = LiveScript(
        replies=[
            LiveReply([Say("A very long greeting.", audio=long_greeting)]),
            LiveReply([Say("Yes?", audio=answer)]),
        ],
        transcripts=["Sorry, one question"],
    )
    stack = await make_live_stack(script, **SETTINGS)
    call = await stack.simulator.place_call(from_number=CALLER)
    session = await stack.fake.wait_for_session(0)
    # Generated at 8x real time: by now the whole greeting waits at Twilio; only the call can stop it.
    await stack.fake.wait_until(
        lambda: bool(session.said) and len(session.said[0].audio) == len(long_greeting)
    )
    first = await call.wait_for("media_in", timeout=5)
    await call.wait_for("mark_echo", after=first.t, timeout=5)  # it is playing
    said = time.monotonic()
    await call.say(tone(800, 300))
    cleared = await call.wait_for("clear_in", after=said, timeout=5)
    assert cleared.t - said < 1.0  # the first words of the caller's transcript stop the playback
    await stack.fake.wait_until(lambda: len(session.said) == 2, timeout=10)
    answered = await call.wait_for("media_in", after=cleared.t, timeout=5)
    await call.wait_until_quiet(quiet_ms=300, timeout=10, after=answered.t)
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    heard = bytes(call.audio_heard)
    assert heard.startswith(long_greeting[:800]) and heard.endswith(answer)
    assert len(heard) < len(long_greeting)  # what was cleared was never heard

    record = await record_of(stack.server.services.database, call.call_sid)
    greeting_turn = next(t for t in record["turns"] if t.role == "assistant")
    assert greeting_turn.interrupted and 0 < greeting_turn.heard_ms < 6000


async def test_refused_without_a_fallback_the_caller_gets_the_voicemail(
    make_live_stack: LiveStackFactory,
) -> None:
    stack = await make_live_stack(live_fallback="none")
    stack.fake.refuse_status = HTTPStatus.FORBIDDEN  # an account without GPT-Live access
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_ended(timeout=15)
    assert any(verb.startswith("Say") and "can't take your call right now" in verb for verb in call.verbs)
    assert stack.fake.refused >= 1 and stack.fake.sessions == []


async def test_refused_by_gpt_live_the_call_goes_on_with_realtime(
    make_live_stack: LiveStackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # said at WARNING once per process, then at INFO
    greeting = noise(500, 31)
    realtime = Script(replies=[Reply([Say("Hello, Dana's assistant.", audio=greeting)])])
    stack = await make_live_stack(realtime=realtime, **SETTINGS)
    stack.fake.refuse_status = HTTPStatus.FORBIDDEN
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=300, timeout=10)
    await call.hang_up()
    assert bytes(call.audio_heard) == greeting  # Realtime answered instead
    assert stack.fake.refused == 1 and stack.fake.sessions == []
    assert stack.fake.realtime is not None and len(stack.fake.realtime.sessions) == 1
    assert any(
        "GPT-Live refused this call" in r.getMessage() and "Realtime" in r.getMessage()
        for r in caplog.records
    )


async def test_paced_audio_keeps_only_the_lead_queued_at_twilio(
    make_live_stack: LiveStackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On GPT-Live the opening paces the leg (media/pacing.py): when the caller talks over a greeting
    that was generated at 8x real time, Twilio had been sent only about the lead more than it had
    played."""
    long_greeting = noise(6000, 41)
    script = LiveScript(
        replies=[
            LiveReply([Say("A very long greeting.", audio=long_greeting)]),
            LiveReply([Say("Yes?", audio=noise(300, 42))]),
        ],
        transcripts=["Wait"],
    )
    stack = await make_live_stack(script, record=True, **SETTINGS)
    call = await stack.simulator.place_call(from_number=CALLER)
    session = await stack.fake.wait_for_session(0)
    await stack.fake.wait_until(
        lambda: bool(session.said) and len(session.said[0].audio) == len(long_greeting)
    )
    first = await call.wait_for("media_in", timeout=5)
    await call.wait_for("mark_echo", after=first.t, timeout=5)
    said = time.monotonic()
    await call.say(tone(800, 300))
    await call.wait_for("clear_in", after=said, timeout=5)
    received, heard = len(call.audio_received), len(call.audio_heard)
    await call.hang_up()
    # What reached Twilio beyond what had played: the lead (200 ms) and a chunk (100 ms), not 6 s.
    assert 0 < received - heard <= (200 + 100 + 60) * 8, (received, heard)
    assert received < len(long_greeting) / 2


async def test_a_call_ends_politely_at_the_time_limit(make_live_stack: LiveStackFactory) -> None:
    """A note the model must act on (session.instructions.append), then a cue to speak: the
    goodbye is said and heard, then the line closes."""
    greeting, goodbye = noise(300, 51), noise(800, 52)
    script = LiveScript(
        replies=[
            LiveReply([Say("Hi", audio=greeting)]),
            LiveReply([Say("Time is up, goodbye.", audio=goodbye)]),
        ]
    )
    stack = await make_live_stack(script, max_call_minutes=0.05, **SETTINGS)  # three seconds
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_closed(timeout=15)
    assert bytes(call.audio_heard) == greeting + goodbye
    session = stack.fake.sessions[0]
    [note] = session.instructions_appended
    assert "time limit" in note
    assert session.commentary == [GREETING_CUE, SPEAK_CUE]
    kinds = [e.type for e in session.client_events if e.type != "session.input_audio.append"]
    assert kinds.index("session.instructions.append") < kinds.index("session.commentary.append", 2)
    await stack.server.services.registry.wait_idle(10)
    record = await record_of(stack.server.services.database, call.call_sid)
    assert record["call"].outcome == "time-limit"
