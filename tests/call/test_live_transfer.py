"""Warm transfer on the GPT-Live engine, over real sockets: the fake backend calls transfer_to_owner
(arguments built from the declared schema) on a delegation, callassist rings the owner through the
simulated Twilio REST API; on 1 the caller is put through, otherwise back with the assistant in the
same GPT-Live session, which is told why (developer instructions) and cued to say it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from callassist.engine.live import SPEAK_CUE
from callassist.simulator.audio import tone
from callassist.simulator.outbound import Timing
from callassist.simulator.owner import Owner
from callassist.simulator.rest import TwilioRest
from callassist.store.models import CallRow, CallSegmentRow
from tests.fakes.live_script import Delegate, LiveReply
from tests.fakes.live_server import LiveScript
from tests.fakes.script import Say, UseTool
from tests.support.live_stack import LiveStack, LiveStackFactory, live_stack_factory

OWNER_PHONE = "+15550001111"
CALLER = "+15551230000"
SUMMARY = "Alex Kim, about the roof leak, wants to move Thursday's visit"
TRYING = "I'm trying Dana now, please hold."
BACK_LINE = "Dana can't pick up right now. I'll take a message."


@pytest.fixture
async def make_live_stack(tmp_path: Path) -> AsyncIterator[LiveStackFactory]:
    async with live_stack_factory(tmp_path) as factory:
        yield factory
        assert factory.protocol_problems() == []


def script() -> LiveScript:
    transfer = Delegate(
        [UseTool("transfer_to_owner", intent={"summary": SUMMARY})],
        result=TRYING,
        spoken=Say(TRYING, audio=tone(540, 200)),
    )
    return LiveScript(
        replies=[
            LiveReply([Say("Hello, this is Dana's assistant.", audio=tone(500, 200))]),
            LiveReply([Say("Let me get Dana.", audio=tone(520, 200))], transfer),
            LiveReply([Say(BACK_LINE, audio=tone(560, 200))]),
        ],
        transcripts=["Can I speak to Dana?"],
    )


async def transferring_stack(
    make_live_stack: LiveStackFactory, rest: TwilioRest, **settings: Any
) -> LiveStack:
    values: dict[str, Any] = {
        "owner_phone": OWNER_PHONE,
        "ring_owner_seconds": 0,
        "transfer": "always",
        "twilio_api_base_url": rest.base_url,
        **settings,
    }
    stack = await make_live_stack(script(), **values)
    rest.attach(stack.simulator)
    return stack


async def segments(stack: LiveStack, call_sid: str) -> list[tuple[str, str | None]]:
    async with stack.server.services.database.session(read_only=True) as session:
        rows = (
            await session.execute(
                select(CallSegmentRow).where(CallSegmentRow.call_sid == call_sid).order_by(CallSegmentRow.seq)
            )
        ).scalars()
        return [(row.kind, row.outcome) for row in rows]


async def test_the_owner_pressing_1_puts_a_live_engine_caller_through(
    make_live_stack: LiveStackFactory, rest: TwilioRest
) -> None:
    stack = await transferring_stack(make_live_stack, rest)
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=300, timeout=10)
    await call.say(tone(600, 400))  # "Can I speak to Dana?"
    (leg,) = await rest.wait_created(1, timeout=10)
    assert leg.form["To"] == OWNER_PHONE
    await call.wait_for("redirected", timeout=15)
    await call.wait_ended(timeout=10)
    await stack.server.services.registry.wait_idle(10)
    async with stack.server.services.database.session(read_only=True) as session:
        record = await session.get(CallRow, call.call_sid)
    assert record is not None and record.outcome == "transferred"
    assert await segments(stack, call.call_sid) == [
        ("assistant", None),
        ("hold", "connected"),
        ("owner", "completed"),
    ]
    session = stack.fake.sessions[0]
    # The assistant's line was said (and heard) before the hold began.
    assert [said.text for said in session.said][:3] == [
        "Hello, this is Dana's assistant.",
        "Let me get Dana.",
        TRYING,
    ]
    assert len(stack.fake.sessions) == 1


async def test_a_declined_transfer_brings_the_caller_back_to_the_same_live_session(
    make_live_stack: LiveStackFactory, rest: TwilioRest
) -> None:
    rest.owner = Owner.press_2
    rest.timing = Timing(
        ring_s=3.0
    )  # the caller is on hold (after the line, ~1-2 s) before the owner answers
    stack = await transferring_stack(make_live_stack, rest)
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=300, timeout=10)
    await call.say(tone(600, 400))
    (leg,) = await rest.wait_created(1, timeout=10)
    await leg.wait_ended()
    session = stack.fake.sessions[0]
    await stack.fake.wait_until(lambda: any(said.text == BACK_LINE for said in session.said), timeout=15)
    await call.wait_until_quiet(quiet_ms=300, timeout=15)
    assert any("offer to take a message" in note for note in session.instructions_appended)
    assert session.commentary[-1] == SPEAK_CUE
    assert not call.stream_closed_by and len(stack.fake.sessions) == 1  # same session, no replay
    assert session.mutes == [True, False]  # full duplex: the model was muted for the hold
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    assert await segments(stack, call.call_sid) == [
        ("assistant", None),
        ("hold", "declined"),
        ("assistant", None),
    ]
