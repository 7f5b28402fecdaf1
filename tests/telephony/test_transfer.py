"""Warm transfer over real sockets: the fake OpenAI calls transfer_to_owner (arguments built from the
declared schema), callassist rings the owner through the simulated Twilio REST API, the simulated
owner hears the whisper and presses a key; on 1 the caller's call is moved into a conference with
the owner, otherwise the caller is back with the assistant in the same session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from callassist.dashboard.serialize import call_detail_json
from callassist.media.hold import CHUNK_S
from callassist.simulator.audio import tone
from callassist.simulator.outbound import Timing
from callassist.simulator.owner import Owner
from callassist.simulator.rest import TwilioRest
from callassist.store.models import CallRow, CallSegmentRow
from callassist.store.records import get_call
from tests.fakes.realtime_server import Reply, Say, Script, UseTool
from tests.support.dashboard import DashboardClient, csrf_of
from tests.support.records import ADMIN_TOKEN
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN
from tests.support.stack import Stack, StackFactory, stack_factory

OWNER_PHONE = "+15550001111"
CALLER = "+15551230000"
SUMMARY = "Alex Kim, about the roof leak, wants to move Thursday's visit"
BACK_LINE = "Dana can't pick up right now. I'll take a message."
HOLD_CHUNK = int(CHUNK_S * 8000)


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    async with stack_factory(tmp_path) as factory:
        yield factory
        assert factory.protocol_problems() == []


def script() -> Script:
    return Script(
        replies=[
            # Short audio stands for the words: the flow is tested, not the speech.
            Reply([Say("Hello, this is Dana's assistant.", audio=tone(500, 200))]),
            Reply(
                [
                    Say("Let me get Dana.", audio=tone(520, 200)),
                    UseTool("transfer_to_owner", intent={"summary": SUMMARY}),
                ]
            ),
            Reply([Say("I'm trying Dana now, please hold.", audio=tone(540, 200))]),
            Reply([Say(BACK_LINE, audio=tone(560, 200))]),
        ]
    )


async def transferring_stack(
    make_stack: StackFactory, rest: TwilioRest, replies: Script | None = None, **settings: Any
) -> Stack:
    values: dict[str, Any] = {
        "owner_phone": OWNER_PHONE,
        "ring_owner_seconds": 0,  # the assistant answers at once; the transfer comes later
        "transfer": "always",
        "twilio_api_base_url": rest.base_url,
    }
    values.update(settings)
    stack = await make_stack(replies or script(), **values)
    rest.attach(stack.simulator)
    return stack


async def segments(stack: Stack, call_sid: str) -> list[tuple[str, str | None, bool]]:
    async with stack.server.services.database.session(read_only=True) as session:
        rows = (
            await session.execute(
                select(CallSegmentRow).where(CallSegmentRow.call_sid == call_sid).order_by(CallSegmentRow.seq)
            )
        ).scalars()
        return [(row.kind, row.outcome, row.ended_at is not None) for row in rows]


async def ask_for_dana(stack: Stack, rest: TwilioRest) -> Any:
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await call.say(tone(600, 400))  # "Can I speak to Dana?"
    return call


async def test_the_owner_pressing_1_puts_the_caller_through(
    make_stack: StackFactory, rest: TwilioRest
) -> None:
    stack = await transferring_stack(make_stack, rest)
    call = await ask_for_dana(stack, rest)
    (leg,) = await rest.wait_created(1, timeout=10)
    assert leg.form["To"] == OWNER_PHONE
    await call.wait_for("redirected", timeout=15)
    await call.wait_for("conference_started", timeout=5)
    await call.wait_for("conference_ended", timeout=5)
    await call.wait_ended(timeout=5)
    assert await leg.wait_ended() == "completed"
    (whisper,) = [event.detail["text"] for event in leg.events if event.kind == "owner_heard"]
    press = "Press 1 to take the call, or 2 to let the assistant take a message."
    assert whisper == f"Call from 1 5 5 5 1 2 3 0 0 0 0. {SUMMARY}. {press}"
    await stack.server.services.registry.wait_idle(10)
    async with stack.server.services.database.session(read_only=True) as session:
        record = await session.get(CallRow, call.call_sid)
    assert record is not None and record.outcome == "transferred" and record.summary
    assert await segments(stack, call.call_sid) == [
        ("assistant", None, True),
        ("hold", "connected", True),
        ("owner", "completed", True),  # ended by the caller's <Dial action> after the conference
    ]
    assert len(stack.fake.sessions) == 1
    # The record as the owner reads it (CLI `calls show`, GET /api/calls/{sid}).
    async with stack.server.services.database.session(read_only=True) as session:
        detail = await get_call(session, call.call_sid)
    assert detail is not None
    shown = call_detail_json(detail, stack.server.services.settings.zone)["segments"]
    assert [(segment["kind"], segment["outcome"]) for segment in shown] == [
        ("assistant", None),
        ("hold", "connected"),
        ("owner", "completed"),
    ]


@pytest.mark.parametrize("owner", [Owner.press_2, Owner.no_key, Owner.no_answer])
async def test_a_transfer_the_owner_doesnt_take_brings_the_caller_back_to_the_same_conversation(
    make_stack: StackFactory, rest: TwilioRest, owner: Owner
) -> None:
    rest.owner = owner
    stack = await transferring_stack(make_stack, rest)
    call = await ask_for_dana(stack, rest)
    (leg,) = await rest.wait_created(1, timeout=10)
    await leg.wait_ended()
    session = stack.fake.sessions[0]
    await stack.fake.wait_until(
        lambda: any(
            e.type == "conversation.item.create" and "offer to take a message" in str(e.event)
            for e in session.client_events
        ),
        timeout=10,
    )
    await call.wait_until_quiet(quiet_ms=300, timeout=15)
    assert not call.stream_closed_by  # still on the assistant's stream
    assert len(stack.fake.sessions) == 1  # same session: context kept, nothing replayed
    greetings = [e for e in session.client_events if e.type == "session.update"]
    requests = [
        e
        for e in session.client_events
        if e.type == "response.create" and e.event["response"].get("conversation") != "none"
    ]
    # The greeting, the line after the tool, the answer after the caller is back: no second greeting.
    assert len(requests) == 3, [r.event for r in requests]
    assert greetings  # configured once at the start
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    hold_outcome = {Owner.press_2: "declined", Owner.no_key: "no-answer", Owner.no_answer: "no-answer"}[owner]
    assert await segments(stack, call.call_sid) == [
        ("assistant", None, True),
        ("hold", hold_outcome, True),
        ("assistant", None, True),
    ]


async def test_a_caller_who_hangs_up_on_hold_stops_the_owners_phone(
    make_stack: StackFactory, rest: TwilioRest
) -> None:
    rest.timing = Timing(ring_s=30.0)  # the owner's phone keeps ringing
    stack = await transferring_stack(make_stack, rest)
    call = await ask_for_dana(stack, rest)
    (leg,) = await rest.wait_created(1, timeout=10)
    # The hold audio reaches the caller (chunks of half a second: media/hold.py).
    await call.wait_for("media_in", predicate=lambda event: event.detail["bytes"] == HOLD_CHUNK, timeout=10)
    services = stack.server.services
    live = services.registry.find(call.call_sid)
    assert live is not None and live.transfer.holding
    await call.hang_up()
    assert await leg.wait_ended(timeout=10) == "canceled"
    await services.registry.wait_idle(10)
    assert (await segments(stack, call.call_sid))[-1] == ("hold", "caller-hung-up", True)


async def test_transfer_webhooks_refuse_unsigned_requests_and_a_gone_call(
    make_stack: StackFactory, rest: TwilioRest
) -> None:
    stack = await transferring_stack(make_stack, rest)
    public = f"{stack.server.base_url}/voice/transfer/choice?parent=CA{'0' * 32}"
    form = {
        "CallSid": "CA" + "1" * 32,
        "AccountSid": ACCOUNT_SID,
        "From": "+15559870000",
        "To": OWNER_PHONE,
        "CallStatus": "in-progress",
        "Direction": "outbound-api",
        "Digits": "1",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(public, data=form) as response:
            assert response.status == 403  # unsigned
        signature = RequestValidator(AUTH_TOKEN).compute_signature(public, form)
        async with http.post(public, data=form, headers={"X-Twilio-Signature": signature}) as response:
            assert response.status == 200
            body = await response.text()
    assert "the caller has hung up" in body and "<Dial" not in body  # no live call: nobody to join


async def test_the_owner_takes_a_live_call_from_the_dashboard(
    make_stack: StackFactory, rest: TwilioRest
) -> None:
    joining = Script(
        replies=[
            Reply([Say("Hello, this is Dana's assistant.", audio=tone(500, 200))]),
            Reply([Say("Dana is joining, one moment.", audio=tone(520, 200))]),
        ]
    )
    stack = await transferring_stack(make_stack, rest, joining, admin_token=ADMIN_TOKEN)
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    async with DashboardClient(stack.server.base_url) as owner:
        await owner.log_in(ADMIN_TOKEN)
        page = await owner.get("/dashboard")
        assert f"/dashboard/calls/{call.call_sid}/take" in page[1]
        status, _, _ = await owner.post(f"/dashboard/calls/{call.call_sid}/take", {"csrf": csrf_of(page[1])})
        assert status == 303
    (leg,) = await rest.wait_created(1, timeout=10)
    await call.wait_for("conference_started", timeout=15)
    (whisper,) = [event.detail["text"] for event in leg.events if event.kind == "owner_heard"]
    assert "You asked to take this call from the dashboard." in whisper
    await call.wait_ended(timeout=10)
    await stack.server.services.registry.wait_idle(10)
    assert [kind for kind, _, _ in await segments(stack, call.call_sid)] == ["assistant", "hold", "owner"]
