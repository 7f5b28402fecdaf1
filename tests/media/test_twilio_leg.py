"""TwilioMediaStream's send watchdog: a Twilio that stops reading never hangs the call.

The socket here is a stand-in for Starlette's WebSocket whose sends never complete (a peer that
stopped reading, its buffers full); tests/call/test_admission.py checks the same over real sockets.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.websockets import WebSocketState

from callassist.media import twilio as twilio_leg
from callassist.media.leg import LegEnd
from callassist.media.twilio import TwilioMediaStream
from callassist.telephony.media_stream import Outbound


class StuckSocket:
    """Accepts nothing: every send waits for ever."""

    application_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.sends = 0

    async def send_text(self, text: str) -> None:
        self.sends += 1
        await asyncio.Event().wait()

    async def close(self, code: int = 1000) -> None:
        await asyncio.Event().wait()  # the close frame waits behind the full buffer too

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.fixture
def leg(monkeypatch: pytest.MonkeyPatch) -> TwilioMediaStream:
    monkeypatch.setattr(twilio_leg, "SEND_TIMEOUT_S", 0.2)
    stream = TwilioMediaStream(StuckSocket())  # type: ignore[arg-type]
    stream._out = Outbound("MZ1")  # as after `start`
    return stream


async def test_a_stuck_send_loses_the_leg_and_frees_its_task(leg: TwilioMediaStream) -> None:
    sending = asyncio.create_task(leg.play("item", "AAAA", 3))
    assert await asyncio.wait_for(leg.wait_lost(), 2) is LegEnd.unresponsive
    await asyncio.wait_for(sending, 1)  # returned, not cancelled: the task carries on
    assert not sending.cancelled()
    await leg.play("item", "AAAA", 3)  # nothing more is sent to a lost leg
    assert leg._socket.sends == 1  # type: ignore[attr-defined]


async def test_a_send_stuck_when_the_line_is_closed_is_still_ended(leg: TwilioMediaStream) -> None:
    sending = asyncio.create_task(leg.play("item", "AAAA", 3))
    await asyncio.sleep(0)  # the send is under way
    closing = asyncio.create_task(leg.close())
    await asyncio.wait_for(sending, 2)  # the watchdog still ends it
    closing.cancel()


class RecordingSocket:
    """Takes every send at once and keeps it."""

    application_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000) -> None:
        return None


async def test_marks_go_every_100_ms_of_audio_and_the_last_chunks_get_theirs_when_drained() -> None:
    socket = RecordingSocket()
    stream = TwilioMediaStream(socket)  # type: ignore[arg-type]
    stream._out = Outbound("MZ1")
    for _ in range(12):  # 12 chunks of 20 ms
        await stream.play("item_a", "AAAA", 160)
    marks = [message["mark"]["name"] for message in socket.sent if message["event"] == "mark"]
    # The first chunk of the item, then one per 100 ms: chunks 1, 6, 11 (not a mark per chunk).
    assert marks == ["1", "6", "11"]
    for name in marks:
        stream._tracker.marked(name)
    assert stream.audible  # chunk 12 is not confirmed yet
    waiting = asyncio.create_task(stream.wait_drained(2.0))
    await asyncio.sleep(0)  # the tail's mark is sent first
    assert socket.sent[-1] == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "12"}}
    stream._tracker.marked("12")  # Twilio echoes it once played
    assert await waiting
    assert not stream.audible
