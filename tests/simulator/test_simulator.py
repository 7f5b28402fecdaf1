"""The caller simulator against a throwaway Twilio-facing harness (a stand-in for the callassist server).

The harness is written independently with aiohttp (the simulator uses `websockets`), validates every Twilio
signature with twilio's own RequestValidator, checks message shapes and pacing, and drives media, marks and
clears to check the playback model: mark echo timing, clear semantics and byte-exact heard audio.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import re
import shutil
import socket
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from rich.console import Console
from twilio.request_validator import RequestValidator

from callassist.simulator.audio import FRAME_BYTES, ULAW_SILENCE, frames, silence, speech_frames, tone
from callassist.simulator.call import SimulatedCall
from callassist.simulator.caller import CallerSimulator
from callassist.simulator.errors import CallEndedError, SimulatorError, StreamRejected, WebhookError
from callassist.simulator.playback import Playback
from callassist.simulator.report import describe_ending, run_call
from callassist.simulator.twiml import (
    Connect,
    Dial,
    Gather,
    Hangup,
    Number,
    Pause,
    Redirect,
    Reject,
    Say,
    Stream,
    TwimlError,
    Unsupported,
    parse_twiml,
)

PUBLIC_BASE = "https://callassist.example.test"
STREAM_URL = "wss://callassist.example.test/voice/stream"
AUTH_TOKEN = "harness-auth-token"
ACCOUNT_SID = "AC" + "1" * 32
OWNER = "+15551112222"
SID_RE = re.compile(r"^(CA|MZ)[0-9a-f]{32}$")
SILENCE_FRAME = bytes([ULAW_SILENCE]) * FRAME_BYTES
TIMING_TOLERANCE_S = 0.020  # the brief: mark echoes within 20 ms of when their audio finished
STARTED_STOPPED = ["stream-started", "stream-stopped"]


def connect_twiml(
    parameters: dict[str, str], *, action: str | None = None, status_callback: str | None = None
) -> str:
    params = "".join(f'<Parameter name="{k}" value="{v}"/>' for k, v in parameters.items())
    connect = f'<Connect action="{action}">' if action else "<Connect>"
    status = f' statusCallback="{status_callback}"' if status_callback else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{connect}<Stream url="{STREAM_URL}"{status}>'
        f"{params}</Stream></Connect><Hangup/></Response>"
    )


@dataclass
class Received:
    t: float
    data: dict[str, Any]


class StreamSession:
    """One media stream as the server sees it: every message Twilio sent, with its arrival time."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[Received] = []
        self.problems: list[str] = []
        self.changed = asyncio.Condition()
        self.closed = asyncio.Event()
        self.stream_sid = ""

    async def record(self, t: float, data: dict[str, Any]) -> None:
        async with self.changed:
            self.messages.append(Received(t, data))
            self.changed.notify_all()

    def of(self, event: str, predicate: Callable[[dict[str, Any]], bool] | None = None) -> list[Received]:
        return [
            m
            for m in self.messages
            if m.data.get("event") == event and (predicate is None or predicate(m.data))
        ]

    async def wait(
        self,
        event: str,
        *,
        count: int = 1,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[Received]:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.of(event, predicate)) >= count)
        return self.of(event, predicate)[:count]

    async def send(self, message: dict[str, Any]) -> float:
        sent_at = time.monotonic()
        await self.ws.send_str(json.dumps(message))
        return sent_at

    async def send_audio(self, audio: bytes, chunk: int = FRAME_BYTES) -> float:
        """Send audio as media messages (all at once: Twilio buffers); returns when the first was sent."""
        first = time.monotonic()
        for start in range(0, len(audio), chunk):
            payload = base64.b64encode(audio[start : start + chunk]).decode()
            await self.ws.send_str(
                json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})
            )
        return first

    async def send_mark(self, name: str) -> float:
        return await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def send_clear(self) -> float:
        return await self.send({"event": "clear", "streamSid": self.stream_sid})

    def caller_audio(self) -> bytes:
        return b"".join(base64.b64decode(m.data["media"]["payload"]) for m in self.of("media"))


@dataclass
class Harness:
    """A minimal Twilio-facing server: webhook → (Dial →) Connect/Stream, plus scripted stream behaviour."""

    dial_first: bool = False
    reject_stream: bool = False
    close_on_accept: int | None = None  # close code sent right after accepting the WebSocket
    close_after_start: bool = False
    documents: dict[str, str] = field(default_factory=dict)  # path -> TwiML, replacing the default flow
    greeting: bytes | None = None  # sent as soon as `start` arrives, followed by mark "greeting"
    reply: bytes | None = None  # sent after the caller speaks then pauses 200 ms, followed by mark "reply"
    connect_action: str | None = None  # <Connect action>
    status_callback: str | None = None  # <Stream statusCallback>
    # Per reply: (arrival of the caller's last non-silent frame, reply sent): the harness's turn latency.
    turns: list[tuple[float, float]] = field(default_factory=list)
    statuses: list[dict[str, str]] = field(default_factory=list)  # statusCallback posts, signed
    webhooks: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sessions: dict[str, StreamSession] = field(default_factory=dict)
    base_url: str = ""

    def __post_init__(self) -> None:
        self.validator = RequestValidator(AUTH_TOKEN)
        self.registered = asyncio.Condition()
        self.tasks: set[asyncio.Task[None]] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/voice/incoming", self.incoming)
        app.router.add_post("/voice/dial-result", self.dial_result)
        app.router.add_get("/voice/stream", self.stream)
        app.router.add_post("/voice/doc/{name}", self.document)
        app.router.add_post("/voice/stream-status", self.stream_status)
        return app

    async def stream_status(self, request: web.Request) -> web.Response:
        form = await self._signed_form(request)
        if form is None:
            return web.Response(status=403, text="invalid signature")
        self.statuses.append(form)
        return web.Response(status=204)

    def _connect(self, parameters: dict[str, str]) -> str:
        return connect_twiml(parameters, action=self.connect_action, status_callback=self.status_callback)

    async def _signed_form(self, request: web.Request) -> dict[str, str] | None:
        form = {k: str(v) for k, v in (await request.post()).items()}
        url = PUBLIC_BASE + request.path
        self.webhooks.append((request.path, form))
        if not self.validator.validate(url, form, request.headers.get("X-Twilio-Signature", "")):
            self.problems.append(f"bad signature on {request.path}")
            return None
        return form

    async def incoming(self, request: web.Request) -> web.Response:
        form = await self._signed_form(request)
        if form is None:
            return web.Response(status=403, text="invalid signature")
        if request.path in self.documents:
            return web.Response(text=self.documents[request.path], content_type="application/xml")
        if self.dial_first:
            twiml = (
                '<?xml version="1.0" encoding="UTF-8"?><Response><Dial timeout="20" '
                'action="/voice/dial-result" answerOnBridge="true">'
                f"<Number>{OWNER}</Number></Dial></Response>"
            )
        else:
            twiml = self._connect({"callerNumber": form["From"]})
        return web.Response(text=twiml, content_type="application/xml")

    async def document(self, request: web.Request) -> web.Response:
        if await self._signed_form(request) is None:
            return web.Response(status=403, text="invalid signature")
        return web.Response(text=self.documents[request.path], content_type="application/xml")

    async def dial_result(self, request: web.Request) -> web.Response:
        form = await self._signed_form(request)
        if form is None:
            return web.Response(status=403, text="invalid signature")
        if form["DialCallStatus"] == "completed":
            return web.Response(text="<Response><Hangup/></Response>", content_type="application/xml")
        twiml = self._connect({"callerNumber": form["From"], "dialStatus": form["DialCallStatus"]})
        return web.Response(text=twiml, content_type="application/xml")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if not self.validator.validate(STREAM_URL, {}, request.headers.get("X-Twilio-Signature", "")):
            self.problems.append("bad stream signature")
            return web.Response(status=403, text="invalid signature")
        if self.reject_stream:
            return web.Response(status=403, text="stream refused")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if self.close_on_accept is not None:
            await ws.close(code=self.close_on_accept, message=b"policy violation")
            return ws
        session = StreamSession(ws)
        vad = {"speaking": False, "quiet_frames": 0, "last_speech_at": 0.0}
        async for msg in ws:
            now = time.monotonic()
            if msg.type != WSMsgType.TEXT:
                session.problems.append(f"non-text frame {msg.type}")
                continue
            data = json.loads(msg.data)
            await session.record(now, data)
            event = data.get("event")
            if event == "start":
                session.stream_sid = data["streamSid"]
                async with self.registered:
                    self.sessions[data["start"]["callSid"]] = session
                    self.registered.notify_all()
                if self.close_after_start:
                    await ws.close()
                elif self.greeting is not None:
                    self._spawn(self._play(session, self.greeting, "greeting"))
            elif event == "media" and self.reply is not None:
                # A toy VAD: non-silent frames are speech; 10 silent frames (200 ms) after speech end a turn.
                if base64.b64decode(data["media"]["payload"]) != SILENCE_FRAME:
                    vad.update(speaking=True, quiet_frames=0, last_speech_at=now)
                elif vad["speaking"]:
                    vad["quiet_frames"] += 1
                    if vad["quiet_frames"] == 10:
                        vad["speaking"] = False
                        self.turns.append((vad["last_speech_at"], time.monotonic()))
                        self._spawn(self._play(session, self.reply, "reply"))
        session.closed.set()
        return ws

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _play(session: StreamSession, audio: bytes, mark: str) -> None:
        await session.send_audio(audio)
        await session.send_mark(mark)

    async def session(self, call_sid: str, timeout: float = 5.0) -> StreamSession:  # noqa: ASYNC109
        async with asyncio.timeout(timeout), self.registered:
            await self.registered.wait_for(lambda: call_sid in self.sessions)
        return self.sessions[call_sid]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Harness], Any]]:
    runners: list[web.AppRunner] = []

    async def start(harness: Harness) -> Harness:
        runner = web.AppRunner(harness.app(), shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        harness.base_url = f"http://{host}:{port}"
        runners.append(runner)
        return harness

    yield start
    for runner in runners:
        await runner.cleanup()


def simulator(harness: Harness, **kwargs: Any) -> CallerSimulator:
    options: dict[str, Any] = {
        "auth_token": AUTH_TOKEN,
        "account_sid": ACCOUNT_SID,
        "public_base_url": PUBLIC_BASE,
    }
    options.update(kwargs)
    return CallerSimulator(harness.base_url, **options)


def noise(ms: int, seed: int) -> bytes:
    """Random μ-law bytes: any misplaced or dropped byte shows up in a comparison."""
    return random.Random(seed).randbytes(ms * 8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----- pure playback model ------------------------------------------------------------------------


def test_playback_model_marks_clear_and_runs() -> None:
    playback = Playback()
    heard = bytearray()
    assert playback.add_mark("idle", 0.0) is not None  # nothing queued: echoed at once
    playback.add_audio(b"a" * 800, 10.0)  # 100 ms, starts on arrival
    assert playback.add_mark("m1", 10.0) is None
    playback.add_audio(b"b" * 400, 10.05)  # queued behind: no gap
    assert playback.add_mark("m2", 10.05) is None
    assert playback.next_mark_due() == pytest.approx(10.1)
    assert [m.name for m in playback.advance(10.0999, heard)] == []
    passed = playback.advance(10.1, heard)
    assert [(m.name, m.due) for m in passed] == [("m1", pytest.approx(10.1))]
    assert bytes(heard) == b"a" * 800
    assert playback.drain_time() == pytest.approx(10.15)
    dropped, released = playback.clear(10.125)  # after advance(10.125) the caller would have heard 200 b's
    assert dropped == 400 and [m.name for m in released] == ["m2"] and released[0].cleared
    playback.add_audio(b"c" * 80, 20.0)  # a new run starts at its arrival, not where the last one ended
    playback.advance(20.005, heard)
    assert bytes(heard).endswith(b"c" * 40) and playback.buffered_bytes == 40


# ----- webhook, TwiML and stream handshake --------------------------------------------------------


async def test_dial_then_stream_shapes_pacing_and_hangup(serve: Callable[[Harness], Any]) -> None:
    harness: Harness = await serve(Harness(dial_first=True))
    call = await simulator(harness).place_call(from_number="+15550001111", to_number="+15550002222")
    assert call.stream_opened and not harness.problems
    assert SID_RE.match(call.call_sid) and SID_RE.match(call.stream_sid)

    (path1, incoming), (path2, dial) = harness.webhooks
    assert path1 == "/voice/incoming" and path2 == "/voice/dial-result"
    assert incoming["CallStatus"] == "ringing" and incoming["Direction"] == "inbound"
    assert incoming["From"] == incoming["Caller"] == "+15550001111"
    assert incoming["To"] == incoming["Called"] == "+15550002222"
    assert incoming["AccountSid"] == ACCOUNT_SID and incoming["ApiVersion"] == "2010-04-01"
    assert dial["DialCallStatus"] == "no-answer" and dial["DialBridged"] == "false"
    assert dial["CallSid"] == call.call_sid and SID_RE.match(dial["DialCallSid"])
    assert len(call.twiml_log) == 2 and call.verbs[0].startswith(f"Dial {OWNER}")
    assert call.verbs[1] == f"Connect/Stream {STREAM_URL}"
    assert call.custom_parameters == {"callerNumber": "+15550001111", "dialStatus": "no-answer"}

    session = await harness.session(call.call_sid)
    media = await session.wait("media", count=30, timeout=3.0)
    connected, start = session.messages[0].data, session.messages[1].data
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start == {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT_SID,
            "streamSid": call.stream_sid,
            "callSid": call.call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"callerNumber": "+15550001111", "dialStatus": "no-answer"},
        },
        "streamSid": call.stream_sid,
    }
    for index, message in enumerate(media):
        data = message.data
        assert set(data) == {"event", "sequenceNumber", "media", "streamSid"}
        assert data["sequenceNumber"] == str(index + 2) and data["streamSid"] == call.stream_sid
        assert data["media"]["track"] == "inbound" and data["media"]["chunk"] == str(index + 1)
        assert data["media"]["timestamp"] == str(index * 20)
        assert base64.b64decode(data["media"]["payload"]) == SILENCE_FRAME
    # Absolute schedule: frame n arrives n·20 ms after frame 0, with jitter but no drift.
    offsets = [(m.t - media[0].t) - i * 0.020 for i, m in enumerate(media)]
    assert max(abs(o) for o in offsets) < TIMING_TOLERANCE_S, offsets

    await call.hang_up()
    await asyncio.wait_for(session.closed.wait(), 3.0)
    stop = session.messages[-1].data
    assert stop == {
        "event": "stop",
        "sequenceNumber": stop["sequenceNumber"],
        "stop": {"accountSid": ACCOUNT_SID, "callSid": call.call_sid},
        "streamSid": call.stream_sid,
    }
    numbers = [int(m.data["sequenceNumber"]) for m in session.messages[1:]]
    assert numbers == list(range(1, len(numbers) + 1))
    assert session.caller_audio() == bytes(call.audio_sent)
    assert call.stream_ended and call.ended and call.end_reason == "caller hung up"
    closed = await call.wait_for("stream_closed")
    assert closed.detail["by"] == "caller"
    assert not call.violations and not session.problems


async def test_owner_answers_means_no_stream(serve: Callable[[Harness], Any]) -> None:
    harness: Harness = await serve(Harness(dial_first=True))
    call = await simulator(harness).place_call(owner_answers=True)
    assert not call.stream_opened and call.ended and call.end_reason == "hangup"
    assert harness.webhooks[1][1]["DialCallStatus"] == "completed"
    assert harness.webhooks[1][1]["DialBridged"] == "true"
    assert call.verbs[-1] == "Hangup" and "<Hangup/>" in call.twiml_log[-1]
    assert call.dial_status == "completed" and not harness.sessions
    with pytest.raises(TimeoutError, match="media_in"):
        await call.wait_for("media_in", timeout=0.5)


async def test_server_closing_stream_continues_with_next_verb(serve: Callable[[Harness], Any]) -> None:
    harness: Harness = await serve(Harness(close_after_start=True))
    call = await simulator(harness).place_call()
    await call.wait_ended()
    assert call.verbs == [f"Connect/Stream {STREAM_URL}", "Hangup"]
    assert call.end_reason == "hangup" and call.close_code == 1000
    assert (await call.wait_for("stream_closed")).detail["by"] == "server"
    waited_from = time.monotonic()
    with pytest.raises(TimeoutError, match="ended first"):
        await call.wait_for("media_in", timeout=5.0)  # fails at once: no stream, no media
    assert time.monotonic() - waited_from < 0.1
    with pytest.raises(CallEndedError):
        await call.say(tone(100))


def test_parse_twiml_verbs() -> None:
    verbs = parse_twiml(
        '<?xml version="1.0"?><Response><Say voice="alice">Hi</Say><Pause length="2"/>'
        '<Dial timeout="15" action="/a" answerOnBridge="true">+15551112222</Dial>'
        '<Connect action="/after"><Stream url="wss://h/s"><Parameter name="k" value="v"/></Stream></Connect>'
        '<Gather/><Enqueue>q</Enqueue><Redirect method="GET">/next</Redirect><Reject reason="busy"/>'
        "<Hangup/></Response>"
    )
    assert verbs == [
        Say("Hi", "alice"),
        Pause(2.0),
        Dial(("+15551112222",), 15, "/a", "POST", True, (Number("+15551112222"),)),
        Connect(Stream("wss://h/s", None, {"k": "v"}), "/after", "POST"),
        Gather(),
        Unsupported("Enqueue"),
        Redirect("/next", "GET"),
        Reject("busy"),
        Hangup(),
    ]
    with pytest.raises(TwimlError, match="expected <Response>"):
        parse_twiml("<Reply/>")
    with pytest.raises(TwimlError, match="not XML"):
        parse_twiml("Thanks for calling")


async def test_say_pause_redirect_reject_and_unsupported(serve: Callable[[Harness], Any]) -> None:
    documents = {
        "/voice/incoming": '<Response><Say>One moment</Say><Pause length="1"/>'
        "<Redirect>/voice/doc/next</Redirect><Say>never reached</Say></Response>",
        "/voice/doc/next": '<Response><Enqueue>support</Enqueue><Reject reason="busy"/></Response>',
    }
    harness: Harness = await serve(Harness(documents=documents))
    call = await simulator(harness).place_call()
    assert call.verbs == [
        "Say 'One moment'",
        "Pause 1s",
        "Redirect /voice/doc/next",
        "<Enqueue> (not simulated)",
        "Reject (busy)",
    ]
    assert not call.stream_opened and call.end_reason == "rejected (busy)"
    assert [path for path, _ in harness.webhooks] == ["/voice/incoming", "/voice/doc/next"]
    assert harness.webhooks[1][1]["CallStatus"] == "in-progress" and not harness.problems
    assert call.warnings == ["<Enqueue> is not simulated; skipped"]


async def test_rejections_are_reported(serve: Callable[[Harness], Any]) -> None:
    harness: Harness = await serve(Harness())
    for wrong in ({"auth_token": "not-the-token"}, {"auth_token": None}):
        with pytest.raises(WebhookError, match="HTTP 403") as webhook_error:
            await simulator(harness, **wrong).place_call()
        assert webhook_error.value.status == 403
    assert harness.problems == ["bad signature on /voice/incoming"] * 2

    harness.problems.clear()
    harness.reject_stream = True
    with pytest.raises(StreamRejected, match="HTTP 403") as rejected:
        await simulator(harness).place_call()
    assert rejected.value.status == 403 and rejected.value.call is not None
    await rejected.value.call.wait_ended()
    assert rejected.value.call.verbs[-1] == "Hangup"  # Twilio moves on to the next verb

    # A wrong public URL means a wrong handshake signature: the harness refuses it.
    harness.reject_stream = False
    with pytest.raises(WebhookError, match="403"):
        await simulator(harness, public_base_url="https://elsewhere.example.test").place_call()

    harness.close_on_accept = 1008
    try:
        call = await simulator(harness).place_call()
    except StreamRejected as exc:  # the close can beat `start` out of the door
        assert exc.close_code == 1008
    else:
        await call.wait_closed()
        assert call.close_code == 1008

    with pytest.raises(WebhookError, match="cannot reach"):
        await CallerSimulator(f"http://127.0.0.1:{free_port()}").place_call()


# ----- playback: marks, clear, heard audio --------------------------------------------------------


async def test_mark_timing_clear_and_heard_audio(serve: Callable[[Harness], Any]) -> None:
    harness: Harness = await serve(Harness())
    call = await simulator(harness).place_call()
    session = await harness.session(call.call_sid)

    def echoed(name: str) -> Callable[[dict[str, Any]], bool]:
        return lambda data: data["mark"]["name"] == name

    # Nothing queued: the mark comes straight back.
    sent = await session.send_mark("empty")
    (echo,) = await session.wait("mark", predicate=echoed("empty"))
    assert echo.t - sent < TIMING_TOLERANCE_S
    assert echo.data == {
        "event": "mark",
        "sequenceNumber": echo.data["sequenceNumber"],
        "streamSid": call.stream_sid,
        "mark": {"name": "empty"},
    }

    # 400 ms of audio in 20 ms chunks: the mark returns when it has played.
    a = noise(400, seed=1)
    started = await session.send_audio(a)
    await session.send_mark("a")
    (echo,) = await session.wait("mark", predicate=echoed("a"))
    assert abs(echo.t - started - 0.400) < TIMING_TOLERANCE_S, echo.t - started
    assert (
        abs((await call.wait_for("mark_echo", predicate=lambda e: e.detail["name"] == "a")).detail["late_ms"])
        < 5
    )

    # 1 s then 0.5 s queued, cleared 300 ms in: both marks come back at once, in order; the rest is dropped.
    b, c = noise(1000, seed=2), noise(500, seed=3)
    started = await session.send_audio(b, chunk=4000)
    await session.send_mark("b")
    await session.send_audio(c, chunk=len(c))
    await session.send_mark("c")
    await asyncio.sleep(0.3)  # let 300 ms of b play: this is the scenario, not synchronisation
    cleared_at = await session.send_clear()
    echoes = await session.wait("mark", count=4)  # empty, a, b, c
    assert [e.data["mark"]["name"] for e in echoes[2:]] == ["b", "c"]
    assert all(e.t - cleared_at < TIMING_TOLERANCE_S for e in echoes[2:])
    clear = await call.wait_for("clear_in")
    heard_b = clear.detail["heard_bytes"] - len(a)
    assert abs(heard_b - (cleared_at - started) * 8000) < TIMING_TOLERANCE_S * 8000
    assert clear.detail["dropped_bytes"] == len(b) + len(c) - heard_b
    assert clear.detail["marks_released"] == ["b", "c"]
    assert not call.playing and call.buffered_ms == 0

    # After the clear, new audio plays from its arrival.
    d = noise(200, seed=4)
    started = await session.send_audio(d, chunk=len(d))
    await session.send_mark("d")
    (echo,) = await session.wait("mark", predicate=echoed("d"))
    assert abs(echo.t - started - 0.200) < TIMING_TOLERANCE_S
    assert bytes(call.audio_heard) == a + b[:heard_b] + d
    assert bytes(call.audio_received) == a + b + c + d
    assert [e.detail["name"] for e in call.events if e.kind == "mark_echo"] == ["empty", "a", "b", "c", "d"]
    assert [e.detail["cleared"] for e in call.events if e.kind == "mark_echo"] == [False] * 2 + [True] * 2 + [
        False
    ]
    await call.hang_up()
    assert not call.violations


async def test_protocol_violations_are_recorded_not_fatal(serve: Callable[[Harness], Any]) -> None:
    harness: Harness = await serve(Harness())
    call = await simulator(harness).place_call()
    session = await harness.session(call.call_sid)
    sid = call.stream_sid
    await session.ws.send_bytes(b"\x00\x01binary")
    await session.ws.send_str("not json")
    await session.send({"event": "speak", "streamSid": sid})
    await session.send({"event": "media", "streamSid": "MZ" + "0" * 32, "media": {"payload": "//8="}})
    await session.send({"event": "media", "streamSid": sid, "media": {"payload": "%%not base64%%"}})
    await session.send({"event": "mark", "streamSid": sid, "mark": {}})
    await session.send_mark("still-alive")
    await session.wait("mark", predicate=lambda data: data["mark"]["name"] == "still-alive")
    assert len(call.violations) == 6, call.violations
    assert "binary" in call.violations[0] and "31950" in call.violations[0]
    assert "'speak'" in call.violations[2] and "streamSid" in call.violations[3]
    assert "base64" in call.violations[4] and "mark.name" in call.violations[5]
    assert call.count("violation") == 6 and call.live and not call.audio_received
    await call.hang_up()


# ----- the caller talking -------------------------------------------------------------------------


async def test_greeting_say_dtmf_and_latencies(serve: Callable[[Harness], Any]) -> None:
    harness: Harness = await serve(Harness(greeting=tone(300, 440.0)))
    call = await simulator(harness).place_call()
    session = await harness.session(call.call_sid)

    await call.wait_until_quiet(quiet_ms=200, timeout=3.0)
    first = await call.wait_for("media_in")
    quiet_for = time.monotonic() - first.t
    assert 0.49 < quiet_for < 0.6, quiet_for  # 300 ms of greeting + 200 ms of quiet
    assert call.greeting_latency_ms is not None and call.greeting_latency_ms < 200
    assert bytes(call.audio_heard) == tone(300, 440.0)

    speech = tone(250, 300.0)  # not a whole number of frames: the last one is padded with silence
    await call.say(speech)
    spoke = await call.wait_for("speech_end")
    await session.wait(
        "media", predicate=lambda d: d["media"]["payload"] != base64.b64encode(SILENCE_FRAME).decode()
    )
    await session.send_audio(tone(100, 500.0))
    reply = await call.wait_for("media_in", after=spoke.t)
    assert call.turn_latencies_ms == [pytest.approx((reply.t - spoke.t) * 1000)]

    await call.send_dtmf("5")
    (dtmf,) = await session.wait("dtmf")
    assert dtmf.data == {
        "event": "dtmf",
        "streamSid": call.stream_sid,
        "sequenceNumber": dtmf.data["sequenceNumber"],
        "dtmf": {"track": "inbound_track", "digit": "5"},
    }
    await call.hang_up()
    await asyncio.wait_for(session.closed.wait(), 3.0)
    sent = session.caller_audio()
    assert sent == bytes(call.audio_sent)
    padded = speech + silence(10)  # 250 ms → 13 frames
    offset = sent.find(padded)
    assert offset > 0 and offset % FRAME_BYTES == 0
    numbers = [int(m.data["sequenceNumber"]) for m in session.messages[1:]]
    assert numbers == list(range(1, len(numbers) + 1))


def test_speech_ends_at_the_last_loud_frame() -> None:
    assert speech_frames(frames(tone(300) + silence(500))) == 15
    assert speech_frames(frames(silence(400))) == 0
    # A faint tail (line noise, far below the voice) is not speech.
    assert speech_frames(frames(tone(300) + tone(200, amplitude=200) + silence(100))) == 15
    # A clip that ends mid-word counts to its end (the last frame is padded with silence).
    assert speech_frames(frames(silence(100) + tone(250))) == 18


async def test_turn_latency_counts_from_the_end_of_speech_not_of_the_clip(
    serve: Callable[[Harness], Any],
) -> None:
    harness: Harness = await serve(Harness(reply=tone(300, 600.0)))
    call = await simulator(harness).place_call()
    said = time.monotonic()
    # The answer comes while the clip's trailing silence is still going out, as with a real recording.
    await call.say(tone(400, 300.0) + silence(800))
    spoke = await call.wait_for("speech_end", after=said)
    clip_done = await call.wait_for("utterance_end", after=said)
    reply = await call.wait_for("media_in", after=said)
    assert spoke.detail == {"frames": 20, "trailing_silence_ms": 800}
    assert clip_done.t - spoke.t == pytest.approx(0.8, abs=0.06)
    assert spoke.t < reply.t < clip_done.t
    [(last_speech_arrived, replied)] = harness.turns
    [latency] = call.turn_latencies_ms
    assert latency == pytest.approx((reply.t - spoke.t) * 1000)
    # What the caller measured agrees with the harness's own figure (last speech frame in -> reply out).
    assert abs(latency - (replied - last_speech_arrived) * 1000) < 50, (latency, harness.turns)
    assert 180 < latency < 400
    await call.hang_up()


async def test_stream_status_callbacks_are_posted_signed(serve: Callable[[Harness], Any]) -> None:
    harness: Harness = await serve(Harness(status_callback="/voice/stream-status"))
    call = await simulator(harness).place_call()
    await call.hang_up()  # returns once the callbacks in flight are answered
    assert sorted(status["StreamEvent"] for status in harness.statuses) == STARTED_STOPPED
    for status in harness.statuses:
        assert status["CallSid"] == call.call_sid and status["StreamSid"] == call.stream_sid
        assert status["AccountSid"] == ACCOUNT_SID and "StreamError" not in status
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", status["Timestamp"])
    assert sorted(call.stream_statuses) == [("stream-started", 204), ("stream-stopped", 204)]
    assert not harness.problems and not call.warnings

    # A refused stream is reported as stream-error, with Twilio's reason, and never as started.
    harness.statuses.clear()
    harness.reject_stream = True
    with pytest.raises(StreamRejected) as rejected:
        await simulator(harness).place_call()
    assert rejected.value.call is not None
    await rejected.value.call.wait_ended()
    [error] = harness.statuses
    assert error["StreamEvent"] == "stream-error" and "HTTP 403" in error["StreamError"]


async def test_a_server_closed_stream_is_no_caller_hang_up(serve: Callable[[Harness], Any]) -> None:
    harness: Harness = await serve(
        Harness(
            close_after_start=True,
            connect_action="/voice/doc/after",
            status_callback="/voice/stream-status",
            documents={"/voice/doc/after": "<Response><Say>Sorry, goodbye.</Say><Hangup/></Response>"},
        )
    )
    call = await simulator(harness).place_call()
    await call.wait_closed()
    await call.hang_up()  # as `callassist call` does once it has listened: Twilio's TwiML runs out first
    assert call.ended and call.end_reason == "hangup" and call.stream_closed_by == "server"
    # Twilio asked the <Connect action> URL what next, and followed it.
    asked = [(path, form) for path, form in harness.webhooks if path != "/voice/stream-status"]
    assert [path for path, _ in asked] == ["/voice/incoming", "/voice/doc/after"]
    assert asked[1][1]["CallSid"] == call.call_sid and asked[1][1]["CallStatus"] == "in-progress"
    assert call.verbs == [f"Connect/Stream {STREAM_URL}", "Say 'Sorry, goodbye.'", "Hangup"]
    assert describe_ending(call) == (
        "the assistant ended the call (the server closed the stream, code 1000); "
        "then /voice/doc/after → Say 'Sorry, goodbye.' → Hangup"
    )
    assert sorted(status["StreamEvent"] for status in harness.statuses) == STARTED_STOPPED
    assert not harness.problems


async def test_run_call_says_who_ended_the_call(serve: Callable[[Harness], Any]) -> None:
    common: dict[str, Any] = {
        "say": None,
        "audio": None,
        "out": None,
        "seconds": 5,
        "auth_token": AUTH_TOKEN,
        "public_base_url": PUBLIC_BASE,
        "from_number": "+15550001111",
        "to_number": "+15550002222",
    }
    closing: Harness = await serve(Harness(close_after_start=True, connect_action="/voice/doc/after"))
    closing.documents["/voice/doc/after"] = "<Response><Hangup/></Response>"
    output = io.StringIO()
    report = await run_call(closing.base_url, console=Console(file=output, width=200), **common)
    assert report.stream_closed_by == "server"
    text = output.getvalue()
    assert "the assistant ended the call" in text and "/voice/doc/after" in text
    assert "caller hung up" not in text

    listening: Harness = await serve(Harness(greeting=tone(200, 440.0)))
    output = io.StringIO()
    report = await run_call(listening.base_url, console=Console(file=output, width=200), **common)
    assert report.stream_closed_by == "caller" and report.ending == "caller hung up"
    assert "caller hung up" in output.getvalue() and "assistant ended" not in output.getvalue()


async def test_twenty_concurrent_calls(serve: Callable[[Harness], Any]) -> None:
    harness: Harness = await serve(Harness(greeting=tone(200, 440.0)))
    sim = simulator(harness)
    calls: list[SimulatedCall] = await asyncio.gather(*(sim.place_call() for _ in range(20)))
    await asyncio.gather(*(call.wait_until_quiet(quiet_ms=300, timeout=5.0) for call in calls))
    sessions = [await harness.session(call.call_sid) for call in calls]
    await asyncio.gather(*(call.hang_up() for call in calls))
    for call, session in zip(calls, sessions, strict=True):
        assert bytes(call.audio_heard) == tone(200, 440.0)
        assert len(session.of("media")) >= 20
        assert call.count("mark_echo") == 1 and not call.violations


# ----- the `callassist call` report ---------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng+sox"
)
async def test_run_call_talks_saves_and_reports(serve: Callable[[Harness], Any], tmp_path: Path) -> None:
    harness: Harness = await serve(Harness(greeting=tone(300, 440.0), reply=tone(400, 600.0)))
    output = io.StringIO()
    out = tmp_path / "heard.wav"
    report = await run_call(
        harness.base_url,
        say="Hello, is Sam there?",
        audio=None,
        out=out,
        seconds=10,
        auth_token=AUTH_TOKEN,
        public_base_url=PUBLIC_BASE,
        from_number="+15550001111",
        to_number="+15550002222",
        console=Console(file=output, width=120),
    )
    assert report.stream_opened and report.greeting_latency_ms is not None
    assert len(report.turn_latencies_ms) == 1 and report.turn_latencies_ms[0] < 1000
    assert report.heard_seconds == pytest.approx(0.7, abs=0.001)
    assert report.marks_in == report.marks_echoed == 2 and report.violations == []
    with wave.open(str(out)) as wav:
        assert wav.getnframes() == 0.7 * 8000
    text = output.getvalue()
    assert "Greeting latency" in text and "No protocol violations" in text and "Connect/Stream" in text


async def test_run_call_errors_are_one_line(tmp_path: Path) -> None:
    console = Console(file=io.StringIO())
    common: dict[str, Any] = {
        "out": None,
        "seconds": 5,
        "auth_token": None,
        "public_base_url": None,
        "from_number": "+15550001111",
        "to_number": "+15550002222",
        "console": console,
    }
    with pytest.raises(SimulatorError, match="cannot reach"):
        await run_call(f"http://127.0.0.1:{free_port()}", say=None, audio=None, **common)
    with pytest.raises(SimulatorError, match="audio file not found"):
        await run_call("http://127.0.0.1:1", say=None, audio=tmp_path / "missing.wav", **common)
