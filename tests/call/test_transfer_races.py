"""Warm transfer's races and Twilio's own behaviour, in process (found by a review of the first
version, each failing on it): Twilio closing the caller's stream before answering the update, the
ring limit during a put-through, goodbyes during the hold, `canceled` not ending an answered leg, a
caller hanging up while the ring request is in flight."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from callassist.call import transfer as transfer_module
from callassist.call.deps import EndReason
from callassist.call.transfer import Pressed
from callassist.engine.events import AudioOut, ResponseFinished, ResponseStarted, SpokenItem, ToolCall
from callassist.media.hold import HOLD_ITEM
from callassist.store.db import Database
from callassist.telephony import owner_line as owner_line_module
from tests.call.test_transfer_core import TRANSFERRING, OwnerLineStandIn, on_hold
from tests.support.call_rig import B64, Rig, call_rig, settings_for, speaks


class TwilioLikeLine(OwnerLineStandIn):
    """put_through as Twilio does it: the caller's stream gets `stop` (the redirect abandons
    <Connect><Stream>) and the REST answer arrives `latency_s` later."""

    def __init__(self) -> None:
        super().__init__()
        self.rig: Rig | None = None
        self.latency_s = 0.1
        self.stop_stream = True

    async def put_through(self, call_sid: str) -> None:
        assert self.rig is not None
        if self.stop_stream:
            self.rig.leg.hang_up()  # Twilio's `stop` on the caller's Media Stream
        await asyncio.sleep(self.latency_s)  # ... before the update's HTTP answer is read
        self.put_through_calls.append(call_sid)


@pytest.fixture
def line() -> TwilioLikeLine:
    return TwilioLikeLine()


@pytest.fixture
async def rig(database: Database, line: TwilioLikeLine) -> AsyncIterator[Rig]:
    async with call_rig(database, settings=settings_for(**TRANSFERRING), owner_line=line) as rig:
        line.rig = rig
        yield rig


async def test_the_stream_stopping_before_the_updates_answer_still_puts_the_caller_through(
    rig: Rig, line: TwilioLikeLine
) -> None:
    """Twilio stops the caller's stream as part of the redirect; if that `stop` is read before the
    REST answer, the call's cleanup takes it for a hang-up: the owner's leg is hung up and the
    owner told "the caller has hung up", while the caller sits alone in the conference."""
    await on_hold(rig, line)
    put_through = await rig.call.transfer.owner_pressed("1")
    assert put_through is Pressed.connected  # the owner must get the conference TwiML: the caller is in it
    assert line.hung_up == []  # the owner's (answered) leg must not be hung up
    assert await asyncio.wait_for(rig.run, 5) is EndReason.transferred


async def test_the_ring_limit_passing_during_put_through_does_not_strand_the_caller(
    rig: Rig, line: TwilioLikeLine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner presses 1 just before RING_LIMIT_S; the REST update takes a moment. The limit
    fires meanwhile: the assistant is told the owner didn't answer, the owner's leg is hung up, and
    when the update succeeds owner_pressed says False: the caller was moved to a conference the
    owner never joins (Twilio's hold music, forever)."""
    monkeypatch.setattr(transfer_module, "RING_LIMIT_S", 0.3)
    line.stop_stream = False
    line.latency_s = 0.8
    await on_hold(rig, line)
    put_through = await rig.call.transfer.owner_pressed("1")
    assert line.put_through_calls  # Twilio moved the caller's call
    assert put_through is Pressed.connected  # so the owner must be sent to the conference too
    assert line.hung_up == []


async def test_a_goodbye_during_the_hold_is_not_chopped_by_hold_audio(rig: Rig, line: TwilioLikeLine) -> None:
    """Server shutdown (or the time limit) during a hold: the goodbye is said while play_hold keeps
    queueing chime chunks on the same leg, interleaved with (and after) the goodbye."""
    await on_hold(rig, line)
    winding = asyncio.create_task(rig.call.wind_down(6.0))
    requests = await rig.until("request_response", 2)
    rig.engine.emit(*speaks("rg", "ig", "Sorry, we have to close the line.", request=requests[-1][0]))
    await rig.settle()
    await asyncio.sleep(1.2)  # a negative needs time: two hold chunks' worth (media/hold.py)
    items = [item for item, _ in rig.leg.played_chunks]
    first_goodbye = items.index("ig")
    assert HOLD_ITEM not in items[first_goodbye:], items[first_goodbye - 2 :]
    rig.leg.played()
    winding.cancel()


async def test_end_call_and_transfer_in_one_response_leave_no_owner_ringing(
    rig: Rig, line: TwilioLikeLine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model says goodbye and calls transfer_to_owner and end_call in the same response. end_call
    moves the call to winding-down; once ANNOUNCE_S passed, the transfer's hold tries winding-down
    -> on-hold, which the lifecycle refuses (RuntimeError in the transfer task): the decision is
    settled as "caller hung up" though the caller is still there, and nobody hangs the owner's
    ringing leg up (call_ending sees a decided transfer)."""
    monkeypatch.setattr(transfer_module, "ANNOUNCE_S", 0.2)
    await rig.greeted()
    transfer = ToolCall(
        "it1", "t1", "transfer_to_owner", json.dumps({"summary": "Alex about the roof"}), True
    )
    ending = ToolCall("it2", "t2", "end_call", json.dumps({"reason": "done"}), True)
    rig.engine.emit(
        ResponseStarted("rt", None),
        AudioOut("rt", "ib", B64),
        AudioOut("rt", "ib", B64),
        ResponseFinished(
            "rt",
            None,
            "completed",
            spoken=(SpokenItem("ib", "Goodbye!", True),),
            tool_calls=(transfer, ending),
        ),
    )
    async with asyncio.timeout(2):
        await line.ringing.wait()
    await rig.until("add_tool_output", 2)
    rig.leg.played()
    reason = await asyncio.wait_for(rig.run, 25)
    assert reason is EndReason.assistant_hung_up
    async with asyncio.timeout(3):
        await line.hung_up_event.wait()  # the owner's phone doesn't ring on for a call that is over


async def test_hang_up_of_an_answered_owner_leg_uses_completed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twilio's Calls resource: Status=canceled hangs up a queued or ringing call and leaves one in
    progress alone, *without an error* (the simulator, outbound.py, models the same). hang_up only
    falls back to `completed` on an exception, so an owner listening to the whisper is never hung
    up (the ring limit, a caller who hung up, the server stopping)."""
    statuses: list[str] = []

    class Calls:
        async def update_async(self, **values: Any) -> None:
            statuses.append(values["status"])  # 200 either way, as Twilio answers

    class Client:
        def calls(self, sid: str) -> Calls:
            return Calls()

    settings = settings_for(**TRANSFERRING)
    line = owner_line_module.TwilioOwnerLine(settings)
    monkeypatch.setattr(line, "_twilio", lambda: Client())
    await line.hang_up("CA" + "1" * 32)
    assert "completed" in statuses, statuses


class SlowRingLine(OwnerLineStandIn):
    """Twilio has created the owner's call (the phone rings) before its HTTP answer is read."""

    async def ring(self, call_sid: str, called_number: str | None, whisper: str) -> str:
        self.rung.append((call_sid, called_number, whisper))
        self.ringing.set()
        await asyncio.sleep(0.5)  # the create's answer is on its way
        return "CA" + "2" * 32


async def test_a_caller_who_hangs_up_while_the_ring_request_is_in_flight_stops_the_owners_phone(
    database: Database,
) -> None:
    """_run's `finally` cancels the ring task when the caller hangs up before Twilio answered the
    create; the leg's sid is never learned, so nothing hangs the owner's phone up (call_ending only
    hangs up a known sid). The ring should be let finish, then its leg hung up."""
    line = SlowRingLine()
    async with call_rig(database, settings=settings_for(**TRANSFERRING), owner_line=line) as rig:
        await rig.greeted()
        rig.engine.emit(
            ResponseStarted("rt", None),
            ResponseFinished(
                "rt",
                None,
                "completed",
                tool_calls=(
                    ToolCall("it1", "t1", "transfer_to_owner", json.dumps({"summary": "Alex"}), True),
                ),
            ),
        )
        async with asyncio.timeout(2):
            await line.ringing.wait()
        rig.leg.hang_up()
        assert await asyncio.wait_for(rig.run, 5) is EndReason.caller_hung_up
        async with asyncio.timeout(3):
            await line.hung_up_event.wait()
        assert line.hung_up == ["CA" + "2" * 32]
