"""The core call flows, each written once and run on both speech engines (OpenAI Realtime and
GPT-Live): simulated Twilio <-> callassist <-> the engine's fake, over real sockets. The neutral
layer (what the assistant says, which tools it uses with which intent; a stack by engine) is in
tests/support/engines.py."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from callassist.simulator.audio import tone
from callassist.simulator.call import SimulatedCall
from callassist.simulator.outbound import Timing
from callassist.simulator.owner import Owner
from callassist.simulator.rest import TwilioRest
from callassist.store.models import CallSegmentRow
from tests.call.test_calendar_calls import CALLER, SETTINGS, ZONE, local, tomorrow
from tests.call.test_live_calls import noise, record_of
from tests.fakes.realtime_server import FakeSession
from tests.fakes.script import DEFAULT_SUMMARY, Say, UseTool
from tests.support.engines import (
    ENGINES,
    Conversation,
    Engine,
    EngineStack,
    EngineStackFactory,
    Turn,
    engine_stack_factory,
)
from tests.support.stack import talk_over

SUMMARY = json.loads(DEFAULT_SUMMARY)["summary"]  # what both fakes write when asked for one


@pytest.fixture(params=ENGINES)
async def make_call(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EngineStackFactory]:
    engine: Engine = request.param
    async with engine_stack_factory(engine, tmp_path) as factory:
        yield factory
        assert factory.protocol_problems() == []


async def caller_turn(stack: EngineStack, call: SimulatedCall, said: int, quiet_ms: int = 200) -> None:
    """The caller says something; wait until the model has said `said` things in this session and
    the caller has heard them (then `quiet_ms` without audio)."""
    spoke = time.monotonic()
    await call.say(tone(800, 300))
    await stack.wait_until_said(said, timeout=15)
    await call.wait_until_quiet(quiet_ms=quiet_ms, timeout=10, after=spoke)


async def answered(
    make_call: EngineStackFactory, conversation: Conversation
) -> tuple[EngineStack, SimulatedCall]:
    """A call placed and its greeting heard."""
    stack = await make_call(conversation, **SETTINGS)
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=200, timeout=10)
    return stack, call


async def test_greeting_first_then_audio_passes_byte_exact_both_ways(make_call: EngineStackFactory) -> None:
    greeting, answer = noise(400, 1), noise(500, 2)
    conversation = Conversation(
        [Turn(Say("Hello, Dana's assistant.", audio=greeting)), Turn(Say("Sure.", audio=answer))],
        transcripts=["Can you add a meeting tomorrow?"],
    )
    stack, call = await answered(make_call, conversation)
    assert bytes(call.audio_received) == greeting  # the assistant spoke first
    await caller_turn(stack, call, said=2)
    await call.hang_up()
    await stack.wait_closed()

    # Caller audio reached the model byte for byte (silence included); the model's reached the caller.
    assert stack.audio_in() == bytes(call.audio_sent)
    assert bytes(call.audio_received) == greeting + answer
    assert bytes(call.audio_heard) == greeting + answer
    assert call.violations == [] and call.count("clear_in") == 0
    assert stack.said() == ["Hello, Dana's assistant.", "Sure."]


async def test_a_booking_lands_at_the_right_local_time_and_a_message_is_stored(
    make_call: EngineStackFactory,
) -> None:
    booking = {"title": "Meeting with Alex Kim", "start": "tomorrow 14:00", "caller_name": "Alex Kim"}
    message = {"caller_name": "Alex Kim", "message": "Please bring the contract.", "urgency": "normal"}
    conversation = Conversation(
        [
            Turn(Say("Hi, Dana's assistant.", audio=noise(300, 3))),
            Turn(
                Say("Let me book that.", audio=noise(300, 4)),
                [UseTool("create_event", booking)],  # the model writes the schema's date from "tomorrow"
                then=Say("Booked for tomorrow at two.", audio=noise(300, 5)),
            ),
            Turn(
                Say("Sure.", audio=noise(300, 6)),
                [UseTool("take_message", message)],
                then=Say("I'll pass that on.", audio=noise(300, 7)),
            ),
        ],
        transcripts=[
            "This is Alex Kim, can I meet Dana tomorrow at 2 pm?",
            "Please tell Dana to bring the contract.",
        ],
    )
    stack, call = await answered(make_call, conversation)
    await caller_turn(stack, call, said=3)
    await caller_turn(stack, call, said=5)
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)

    booked, noted = stack.tool_outputs()
    assert booked["ok"] is True, booked
    day = tomorrow()
    assert datetime.fromisoformat(booked["event"]["start"]) == local(day, 14)  # that day's offset
    calendar = stack.server.services.calendar
    assert calendar is not None
    [event] = await calendar.events_between(local(day, 0), local(day, 23))
    assert event.start == local(day, 14) and event.start.astimezone(ZONE).hour == 14
    assert event.end - event.start == timedelta(hours=1) and event.caller_number == CALLER
    assert noted["ok"] is True, noted
    record = await record_of(stack.server.services.database, call.call_sid)
    [stored] = record["messages"]
    assert stored.message == "Please bring the contract." and stored.caller_number == CALLER
    assert sorted(tool.name for tool in record["tools"]) == ["create_event", "take_message"]
    assert stack.said() == [
        "Hi, Dana's assistant.",
        "Let me book that.",
        "Booked for tomorrow at two.",
        "Sure.",
        "I'll pass that on.",
    ]


async def test_end_call_hangs_up_once_the_goodbye_is_heard(make_call: EngineStackFactory) -> None:
    greeting, goodbye = noise(300, 9), noise(400, 10)
    conversation = Conversation(
        [
            Turn(Say("Hi", audio=greeting)),
            Turn(Say("Goodbye!", audio=goodbye), [UseTool("end_call", {"reason": "caller is done"})]),
        ],
        transcripts=["That's all, bye."],
    )
    stack, call = await answered(make_call, conversation)
    await call.say(tone(800, 300))
    await call.wait_closed(timeout=15)
    # The whole goodbye was heard, then the server closed the stream normally (Twilio: <Hangup/>).
    assert bytes(call.audio_heard) == greeting + goodbye
    assert call.close_code == 1000
    await call.wait_ended(timeout=5)
    assert call.verbs[-1] == "Hangup"
    await stack.server.services.registry.wait_idle(10)
    record = await record_of(stack.server.services.database, call.call_sid)
    assert record["call"].outcome == "assistant-hung-up"
    assert [tool.name for tool in record["tools"]] == ["end_call"]


async def test_the_call_record_has_outcome_summary_cost_and_turns(make_call: EngineStackFactory) -> None:
    conversation = Conversation(
        [
            Turn(Say("Hello, Dana's assistant.", audio=noise(300, 11))),
            Turn(Say("Dana is free all afternoon.", audio=noise(300, 12))),
        ],
        transcripts=["When is Dana free tomorrow?"],
    )
    stack, call = await answered(make_call, conversation)
    # The caller hangs up as soon as the answer was heard: on GPT-Live (no end-of-speech event) the
    # stretch of speech is still open then, and is finished by the call's end (LiveEngine).
    await caller_turn(stack, call, said=2, quiet_ms=150)
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    record = await record_of(stack.server.services.database, call.call_sid)

    row: Any = record["call"]
    assert row.outcome == "caller-hung-up" and row.ended_at is not None
    assert row.caller_number == CALLER and row.summary == SUMMARY
    assert row.cost_nanousd == sum(usage.cost_nanousd for usage in record["usage"]) > 0
    assert [(turn.role, turn.text.strip()) for turn in record["turns"]] == [
        ("assistant", "Hello, Dana's assistant."),
        ("caller", "When is Dana free tomorrow?"),
        ("assistant", "Dana is free all afternoon."),
    ]
    assert not any(turn.interrupted for turn in record["turns"])


async def test_a_dropped_model_socket_the_call_goes_on_without_a_second_greeting(
    make_call: EngineStackFactory,
) -> None:
    greeting = noise(300, 13)
    conversation = Conversation(
        [
            Turn(Say("Hello, Dana's assistant.", audio=greeting)),
            Turn(Say("Tuesday at ten works.", audio=noise(300, 14))),
            Turn(Say("Yes, still Tuesday at ten.", audio=noise(300, 15))),
        ],
        transcripts=["Can we meet Tuesday?", "So we agreed on Tuesday?"],
    )
    stack, call = await answered(make_call, conversation)
    await caller_turn(stack, call, said=2)
    await stack.drop()
    await stack.wait_ready(1)
    await caller_turn(stack, call, said=1)
    await call.hang_up()
    assert bytes(call.audio_heard).count(greeting) == 1  # greeted once
    assert stack.said(1) == ["Yes, still Tuesday at ten."]  # the new session only answered
    assert len(stack.fake.sessions) == 2


# Warm transfer (issue 11) ------------------------------------------------------------------------------

OWNER_PHONE = "+15550001111"
WHO = "Alex Kim, about the roof leak, wants to move Thursday's visit"


async def transfer_call(make_call: EngineStackFactory, rest: TwilioRest) -> tuple[EngineStack, SimulatedCall]:
    conversation = Conversation(
        [
            Turn(Say("Hello, Dana's assistant.", audio=noise(300, 61))),
            Turn(
                Say("Let me get Dana.", audio=noise(200, 62)),
                tools=[UseTool("transfer_to_owner", intent={"summary": WHO})],
                then=Say("I'm trying Dana now, please hold.", audio=noise(200, 63)),
            ),
            Turn(Say("Dana can't pick up right now. I'll take a message.", audio=noise(200, 64))),
        ],
        transcripts=["Can I talk to Dana? It's urgent."],
    )
    stack = await make_call(
        conversation,
        **SETTINGS,
        owner_phone=OWNER_PHONE,
        ring_owner_seconds=0,
        transfer="always",
        twilio_api_base_url=rest.base_url,
    )
    rest.attach(stack.simulator)
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=200, timeout=10)
    await call.say(tone(800, 300))
    return stack, call


async def segments_of(stack: EngineStack, call_sid: str) -> list[tuple[str, str | None]]:
    async with stack.server.services.database.session(read_only=True) as session:
        rows = await session.scalars(
            select(CallSegmentRow).where(CallSegmentRow.call_sid == call_sid).order_by(CallSegmentRow.seq)
        )
        return [(row.kind, row.outcome) for row in rows]


async def test_a_transfer_the_owner_takes_puts_the_caller_through(
    make_call: EngineStackFactory, rest: TwilioRest
) -> None:
    stack, call = await transfer_call(make_call, rest)
    (leg,) = await rest.wait_created(1, timeout=10)
    await call.wait_for("conference_started", timeout=15)
    await call.wait_ended(timeout=10)
    assert await leg.wait_ended() == "completed"
    (whisper,) = [event.detail["text"] for event in leg.events if event.kind == "owner_heard"]
    assert WHO in whisper
    await stack.server.services.registry.wait_idle(10)
    record = await record_of(stack.server.services.database, call.call_sid)
    assert record["call"].outcome == "transferred"
    assert await segments_of(stack, call.call_sid) == [
        ("assistant", None),
        ("hold", "connected"),
        ("owner", "completed"),
    ]


async def test_a_transfer_the_owner_declines_comes_back_to_the_same_session(
    make_call: EngineStackFactory, rest: TwilioRest
) -> None:
    rest.owner = Owner.press_2
    rest.timing = Timing(ring_s=3.0)  # the caller is on hold before the owner answers
    stack, call = await transfer_call(make_call, rest)
    (leg,) = await rest.wait_created(1, timeout=10)
    await leg.wait_ended(timeout=10)
    await stack.wait_until_said(4, timeout=15)  # greeting, the line, the trying line, the way back
    await call.wait_until_quiet(quiet_ms=200, timeout=10)
    assert stack.said()[-1] == "Dana can't pick up right now. I'll take a message."
    assert len(stack.fake.sessions) == 1 and not call.stream_closed_by  # same session, no replay
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    assert await segments_of(stack, call.call_sid) == [
        ("assistant", None),
        ("hold", "declined"),
        ("assistant", None),
    ]


async def test_talking_over_the_assistant_stops_what_the_caller_hears(make_call: EngineStackFactory) -> None:
    """Realtime: `clear` and a truncate at what was heard; GPT-Live (no truncation): the same `clear`,
    with only the pacing lead queued at Twilio. Either way the caller stops hearing the answer."""
    greeting, answer = noise(300, 71), noise(6000, 72)
    conversation = Conversation(
        [
            Turn(Say("Hello, Dana's assistant.", audio=greeting)),
            Turn(Say("A very long answer.", audio=answer)),
            Turn(Say("Yes?", audio=noise(200, 73))),
        ],
        transcripts=["Tell me everything.", "Wait."],
    )
    stack, call = await answered(make_call, conversation)
    asked = time.monotonic()
    await call.say(tone(800, 300))
    first = await call.wait_for("media_in", after=asked, timeout=10)  # the long answer is playing
    await call.wait_for("mark_echo", after=first.t, timeout=5)
    since = time.monotonic()
    cleared = await talk_over(call, since, tone(800, 300))
    heard_at_clear, received_at_clear = len(call.audio_heard), len(call.audio_received)
    assert cleared.t - since < 2.0
    assert heard_at_clear < len(greeting) + len(answer) // 2  # far from the whole answer
    if stack.engine == "live":
        # No truncation on GPT-Live: Twilio was never sent more than the pacing lead (200 ms) and a
        # chunk beyond what had played (media/pacing.py).
        assert 0 < received_at_clear - heard_at_clear <= (200 + 100 + 60) * 8
    else:
        # Realtime generated it all at once; the model is told what was heard (a truncate).
        session = stack.session(0)
        assert isinstance(session, FakeSession)
        await stack.fake.wait_until(lambda: bool(session.truncations), timeout=5)
    await stack.wait_until_said(3, timeout=15)  # "Yes?": the conversation goes on
    await call.wait_until_quiet(quiet_ms=200, timeout=10, after=cleared.t)
    # What was queued at Twilio was dropped: the rest of the long answer was never heard.
    assert len(call.audio_heard) < len(greeting) + len(answer) // 2 + 200 * 8
    await call.hang_up()
    await stack.wait_closed()
