"""Warm transfer's rules, in process: the call with an in-memory leg, a scripted engine and a
stand-in for the owner's line (the socket-level flow with the simulated Twilio is in
tests/telephony/test_transfer.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from callassist.call import transfer as transfer_module
from callassist.call.deps import EndReason
from callassist.call.phase import Phase
from callassist.call.transfer import Pressed, TransferFailed
from callassist.engine.events import (
    AudioOut,
    EngineEvent,
    ResponseFinished,
    ResponseStarted,
    SpokenItem,
    ToolCall,
)
from callassist.media.hold import HOLD_ITEM
from callassist.realtime.config import CallContext
from callassist.store.db import Database
from callassist.store.models import CallSegmentRow
from tests.support.call_rig import B64, CALL_SID, CHUNK, Rig, call_rig, settings_for, speaks

TRANSFERRING = dict(
    transfer="urgent",
    owner_phone="+15550199",
    twilio_account_sid="AC" + "0" * 32,
    twilio_auth_token="token",
)


class OwnerLineStandIn:
    """The owner's line as the call sees it: records what it was asked, fails on demand."""

    def __init__(self) -> None:
        self.rung: list[tuple[str, str | None, str]] = []
        self.put_through_calls: list[str] = []
        self.hung_up: list[str] = []
        self.ring_fails = False
        self.put_through_fails = False
        self.ringing = asyncio.Event()
        self.hung_up_event = asyncio.Event()

    async def ring(self, call_sid: str, called_number: str | None, whisper: str) -> str:
        self.rung.append((call_sid, called_number, whisper))
        self.ringing.set()
        if self.ring_fails:
            raise TransferFailed("HTTP 503")
        return "CA" + "1" * 32

    async def put_through(self, call_sid: str) -> None:
        if self.put_through_fails:
            raise TransferFailed("HTTP 400 (error 21220)")
        self.put_through_calls.append(call_sid)

    async def hang_up(self, leg_sid: str) -> None:
        self.hung_up.append(leg_sid)
        self.hung_up_event.set()


@pytest.fixture
def line() -> OwnerLineStandIn:
    return OwnerLineStandIn()


@pytest.fixture
async def rig(database: Database, line: OwnerLineStandIn) -> AsyncIterator[Rig]:
    async with call_rig(database, settings=settings_for(**TRANSFERRING), owner_line=line) as rig:
        yield rig


def transfer_call(
    summary: str = "Alex Kim, about the roof leak, wants to move Thursday's visit", *, n: int = 1
) -> list[EngineEvent]:
    arguments = json.dumps({"summary": summary})
    call = ToolCall(f"it{n}", f"t{n}", "transfer_to_owner", arguments, True)
    return [
        ResponseStarted(f"rt{n}", None),
        ResponseFinished(f"rt{n}", None, "completed", tool_calls=(call,)),
    ]


async def on_hold(rig: Rig, line: OwnerLineStandIn) -> None:
    """The model called transfer_to_owner and said its line; the line was heard: the caller holds."""
    await rig.greeted()
    rig.engine.emit(*transfer_call())
    (output,) = await rig.until("add_tool_output")
    assert json.loads(output[1])["ok"] is True
    (request,) = await rig.until("request_response")
    rig.engine.emit(*speaks("rl", "il", "I'm trying Dana now.", request=request[0]))
    await rig.settle()
    rig.leg.played()
    await rig.leg.wait_for_chunk(HOLD_ITEM)
    assert rig.call.phase is Phase.on_hold


async def segments(rig: Rig, database: Database) -> list[tuple[int, str, str | None, bool]]:
    assert await rig.writer.flushed(3)
    async with database.session() as session:
        rows = (
            await session.execute(select(CallSegmentRow).where(CallSegmentRow.call_sid == CALL_SID))
        ).scalars()
        return [
            (row.seq, row.kind, row.outcome, row.ended_at is not None)
            for row in sorted(rows, key=lambda r: r.seq)
        ]


async def test_the_tool_is_offered_with_its_rules_only_where_a_transfer_can_happen(
    database: Database,
) -> None:
    async with call_rig(database) as plain:
        setup = plain.engine.setups[0]
        assert "transfer_to_owner" not in {tool["name"] for tool in setup.tools}
        assert "cannot put the caller through to Dana" in setup.instructions
    async with call_rig(
        database, settings=settings_for(**TRANSFERRING), owner_line=OwnerLineStandIn()
    ) as rig:
        setup = rig.engine.setups[0]
        (declared,) = [tool for tool in setup.tools if tool["name"] == "transfer_to_owner"]
        assert declared["parameters"]["required"] == ["summary"]
        assert "only when it is urgent" in setup.instructions
        assert "cannot put the caller through" not in setup.instructions


async def test_the_owner_is_rung_at_once_and_the_caller_holds_after_the_line_is_heard(
    rig: Rig, line: OwnerLineStandIn
) -> None:
    await rig.greeted()
    rig.engine.emit(*transfer_call("Alex Kim <b>about</b> the roof"))
    await rig.until("add_tool_output")
    async with asyncio.timeout(2):
        await line.ringing.wait()
    ((sid, _, whisper),) = line.rung
    assert sid == CALL_SID
    assert whisper == (  # the model's summary is data: no markup reaches <Say>
        "Call from 1 5 5 5 0 1 0 0. Alex Kim b about /b the roof. "
        "Press 1 to take the call, or 2 to let the assistant take a message."
    )
    assert rig.call.phase is Phase.live  # the assistant's line comes first
    (request,) = await rig.until("request_response")
    rig.engine.emit(*speaks("rl", "il", "I'm trying Dana now.", request=request[0]))
    await rig.settle()
    assert rig.call.phase is Phase.live  # queued, not yet heard
    rig.leg.played()
    await rig.leg.wait_for_chunk(HOLD_ITEM)
    assert rig.call.phase is Phase.on_hold
    forwarded = len(rig.engine.audio)
    rig.leg.say(CHUNK)
    rig.leg.press("5")
    await rig.leg.handled()
    assert len(rig.engine.audio) == forwarded  # on hold: the model doesn't hear the caller


async def test_the_owner_pressing_1_puts_the_caller_through_and_ends_the_assistants_part(
    rig: Rig, line: OwnerLineStandIn, database: Database
) -> None:
    await on_hold(rig, line)
    assert await rig.call.transfer.owner_pressed("1") is Pressed.connected
    assert line.put_through_calls == [CALL_SID]
    # Twilio retries a webhook that was slow: the same answer, and the call is not moved twice.
    assert await rig.call.transfer.owner_pressed("1") is Pressed.connected
    assert line.put_through_calls == [CALL_SID]
    assert await asyncio.wait_for(rig.run, 5) is EndReason.transferred
    assert line.hung_up == []
    assert await segments(rig, database) == [
        (1, "assistant", None, True),
        (2, "hold", "connected", True),
        (3, "owner", None, False),  # ended when Twilio says the conference is over
    ]


@pytest.mark.parametrize(
    ("how", "said"),
    [("declined", "can't take the call"), ("no-answer", "didn't answer"), ("busy", "is on another call")],
)
async def test_a_transfer_that_fails_brings_the_caller_back_to_the_same_conversation(
    rig: Rig, line: OwnerLineStandIn, database: Database, how: str, said: str
) -> None:
    await on_hold(rig, line)
    if how == "declined":
        assert await rig.call.transfer.owner_pressed("2") is Pressed.declined
    else:
        rig.call.transfer.owner_leg_ended(how)
    notes = await rig.until("add_note")
    assert said in notes[-1][0] and "offer to take a message" in notes[-1][0]
    await rig.until("request_response", 2)
    assert rig.call.phase is Phase.live
    assert not rig.leg.audible  # the hold audio was cleared
    assert rig.leg.counts.barge_ins == 0  # which is no barge-in
    assert len(rig.engine.setups) == 1  # same session: no replay, no second greeting
    assert rig.engine.requests("hold") == [(True,), (False,)]  # the engine held for the hold, then back
    forwarded = len(rig.engine.audio)
    rig.leg.say(CHUNK)
    await rig.leg.handled()
    assert len(rig.engine.audio) == forwarded + 1  # the model hears the caller again
    assert await segments(rig, database) == [
        (1, "assistant", None, True),
        (2, "hold", how, True),
        (3, "assistant", None, False),
    ]


async def test_a_ring_twilio_refused_brings_the_caller_back(rig: Rig, line: OwnerLineStandIn) -> None:
    line.ring_fails = True
    await rig.greeted()
    rig.engine.emit(*transfer_call())
    (request,) = await rig.until("request_response")
    rig.engine.emit(*speaks("rl", "il", "I'm trying Dana now.", request=request[0]))
    await rig.settle()
    rig.leg.played()
    notes = await rig.until("add_note")
    assert "couldn't be reached" in notes[-1][0]
    assert rig.call.phase is Phase.live


async def test_the_caller_is_not_kept_on_hold_past_the_ring_limit(
    rig: Rig, line: OwnerLineStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer_module, "RING_LIMIT_S", 0.2)
    await on_hold(rig, line)
    notes = await rig.until("add_note")
    assert "didn't answer" in notes[-1][0]
    async with asyncio.timeout(2):
        await line.hung_up_event.wait()  # the owner's phone stops ringing


async def test_a_caller_who_hangs_up_on_hold_stops_the_owners_phone(
    rig: Rig, line: OwnerLineStandIn, database: Database
) -> None:
    await on_hold(rig, line)
    rig.leg.hang_up()
    assert await asyncio.wait_for(rig.run, 5) is EndReason.caller_hung_up
    async with asyncio.timeout(2):
        await line.hung_up_event.wait()
    assert await rig.call.transfer.owner_pressed("1") is Pressed.gone  # too late: nobody to put through
    assert line.put_through_calls == []
    assert (await segments(rig, database))[-1] == (2, "hold", "caller-hung-up", True)


async def test_a_caller_gone_before_the_owner_pressed_1_is_not_put_through(
    rig: Rig, line: OwnerLineStandIn
) -> None:
    await on_hold(rig, line)
    line.put_through_fails = True
    assert await rig.call.transfer.owner_pressed("1") is Pressed.back
    notes = await rig.until("add_note")
    assert "could not be put through" in notes[-1][0]


@pytest.mark.parametrize("policy", ["always", "urgent"])
async def test_zero_on_the_keypad_rings_the_owner_or_asks_the_model(
    database: Database, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    from callassist.call import conversation

    monkeypatch.setattr(conversation, "KEY_PAUSE_S", 0.05)
    line = OwnerLineStandIn()
    settings = settings_for(**{**TRANSFERRING, "transfer": policy})
    async with call_rig(database, settings=settings, owner_line=line) as rig:
        await rig.greeted()
        rig.leg.press("0")
        (note,) = await rig.until("add_note")
        await rig.until("request_response")
        if policy == "always":
            assert "you are ringing Dana now" in note[0]
            async with asyncio.timeout(2):
                await line.ringing.wait()
            assert "pressed 0 to reach you" in line.rung[0][2]
        else:  # only when urgent, insisting or a VIP: the model judges by its Transfer rule
            assert "Follow your Transfer rule" in note[0]
            assert line.rung == []


async def test_a_caller_cant_keep_ringing_the_owner(rig: Rig, line: OwnerLineStandIn) -> None:
    await on_hold(rig, line)
    rig.call.transfer.owner_leg_ended("no-answer")
    await rig.until("add_note")
    assert rig.call.transfer.attempts == 1
    rig.call.transfer.attempts = transfer_module.MAX_ATTEMPTS  # as if tried that many times
    rig.engine.emit(*transfer_call(n=2))
    outputs = await rig.until("add_tool_output", 2)
    assert "don't try again" in json.loads(outputs[-1][1])["error"]
    assert len(line.rung) == 1


async def test_a_transfer_from_an_interrupted_response_rings_nobody(rig: Rig, line: OwnerLineStandIn) -> None:
    await rig.greeted()
    arguments = json.dumps({"summary": "Alex about the roof"})
    rig.engine.emit(
        ResponseStarted("rt", None),
        AudioOut("rt", "it0", B64),
        ResponseFinished(
            "rt",
            None,
            "cancelled",
            spoken=(SpokenItem("it0", "Let me", True),),
            tool_calls=(ToolCall("it", "t1", "transfer_to_owner", arguments, False),),
        ),
    )
    await rig.settle()
    assert line.rung == []


async def test_a_confirmed_vip_caller_is_named_so_to_the_model(database: Database) -> None:
    async def memory(number: str) -> tuple[str | None, list[str], bool]:
        return "Alex Kim", [], True

    settings = settings_for(**TRANSFERRING)
    for verified, told in ((True, True), (False, False)):  # caller ID can be faked: only when attested
        context = CallContext(caller_number="+15550100", caller_verified=verified)
        async with call_rig(
            database, settings=settings, owner_line=OwnerLineStandIn(), context=context, load_memory=memory
        ) as rig:
            assert ("Dana marked this caller as a VIP contact." in rig.engine.setups[0].instructions) is told


async def test_the_owner_taking_the_call_from_the_dashboard_rings_them_and_tells_the_caller(
    rig: Rig, line: OwnerLineStandIn
) -> None:
    await rig.greeted()
    assert rig.call.owner_takes_call() is None
    (note,) = await rig.until("add_note")
    assert "Dana wants to take this call" in note[0]
    await rig.until("request_response")
    async with asyncio.timeout(2):
        await line.ringing.wait()
    assert "You asked to take this call from the dashboard." in line.rung[0][2]
    assert rig.call.owner_takes_call() is not None  # already ringing: not twice
