"""Caller ID can be faked: a caller's own bookings and history are theirs only once their number is
(carrier attestation, or a code texted to it), over real sockets with a Twilio REST stand-in."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from callassist.calendar.base import NewEvent
from callassist.simulator.audio import tone
from callassist.store.contacts import ContactRepository
from tests.fakes.realtime_server import Reply, ResponseContext, Say, Script, UseTool
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN
from tests.support.stack import Stack, StackFactory
from tests.support.twilio_rest import TwilioRestStandIn

CALLER = "+15551230000"
OUR_NUMBER = "+15559870000"
SETTINGS: dict[str, Any] = {"timezone": "America/New_York", "working_hours": "Mon-Sun 09:00-17:00"}


def outputs(stack: Stack, index: int = 0) -> list[dict[str, Any]]:
    return [json.loads(output) for _, output in stack.fake.sessions[index].function_outputs]


async def booked_for_caller(stack: Stack) -> None:
    calendar = stack.server.services.calendar
    assert calendar is not None
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=15, minute=0, second=0, microsecond=0)
    await calendar.create(
        NewEvent(
            "Call with Alex", start, start + timedelta(hours=1), caller_number=CALLER, caller_name="Alex"
        )
    )


async def talk(stack: Stack, call: Any, responses: int) -> None:
    session = stack.fake.sessions[-1]
    await call.say(tone(700, 300))
    await stack.fake.wait_until(lambda: len(session.responses) >= responses, timeout=15)


async def test_a_spoofed_number_neither_sees_nor_changes_the_callers_bookings(
    make_stack: StackFactory,
) -> None:
    script = Script(
        replies=[
            Reply([Say("Hi", audio=tone(300, 400))]),
            Reply([UseTool("find_my_events"), UseTool("cancel_event", intent={"event_id": "any"})]),
            Reply([Say("I'll pass that on.", audio=tone(300, 450))]),
        ]
    )
    stack = await make_stack(script, **SETTINGS)
    await booked_for_caller(stack)
    async with stack.server.services.database.session() as session:
        await ContactRepository(session).upsert(CALLER, "Alex Kim", note="Owes Dana a reply")
    call = await stack.simulator.place_call(from_number=CALLER)  # no attestation: anyone can send it
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await talk(stack, call, 3)
    await call.hang_up()
    found, cancelled = outputs(stack)
    assert found["ok"] is False and found["needs_verification"] is True and "events" not in found
    assert cancelled["ok"] is False and cancelled["needs_verification"] is True
    assert "send_verification_code" in found["error"]  # Twilio is configured: a code can be offered
    calendar = stack.server.services.calendar
    assert calendar is not None
    [event] = await calendar.events_between(datetime.now(UTC), datetime.now(UTC) + timedelta(days=5))
    assert event.title == "Call with Alex"  # untouched
    instructions = stack.fake.sessions[0].session_config["instructions"]
    assert "send_verification_code" in instructions and "can be faked" in instructions
    # Whose number it is, in the owner's contact book, is not told to whoever claims it.
    assert "Alex" not in instructions and "Owes" not in instructions


async def test_a_code_texted_to_the_number_and_read_back_opens_the_callers_bookings(
    make_stack: StackFactory,
) -> None:
    async with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:

        def read_back_the_code(ctx: ResponseContext) -> Reply:
            # What the caller reads from their phone's screen; the model hears it as speech.
            code = re.findall(r"\d{6}", twilio.messages[-1].body)[-1]
            return Reply([UseTool("check_verification_code", intent={"code": " ".join(code)})])

        script = Script(
            replies=[
                Reply([Say("Hi", audio=tone(300, 400))]),
                Reply(
                    [Say("Let me text you a code.", audio=tone(300, 420)), UseTool("send_verification_code")]
                ),
                Reply([Say("What is the code?", audio=tone(300, 440))]),
                read_back_the_code,
                Reply([UseTool("find_my_events")]),
                Reply([Say("You have a call with Dana.", audio=tone(300, 460))]),
            ]
        )
        stack = await make_stack(script, twilio_api_base_url=twilio.base_url, **SETTINGS)
        await booked_for_caller(stack)
        call = await stack.simulator.place_call(from_number=CALLER, to_number=OUR_NUMBER)
        await call.wait_until_quiet(quiet_ms=150, timeout=10)
        await talk(stack, call, 3)  # "can you check my booking?" -> the code is texted
        [message] = await twilio.wait_for_messages(1)
        assert (message.to, message.from_) == (CALLER, OUR_NUMBER)
        await talk(stack, call, 6)  # reads the code out -> confirmed -> their bookings
        await call.hang_up()
    sent, confirmed, found = outputs(stack)
    assert sent["ok"] is True and confirmed["verified"] is True
    assert [event["title"] for event in found["events"]] == ["Call with Alex"]
    code = re.findall(r"\d{6}", message.body)[-1]
    assert code not in json.dumps(sent)  # the model never saw the code before the caller said it


async def test_a_code_typed_on_the_keypad_is_checked_without_the_model_seeing_it(
    make_stack: StackFactory,
) -> None:
    async with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:

        def after_the_keypad(ctx: ResponseContext) -> Reply:
            typed = any("typed the code" in json.dumps(item) for item in ctx.items)
            return Reply(
                [UseTool("check_verification_code")] if typed else [Say("Sorry?", audio=tone(200, 300))]
            )

        script = Script(
            replies=[
                Reply([Say("Hi", audio=tone(300, 400))]),
                Reply([UseTool("send_verification_code")]),
                Reply([Say("Type the code.", audio=tone(300, 440))]),
                after_the_keypad,
                Reply([Say("Confirmed.", audio=tone(300, 460))]),
            ]
        )
        stack = await make_stack(script, twilio_api_base_url=twilio.base_url, **SETTINGS)
        call = await stack.simulator.place_call(from_number=CALLER)
        await call.wait_until_quiet(quiet_ms=150, timeout=10)
        await talk(stack, call, 3)
        [message] = await twilio.wait_for_messages(1)
        code = re.findall(r"\d{6}", message.body)[-1]
        for digit in code:
            await call.send_dtmf(digit)
        session = stack.fake.sessions[0]
        await stack.fake.wait_until(lambda: len(session.function_outputs) >= 2, timeout=10)
        await call.hang_up()
    _, confirmed = outputs(stack)
    assert confirmed["ok"] is True and confirmed["verified"] is True
    seen_by_model = json.dumps(
        [e.event for e in session.client_events if e.type != "input_audio_buffer.append"]
    )
    assert code not in seen_by_model
