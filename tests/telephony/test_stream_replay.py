"""Replayed Media Stream handshakes (issue 9.1, and the pre-start pool): each call's `<Stream url>`
carries its CallSid and token in the path, Twilio signs that URL, and the server checks signature,
token and claim before accept(). A captured handshake is refused before accept once its call's
stream was opened, and never reaches OpenAI; a flood of them keeps no real caller out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from callassist.simulator import CallerSimulator
from tests.fakes.realtime_server import FakeRealtimeServer
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, RunningServer, running_server
from tests.support.twilio_stream import (
    CONNECTED,
    call_sid,
    close_code_of,
    complete_call,
    greeting_script,
    issue_token,
    metric,
    noise,
    received_audio,
    start_frame,
    stop_frame,
    stream,
    stream_url,
    twilio_signature,
)


def refused(reason: str) -> float:
    return metric("callassist_webhooks_rejected_total", endpoint="stream", reason=reason)


async def handshake_status(url: str, signature: str | None = None) -> int | None:
    """The HTTP status a handshake is refused with (None: it was accepted, then closed by us).
    Signed over `url` itself unless another (captured) signature is given."""
    if signature is None:
        signature = twilio_signature(url)
    try:
        async with connect(url, additional_headers={"X-Twilio-Signature": signature}, open_timeout=5):
            return None
    except InvalidStatus as exc:
        return exc.response.status_code


async def real_call(server: RunningServer, sid: str, greeting: bytes) -> str:
    """A call as Twilio makes it; its stream's URL (what a tunnel's inspector keeps)."""
    token = await issue_token(server, sid, "+15551230000")
    await complete_call(server, sid, {"token": token}, greeting)
    return stream_url(server, sid, token)


async def test_replayed_or_foreign_handshakes_are_refused_before_accept(tmp_path: Path) -> None:
    greeting = noise(300, 21)
    async with (
        FakeRealtimeServer(greeting_script(greeting)) as fake,
        running_server(fake.base_url, tmp_path / "data") as server,
    ):
        sid = call_sid(0x21)
        url = await real_call(server, sid, greeting)
        sessions = len(fake.sessions)
        used, bad_token = refused("token-used"), refused("token-token")

        # The captured handshake of a call whose stream was opened: refused, nothing opened.
        assert await handshake_status(url) == 403
        assert refused("token-used") == used + 1
        # A path token that is not this call's (another call's, or made up), even signed correctly.
        other = call_sid(0x22)
        other_token = await issue_token(server, other, "+15551230000")
        for wrong in (stream_url(server, sid, other_token), stream_url(server, other, "1700000000.forged")):
            assert await handshake_status(wrong) == 403
        assert refused("token-token") == bad_token + 2
        # A signature over another call's URL, or the old fixed URL's, does not open this one.
        mine = stream_url(server, other, other_token)
        assert await handshake_status(mine, twilio_signature(url)) == 403
        fixed = server.settings.stream_url()
        assert await handshake_status(mine, twilio_signature(fixed)) == 403
        assert await handshake_status(fixed) == 403
        assert len(fake.sessions) == sessions  # no OpenAI connection for any of them

        # One stream per call: while the call's stream waits for `start`, its replay is refused.
        has_stream = refused("call-has-stream")
        async with stream(server, other, other_token) as first:
            await first.send(CONNECTED)
            assert await handshake_status(mine) == 403
            assert refused("call-has-stream") == has_stream + 1
            await first.send(start_frame(other, {"token": other_token}))
            assert await received_audio(first, len(greeting)) == greeting
            await first.send(stop_frame(other))
        await server.services.registry.wait_idle(10)
        assert await handshake_status(mine) == 403
        await fake.wait_until(lambda: all(s.closed for s in fake.sessions), timeout=5)
        assert len(fake.sessions) == sessions + 1  # the second real call's, nothing else


async def test_a_flood_of_replayed_handshakes_keeps_no_real_caller_out(tmp_path: Path) -> None:
    greeting = noise(300, 22)
    async with (
        FakeRealtimeServer(greeting_script(greeting)) as fake,
        running_server(fake.base_url, tmp_path / "data") as server,
    ):
        captured = await real_call(server, call_sid(0x31), greeting)
        signature = twilio_signature(captured)
        sessions = len(fake.sessions)
        statuses: list[int | None] = []

        async def replay() -> None:
            with contextlib.suppress(OSError, TimeoutError):
                statuses.append(await handshake_status(captured, signature))

        async def flood() -> None:
            tasks: set[asyncio.Task[None]] = set()
            end = time.monotonic() + 3
            while time.monotonic() < end and len(tasks) < 300:  # bounded: 3 s, 300 handshakes
                tasks.add(asyncio.create_task(replay()))
                await asyncio.sleep(1 / 100)
            await asyncio.gather(*tasks)

        flooding = asyncio.create_task(flood())
        simulator = CallerSimulator(server.base_url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID)
        served = 0
        for _ in range(3):  # real callers during the flood
            await asyncio.sleep(0.3)
            call = await simulator.place_call()
            await call.wait_until_quiet(quiet_ms=150, timeout=10)
            served += bytes(call.audio_received) == greeting
            await call.hang_up()
        await flooding
        await server.services.registry.wait_no_streams(10)
        assert served == 3
        assert len(statuses) >= 200 and set(statuses) == {403}
        # Only the real calls reached OpenAI: no replay was accepted, none pre-connected.
        await fake.wait_until(lambda: all(s.closed for s in fake.sessions), timeout=5)
        assert len(fake.sessions) == sessions + 3
        assert server.services.registry.pre_start == 0


async def test_simultaneous_handshakes_of_one_call_open_one_stream(tmp_path: Path) -> None:
    """Two handshakes of one call in the same instant: the second is refused before accept, and the
    first's `start` claims the call once."""
    greeting = noise(300, 23)
    async with (
        FakeRealtimeServer(greeting_script(greeting)) as fake,
        running_server(fake.base_url, tmp_path / "data") as server,
    ):
        sid = call_sid(0x41)
        token = await issue_token(server, sid, "+15551230000")
        url = stream_url(server, sid, token)
        statuses = await asyncio.gather(*(handshake_status(url) for _ in range(5)))
        # Those accepted (the first, before it closed for want of `start`) hold no slot or session.
        assert statuses.count(None) >= 1 and set(statuses) <= {None, 403}
        await server.services.registry.wait_no_streams(10)
        await complete_call(server, sid, {"token": token}, greeting)
        with pytest.raises(InvalidStatus):
            async with stream(server, sid, token):
                pass
        async with stream(server) as ws:  # its `start` over another call's handshake
            await ws.send(CONNECTED)
            await ws.send(start_frame(sid, {"token": token}))
            assert await close_code_of(ws) == 1008
