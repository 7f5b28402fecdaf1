"""Who may open a call, and as whom, under attack, over real sockets on loopback.

The attacker holds what a tunnel's traffic inspector keeps: signed webhooks and the stream handshake
(both replayable: Twilio's signatures carry no nonce, and the handshake's covers a fixed URL). Each
test is bounded in count and time and waits on events, not sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from callassist.call import deps as deps_module
from callassist.call import registry as registry_module
from callassist.media import twilio as twilio_leg
from callassist.simulator.audio import tone
from callassist.store.admission import Admission, StreamAdmissions
from tests.fakes.realtime_server import FakeRealtimeServer, Reply, Say, Script
from tests.support.server import running_server
from tests.support.stack import StackFactory
from tests.support.twilio_stream import (
    ATTACKER,
    ATTESTED_A,
    CONNECTED,
    OWNER,
    OWNER_TOOL,
    UNCONFIRMED,
    call_row,
    call_sid,
    close_code_of,
    complete_call,
    greeting_script,
    issue_token,
    metric,
    noise,
    post_signed,
    received_audio,
    start_frame,
    stop_frame,
    stream,
    stream_parameters,
    token_of,
    tools_of,
    webhook,
)

# 1. Owner impersonation through a replayed webhook ---------------------------------------------


async def test_replayed_webhooks_and_handshakes_mint_no_token_and_never_claim_the_owner(
    tmp_path: Path,
) -> None:
    greeting = noise(300, 1)
    settings: dict[str, Any] = {"owner_phone": OWNER, "ring_owner_seconds": 0}
    owner_sid, attacker_sid, later_sid = call_sid(1), call_sid(2), call_sid(3)
    owner_webhook = webhook(owner_sid, OWNER, StirVerstat=ATTESTED_A)
    async with FakeRealtimeServer(greeting_script(greeting)) as fake:
        async with running_server(fake.base_url, tmp_path / "data", **settings) as server:
            # The owner calls their assistant, attested A. A tunnel's inspector keeps the webhook.
            owner_parameters = await stream_parameters(server, owner_sid, OWNER, StirVerstat=ATTESTED_A)
            owner_token = owner_parameters["token"]
            await complete_call(server, owner_sid, owner_parameters, greeting)
            owner_session = fake.sessions[-1]
            assert OWNER_TOOL in tools_of(owner_session)

            # Replaying the owner's webhook mints no new token: a polite goodbye, no <Stream>.
            status, body = await post_signed(server, "/voice/incoming", owner_webhook)
            assert status == 200 and token_of(body) is None
            assert [child.tag for child in ET.fromstring(body)] == ["Say", "Hangup"]
            assert "token" not in body

            # Replaying the owner's stream handshake is refused before accept (its token is claimed);
            # its `start` over another call's captured handshake is refused at `start`.
            sessions_before = len(fake.sessions)
            with pytest.raises(InvalidStatus):
                async with stream(server, owner_sid, owner_token):
                    pass
            assert len(fake.sessions) == sessions_before  # nothing was opened for it
            async with stream(server) as ws:
                await ws.send(CONNECTED)
                await ws.send(start_frame(owner_sid, owner_parameters))
                assert await close_code_of(ws) == 1008

            # The attacker's own call (their number, no attestation) claims the owner's number,
            # attestation A and a missed owner dial in customParameters: none of it is believed.
            attacker_token = await issue_token(server, attacker_sid, ATTACKER)
            forged = {
                **owner_parameters,
                "token": attacker_token,
                "callerNumber": OWNER,
                "stirVerstat": ATTESTED_A,
                "calledNumber": "+15550000000",
                "dialStatus": "no-answer",
            }
            async with stream(server, attacker_sid, attacker_token) as ws:
                await ws.send(CONNECTED)
                await ws.send(start_frame(attacker_sid, forged))
                assert await received_audio(ws, len(greeting)) == greeting
                attacker_session = fake.sessions[-1]
                await ws.send(stop_frame(attacker_sid))
            await server.services.registry.wait_idle(10)
            assert OWNER_TOOL not in tools_of(attacker_session)
            assert UNCONFIRMED in attacker_session.session_config["instructions"]  # nor a verified caller
            row = await call_row(server, attacker_sid)
            assert row is not None
            assert (row.caller_number, row.is_owner, row.called_number, row.dial_status) == (
                ATTACKER,
                False,
                "+15559870000",
                None,
            )
            # A third call's token (a caller the carrier vouches for), not used yet at the restart.
            later_token = await issue_token(server, later_sid, "+15551230000", StirVerstat=ATTESTED_A)

        # After a restart the store, not memory, decides: spent calls stay spent.
        async with running_server(fake.base_url, tmp_path / "data", **settings) as server:
            status, body = await post_signed(server, "/voice/incoming", owner_webhook)
            assert status == 200 and token_of(body) is None
            for sid, token in ((owner_sid, owner_token), (attacker_sid, attacker_token)):
                with pytest.raises(InvalidStatus):  # their handshakes: refused before accept
                    async with stream(server, sid, token):
                        pass
                async with stream(server) as ws:
                    await ws.send(CONNECTED)
                    await ws.send(start_frame(sid, {"token": token, "callerNumber": OWNER}))
                    assert await close_code_of(ws) == 1008
            # ... while a real call's token issued before the restart still opens its one stream.
            await complete_call(server, later_sid, {"token": later_token}, greeting)
            # Its attestation came from the record: its number counts as confirmed (not the owner).
            later_session = fake.sessions[-1]
            assert UNCONFIRMED not in later_session.session_config["instructions"]
            assert OWNER_TOOL not in tools_of(later_session)

        await fake.wait_until(lambda: all(s.closed for s in fake.sessions), timeout=5)
        configured_sessions = [s for s in fake.sessions if s.client_events]
        # The owner's call, the attacker's own call, the third call: nothing else reached the model.
        assert len(configured_sessions) == 3
        assert fake.validation_failures == []


async def test_a_call_another_process_claimed_first_is_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the issuing process admits its stream from memory and stores the claim meanwhile:
    when the store says another process's stream (a replayed handshake) got the record first, in
    the instant after this process read it unclaimed, the call ends."""
    greeting = noise(300, 1)
    sid = call_sid(4)
    async with (
        FakeRealtimeServer(greeting_script(greeting)) as fake,
        running_server(fake.base_url, tmp_path / "data") as server,
    ):
        parameters = await stream_parameters(server, sid, "+15551230000")
        runtime = server.services
        other_process = StreamAdmissions(runtime.database, runtime.stream_tokens)
        assert isinstance(await other_process.claim(sid, parameters["token"], "MZ-replay"), Admission)
        # This process read the record an instant before the other's UPDATE landed.
        monkeypatch.setattr(runtime.admissions, "_unclaimed_in_store", AsyncMock(return_value=True))
        refused = metric("callassist_streams_refused_total", reason="used")
        async with stream(server, sid, parameters["token"]) as ws:
            await ws.send(CONNECTED)
            await ws.send(start_frame(sid, parameters))
            assert await close_code_of(ws, within_s=10.0) is not None
        await server.services.registry.wait_idle(10)
        assert metric("callassist_streams_refused_total", reason="used") == refused + 1
        row = await call_row(server, sid)
        assert row is not None and row.outcome == "rejected"


# 2. OpenAI sessions of streams that end before a valid `start` ----------------------------------


async def test_streams_ending_before_a_valid_start_leave_no_openai_session_open(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(twilio_leg, "START_TIMEOUT_S", 0.5)
    greeting = noise(200, 2)
    stack = await make_stack(greeting_script(greeting))
    server = stack.server
    # One real call, so its token can be replayed.
    used_sid = call_sid(10)
    used_token = await issue_token(server, used_sid, "+15551230000")
    await complete_call(server, used_sid, {"token": used_token}, greeting)
    refused_before = metric("callassist_streams_refused_total", reason="token") + metric(
        "callassist_streams_refused_total", reason="used"
    )

    async def hang_up_at_once(ws: ClientConnection) -> None:
        pass

    async def connected_only(ws: ClientConnection) -> None:
        await ws.send(CONNECTED)

    async def stop_before_start(ws: ClientConnection) -> None:
        await ws.send(CONNECTED)
        await ws.send(stop_frame(call_sid(11)))

    async def forged_token(ws: ClientConnection) -> None:
        await ws.send(start_frame(call_sid(12), {"token": "1700000000.forged"}))
        assert await close_code_of(ws) == 1008

    async def reused_token(ws: ClientConnection) -> None:
        await ws.send(CONNECTED)
        await ws.send(start_frame(used_sid, {"token": used_token}))
        assert await close_code_of(ws) == 1008

    async def never_starts(ws: ClientConnection) -> None:
        await ws.send(CONNECTED)
        assert await close_code_of(ws) == 1008  # the short pre-start deadline

    async def garbage_then_gone(ws: ClientConnection) -> None:
        await ws.send('{"event": "start", "start": {"streamSid": "MZ", "callSid": "CA", "tracks": 5}}')
        await ws.send("not json")

    ways = [
        hang_up_at_once,
        connected_only,
        stop_before_start,
        forged_token,
        reused_token,
        never_starts,
        garbage_then_gone,
    ]

    async def one(index: int) -> None:
        async with stream(server) as ws:
            await ways[index % len(ways)](ws)

    loop = asyncio.get_running_loop()
    began = loop.time()
    for wave in range(4):  # 40 streams, 10 at a time (the pre-start pool's size)
        await asyncio.gather(*(one(wave * 10 + i) for i in range(10)))
    assert loop.time() - began < 5

    await server.services.registry.wait_no_streams(5)
    await stack.fake.wait_until(lambda: all(s.closed for s in stack.fake.sessions), timeout=5)
    assert len(stack.fake.sessions) > 1  # pre-start connections were opened ... and all were closed
    assert [s for s in stack.fake.sessions[1:] if s.client_events] == []  # none was configured
    assert server.services.registry.pre_start == 0 and len(server.services.registry) == 0
    assert server.services.deps is not None and server.services.deps.preconnects.held == 0
    refused_after = metric("callassist_streams_refused_total", reason="token") + metric(
        "callassist_streams_refused_total", reason="used"
    )
    assert refused_after - refused_before >= 10
    async with aiohttp.ClientSession() as http, http.get(server.base_url + "/metrics") as response:
        text = await response.text()
    assert "callassist_streams_pre_start 0.0" in text
    assert 'callassist_streams_refused_total{reason="no-start"}' in text


async def test_pre_start_streams_are_capped(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "EVICT_AFTER_S", 60.0)  # nobody is old enough to make room
    stack = await make_stack()
    server = stack.server
    full_before = metric("callassist_streams_refused_total", reason="pre-start-full")
    async with contextlib.AsyncExitStack() as streams:
        for _ in range(registry_module.PRE_START_LIMIT):
            ws = await streams.enter_async_context(stream(server))
            await ws.send(CONNECTED)
        assert server.services.registry.pre_start == registry_module.PRE_START_LIMIT
        for _ in range(5):
            with pytest.raises(InvalidStatus):
                async with stream(server):
                    pass
        assert metric("callassist_streams_refused_total", reason="pre-start-full") - full_before == 5
        assert sum(not s.closed for s in stack.fake.sessions) <= deps_module.PRECONNECT_LIMIT
        assert metric("callassist_realtime_preconnected") <= deps_module.PRECONNECT_LIMIT
    await server.services.registry.wait_no_streams(5)
    await stack.fake.wait_until(lambda: all(s.closed for s in stack.fake.sessions), timeout=5)
    assert server.services.registry.pre_start == 0
    assert server.services.deps is not None and server.services.deps.preconnects.held == 0


async def test_a_stream_beyond_the_preconnect_cap_connects_once_admitted(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    greeting = noise(300, 7)
    stack = await make_stack(greeting_script(greeting))
    deps = stack.server.services.deps
    assert deps is not None
    monkeypatch.setattr(deps.preconnects, "limit", 0)  # as if PRECONNECT_LIMIT squatters held them all
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    assert bytes(call.audio_received) == greeting
    await call.hang_up()
    await stack.server.services.registry.wait_no_streams(10)
    assert deps.preconnects.held == 0 and [s.closed for s in stack.fake.sessions] == [True]


# 3. Slot squatting -----------------------------------------------------------------------------


async def test_squatters_that_never_start_keep_no_real_caller_out(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "EVICT_AFTER_S", 0.0)  # a newcomer always makes room
    greeting, answer = noise(300, 3), noise(400, 4)
    stack = await make_stack(
        lambda: Script(replies=[Reply([Say("Hi", audio=greeting)]), Reply([Say("Ok", audio=answer)])]),
        max_calls=1,
    )
    server, registry = stack.server, stack.server.services.registry
    async with contextlib.AsyncExitStack() as squatters:
        # Captured handshakes of calls that rang while the lines were free (unclaimed tokens).
        captured = [(call_sid(0x500 + n), "") for n in range(registry.pre_start_limit + 15)]
        captured = [(sid, await issue_token(server, sid, "+15551230000")) for sid, _ in captured]

        async def squat(count: int) -> list[ClientConnection]:
            opened = []
            for _ in range(count):
                ws = await squatters.enter_async_context(stream(server, *captured.pop()))
                await ws.send(CONNECTED)  # ... and never `start`
                opened.append(ws)
            return opened

        first = await squat(registry.pre_start_limit)
        assert registry.pre_start == registry.pre_start_limit and len(registry) == 0
        call = await stack.simulator.place_call()  # the pool is full: the oldest squatter makes room
        await call.wait_until_quiet(quiet_ms=150, timeout=10)
        assert bytes(call.audio_received) == greeting
        assert len(registry) == 1
        second = await squat(15)  # more knock while the real caller talks
        assert len(registry) == 1 and registry.pre_start <= registry.pre_start_limit
        said = asyncio.get_running_loop().time()
        await call.say(tone(800, 300))
        await call.wait_until_quiet(quiet_ms=150, timeout=10, after=said)
        assert bytes(call.audio_received) == greeting + answer
        # The only slot is the caller's: a second caller is told the lines are busy.
        status, body = await post_signed(server, "/voice/incoming", webhook(call_sid(20), "+15551112222"))
        assert status == 200 and token_of(body) is None and "busy" in body
        await call.hang_up()
        await registry.wait_idle(10)
        # Every squatter was closed: evicted (1013) or at the pre-start deadline (1008).
        codes = await asyncio.gather(*(close_code_of(ws) for ws in first + second))
        assert set(codes) <= {1008, 1013} and 1013 in codes
    # The slot is free again for the next real caller.
    again = await stack.simulator.place_call()
    await again.wait_until_quiet(quiet_ms=150, timeout=10)
    assert bytes(again.audio_received) == greeting
    await again.hang_up()
    await registry.wait_idle(10)
    await stack.fake.wait_until(lambda: all(s.closed for s in stack.fake.sessions), timeout=5)


# 9. Malformed but JSON-valid frames ------------------------------------------------------------

MALFORMED = [
    # json.dumps can't write these: raw text, as an attacker (or a broken proxy) would.
    '{"event": "media", "media": {"track": "inbound", "timestamp": 1e400, "payload": "AAAA"}}',
    '{"event": "media", "media": {"track": "inbound", "timestamp": NaN, "payload": "AAAA"}}',
    '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", '
    '"mediaFormat": {"sampleRate": "fast"}, "customParameters": {}}}',
    '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "tracks": 5}}',
    '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", '
    '"mediaFormat": {"sampleRate": 1e400}}}',
    '{"event": "media", "media": {"track": "inbound", "timestamp": [1], "payload": "AAAA"}}',
]


async def test_malformed_json_valid_frames_are_skipped_before_and_after_start(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callassist")
    greeting = noise(300, 5)
    stack = await make_stack(greeting_script(greeting))
    server = stack.server
    sid = call_sid(30)
    token = await issue_token(server, sid, "+15551230000")
    async with stream(server, sid, token) as ws:
        await ws.send(CONNECTED)
        for frame in MALFORMED:  # before `start`: they raised inside the ASGI app
            await ws.send(frame)
        await ws.send(start_frame(sid, {"token": token}))
        for frame in MALFORMED:  # during the call: they ended it as "twilio-disconnected"
            await ws.send(frame)
        assert await received_audio(ws, len(greeting)) == greeting
        await ws.send(stop_frame(sid))
    await server.services.registry.wait_idle(10)
    row = await call_row(server, sid)
    assert row is not None and row.outcome == "caller-hung-up"
    bad = [r for r in caplog.records if "ignored a bad Media Stream frame" in r.getMessage()]
    assert 1 <= len(bad) <= twilio_leg._LOGGED_BAD_FRAMES
    ended = next(r.getMessage() for r in caplog.records if "call ended" in r.getMessage())
    assert f"bad frames {2 * len(MALFORMED)}" in ended
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# 10. A Twilio peer that stops reading ----------------------------------------------------------


async def test_a_twilio_peer_that_stops_reading_ends_the_call_cleanly(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(twilio_leg, "SEND_TIMEOUT_S", 1.0)
    greeting = noise(60_000, 6)  # a minute of audio, generated at once: far more than the buffers below
    stack = await make_stack(greeting_script(greeting), fake_options={"speed": 1000.0, "chunk_ms": 500})
    server = stack.server
    sid = call_sid(40)
    token = await issue_token(server, sid, "+15551230000")
    # Small kernel buffers on both ends (loopback's autotuning would otherwise absorb megabytes): the
    # server's connections inherit its listener's send buffer; the peer has a tiny receive window
    # and never reads, so the server's buffers fill and then its sends wait.
    for listener in server.server.servers[0].sockets:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    port = int(server.base_url.rsplit(":", 1)[1])
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    timeouts_before = metric("callassist_twilio_send_timeouts_total")
    async with stream(server, sid, token, sock=sock, max_queue=1, max_size=None) as ws:
        await ws.send(CONNECTED)
        await ws.send(start_frame(sid, {"token": token}))
        session = await stack.fake.wait_for_session(0)
        await session.wait_for_client_event("session.update")  # the call is live
        assert len(server.services.registry) == 1
        # The call ends on its own: recorded, and its OpenAI session closed.
        await server.services.registry.wait_idle(15)
        await stack.fake.wait_until(lambda: session.closed, timeout=5)
        row = await call_row(server, sid)
        assert row is not None and row.outcome == "twilio-unresponsive" and row.ended_at is not None
        assert metric("callassist_twilio_send_timeouts_total") - timeouts_before == 1
        ws.transport.abort()  # the peer goes away for good
