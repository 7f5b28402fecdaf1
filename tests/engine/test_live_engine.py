"""The GPT-Live engine against the fake Live server, over a real socket.

Every client event the engine sends is validated by the fake against the SDK's Live types (strict,
unknown keys refused); what the fake sends is validated against the server-event union. The tests
read the engine's typed events as the call would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import pytest
from openai import AsyncOpenAI

from callassist.call.transcript import Turn
from callassist.engine import live as live_engine
from callassist.engine.base import EngineUnavailable
from callassist.engine.events import (
    AudioOut,
    CallerTranscribed,
    EngineError,
    EngineEvent,
    ErrorKind,
    ResponseFinished,
    ResponseStarted,
    SessionReplaced,
    SessionSetup,
    SpeechStarted,
    SpeechStopped,
)
from callassist.engine.live import DELEGATION_FAILED, GREETING_CUE, NOTE_CHARS, LiveEngine, note_parts
from callassist.engine.live_fallback import FallbackEngine
from callassist.live.billing import SESSION_PURPOSE, LiveBilling
from callassist.live.config import LIVE_VOICE, REPLAY_PREAMBLE
from callassist.live.socket import LiveRefused
from callassist.realtime.config import CallContext, build_instructions
from callassist.realtime.pricing import PriceTable, Usage
from callassist.settings import Settings
from callassist.tools import all_tools
from tests.fakes.live_script import Delegate, LiveReply
from tests.fakes.live_server import FakeLiveServer, LiveScript
from tests.fakes.script import Say, UseTool
from tests.support.scripted_engine import ScriptedEngine

LOUD, QUIET = b"\x00" * 160, b"\xff" * 160  # 20 ms μ-law frames: full scale, silence
GREETING = random.Random(1).randbytes(1600)


def noise(ms: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(ms * 8)


class Events:
    """The engine's events as the call reads them, waited on with a timeout."""

    def __init__(self) -> None:
        self.all: list[EngineEvent] = []
        self._changed = asyncio.Event()

    def add(self, event: EngineEvent) -> None:
        self.all.append(event)
        self._changed.set()

    def of(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.all if isinstance(event, kind)]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


class Rows:
    """A stand-in for the call's recorder: the usage rows it was given."""

    call_sid = "CA1"

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def usage(self, **row: Any) -> None:
        self.rows.append(row)


@pytest.fixture
def settings() -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        owner_name="Dana",
        openai_api_key="sk-test",
        timezone="America/New_York",
        engine="live",
    )


def setup_hook(settings: Settings, history: list[Turn] | None = None) -> Callable[[bool], Any]:
    tools = all_tools()

    async def setup(replacing: bool) -> SessionSetup:
        instructions = build_instructions(settings, CallContext(caller_number="+15551230000"), tools=tools)
        declared = tools.declarations(owner=False, owner_name="Dana")
        if replacing:
            return SessionSetup(instructions, declared, history=history or [], answer="9")
        return SessionSetup(instructions, declared, greeting="1")

    return setup


OPEN: list[tuple[LiveEngine, asyncio.Task[None]]] = []


async def started(
    fake: FakeLiveServer, settings: Settings, *, history: list[Turn] | None = None
) -> tuple[LiveEngine, Events, asyncio.Task[None]]:
    engine = LiveEngine(AsyncOpenAI(api_key="sk-test", base_url=fake.base_url), settings)
    await engine.connect()
    await engine.configure(setup_hook(settings, history))
    events = Events()

    async def pump() -> None:
        async for event in engine.events():
            events.add(event)

    task = asyncio.create_task(pump())
    OPEN.append((engine, task))
    return engine, events, task


@pytest.fixture
async def fake() -> AsyncIterator[FakeLiveServer]:
    script = LiveScript(
        replies=[
            LiveReply([Say("Hi, Dana's assistant.", audio=GREETING)]),
            LiveReply(
                [Say("One moment.", audio=noise(300, 2))],
                Delegate(
                    [UseTool("take_message", {"message": "Call me back", "caller_name": "Alex Kim"})],
                    result="Your message is saved.",
                    spoken=Say("Your message is saved.", audio=noise(500, 3)),
                ),
            ),
        ],
        transcripts=["Please take a message for Dana"],
    )
    async with FakeLiveServer(script, usage_interval_s=3600) as server:
        try:
            yield server
        finally:  # a failed test's engines are closed before the fake goes (no reconnect attempts)
            while OPEN:
                engine, task = OPEN.pop()
                await engine.close()
                task.cancel()
        assert server.validation_failures == []


async def say(engine: LiveEngine, frames: list[bytes]) -> bytes:
    for frame in frames:
        await engine.send_audio(base64.b64encode(frame).decode())
    return b"".join(frames)


def played(events: Events) -> bytes:
    return b"".join(base64.b64decode(e.payload) for e in events.of(AudioOut))


def spoken(events: Events, response_id: str) -> bytes:
    return b"".join(base64.b64decode(e.payload) for e in events.of(AudioOut) if e.response_id == response_id)


async def test_the_session_starts_as_our_setup_says_and_greets_once(
    fake: FakeLiveServer, settings: Settings
) -> None:
    engine, events, pump = await started(fake, settings)
    session = fake.sessions[0]
    start = session.config
    assert start["model"] == "gpt-live-1.1"
    assert start["audio"] == {"format": {"type": "audio/pcmu", "rate": 8000}, "output": {"voice": "marin"}}
    assert start["instructions"].startswith("You are Dana's phone assistant")
    assert (
        "Right now it is" in start["instructions"]
        and LIVE_VOICE.format(owner="Dana") in start["instructions"]
    )
    backend = start["delegation"]["responses"]
    assert start["delegation"]["type"] == "responses" and backend["model"] == "gpt-5.4-mini"
    assert "Right now it is" in backend["instructions"] and "Privacy" in backend["instructions"]
    declared = all_tools().declarations(owner=False, owner_name="Dana")
    assert [tool["name"] for tool in backend["tools"]] == [tool["name"] for tool in declared]
    assert backend["tools"][0]["parameters"] == declared[0]["parameters"]
    assert "input" not in start  # a first session has no history
    await fake.wait_until(lambda: bool(session.commentary))
    assert session.commentary == [GREETING_CUE]  # the greeting, asked for once

    await events.wait(lambda: bool(events.of(ResponseFinished)))
    [begun] = events.of(ResponseStarted)
    assert begun.request == "1"  # our greeting tag is on the model's first speech
    assert spoken(events, begun.response_id) == GREETING  # byte for byte
    [finished] = events.of(ResponseFinished)
    assert finished.status == "completed" and finished.spoken[0].text == "Hi, Dana's assistant."
    await engine.close()
    await pump
    assert session.closed and any(e.type == "session.close" for e in session.client_events)


async def test_caller_audio_arrives_byte_exact_and_a_delegated_call_is_answered(
    fake: FakeLiveServer, settings: Settings
) -> None:
    rows = Rows()
    engine, events, pump = await started(fake, settings)
    engine.billing = LiveBilling(rows, PriceTable(), live_model="gpt-live-1.1", backend_model="gpt-5.4-mini")
    await events.wait(lambda: bool(events.of(ResponseFinished)))
    sent = await say(engine, [noise(20, seed) for seed in range(10, 13)] + [LOUD] * 30 + [QUIET] * 30)
    session = fake.sessions[0]
    await fake.wait_until(lambda: len(session.audio_in) == len(sent))
    assert bytes(session.audio_in) == sent

    await events.wait(lambda: any(e.tool_calls for e in events.of(ResponseFinished)))
    [heard] = events.of(CallerTranscribed)
    assert heard.text == "Please take a message for Dana" and heard.seconds == 0.0
    assert [type(e) for e in events.all if isinstance(e, SpeechStarted | SpeechStopped)] == [
        SpeechStarted,
        SpeechStopped,
    ]
    [delegated] = [e for e in events.of(ResponseFinished) if e.tool_calls]
    [call] = delegated.tool_calls
    assert call.completed and call.name == "take_message" and delegated.status == "completed"
    # Built by the fake backend from our declared schema, as a model would.
    assert json.loads(call.arguments)["message"] == "Call me back"
    assert delegated.spoken == () and delegated.usage is None  # billed by LiveBilling instead

    assert await engine.add_tool_output(call.call_id, json.dumps({"ok": True, "say": "Saved."}))
    await fake.wait_until(lambda: any(e.type == "response.create" for e in session.client_events))
    assert session.function_outputs == [(call.call_id, '{"ok": true, "say": "Saved."}')]
    # What the call asks after outputs: answered at once (the model says the backend's result), no cue.
    assert await engine.request_response("5")
    await events.wait(lambda: any(e.request == "5" for e in events.of(ResponseFinished)))
    assert session.commentary == [GREETING_CUE]
    await fake.wait_until(lambda: session.said[-1].text == "Your message is saved.")
    # Every byte the model said reached the engine's AudioOut, in order.
    await events.wait(lambda: len(played(events)) == len(session.audio_out))
    assert played(events) == session.audio_out

    # The backend's tokens of both its responses, at gpt-5.4-mini's prices.
    backend = [row for row in rows.rows if row["purpose"] == "delegation"]
    assert len(backend) == 2 and all(row["model"] == "gpt-5.4-mini" and row["cost"] > 0 for row in backend)
    await engine.close()
    await pump


async def test_usage_is_cumulative_and_never_summed(fake: FakeLiveServer, settings: Settings) -> None:
    rows, published = Rows(), []
    engine, events, pump = await started(fake, settings)
    billing = LiveBilling(
        rows, PriceTable(), live_model="gpt-live-1.1", backend_model="gpt-5.4-mini", publish=published.append
    )
    engine.billing = billing
    session = fake.sessions[0]
    for seconds in (12.0, 30.0, 30.0, 29.0, 41.0):  # a repeat and a stale report add nothing
        await session.send_event("session.usage.updated", usage={"seconds": seconds})
    await events.wait(lambda: len(published) == 3)
    # Billed at every report (12 + 18 + 11 s), written a row per 30 s: the first 30 s so far.
    assert [row["seconds"] for row in rows.rows] == [30.0]
    assert billing.total == Decimal("0.05") * 41 / 60
    await engine.close()  # session.closed carries the final usage (the fake's few real seconds)
    await pump
    session_rows = [row for row in rows.rows if row["purpose"] == SESSION_PURPOSE]
    assert [row["seconds"] for row in session_rows] == [30.0, 11.0]  # the rest, at the session's end
    assert sum((row["cost"] for row in session_rows), Decimal(0)) == billing.total
    assert session_rows[0]["tokens"] == Usage() and session_rows[0]["model"] == "gpt-live-1.1"
    assert sum((event.cost for event in published), Decimal(0)) == billing.total


async def test_errors_are_mapped_by_code(fake: FakeLiveServer, settings: Settings) -> None:
    engine, events, pump = await started(fake, settings)
    session = fake.sessions[0]
    await session.send_error("rate_limit_exceeded", "Slow down.")
    await session.send_error("invalid_value", "Bad cue.", client_event_id="callassist_7")
    await events.wait(lambda: len(events.of(EngineError)) == 2)
    recoverable, refused = events.of(EngineError)
    assert (recoverable.kind, recoverable.code, recoverable.request) == (
        ErrorKind.recoverable,
        "rate_limit_exceeded",
        None,
    )
    assert (refused.kind, refused.request) == (ErrorKind.refused, "7")
    await engine.close()
    await pump


async def test_a_drop_reconnects_with_the_conversation_and_no_second_greeting(
    fake: FakeLiveServer, settings: Settings
) -> None:
    now = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    history = [
        Turn("assistant", "Hi, Dana's assistant.", now),
        Turn("caller", "Is Dana free tomorrow?", now),
        Turn("assistant", "Let me", now, interrupted=True),
    ]
    engine, events, pump = await started(fake, settings, history=history)
    await events.wait(lambda: bool(events.of(ResponseFinished)))
    await fake.sessions[0].drop()
    await events.wait(lambda: bool(events.of(SessionReplaced)))
    assert engine.reconnects == 1 and engine.ready
    second = fake.sessions[1]
    items = second.config["input"]
    assert [(item["role"], item["content"][0]["text"]) for item in items] == [
        ("developer", REPLAY_PREAMBLE),
        ("assistant", "Hi, Dana's assistant."),
        ("user", "Is Dana free tomorrow?"),
        ("assistant", "Let me"),
        ("developer", "(The caller interrupted the assistant here.)"),
    ]
    assert GREETING_CUE not in second.commentary  # no second greeting; the owed answer is cued
    await events.wait(lambda: any(e.request == "9" for e in events.of(ResponseStarted)))
    await engine.close()
    await pump


async def test_a_refusal_at_the_handshake_or_the_start_falls_back(
    fake: FakeLiveServer, settings: Settings
) -> None:
    client = AsyncOpenAI(api_key="sk-test", base_url=fake.base_url)
    fake.refuse_status = HTTPStatus.FORBIDDEN
    with pytest.raises(EngineUnavailable) as refused:
        await LiveEngine(client, settings).connect()
    assert isinstance(refused.value.__cause__, LiveRefused) and fake.refused == 1

    realtime = ScriptedEngine()
    chosen = FallbackEngine(LiveEngine(client, settings), lambda: realtime)
    await chosen.send_audio("AAAA")  # the caller speaks while GPT-Live is still connecting
    await chosen.connect()
    assert chosen.engine is realtime and realtime.audio == ["AAAA"]

    fake.refuse_status = None
    fake.refused_models.add("gpt-live-1.1")  # the handshake passes, the model is refused
    realtime = ScriptedEngine()
    chosen = FallbackEngine(LiveEngine(client, settings), lambda: realtime)
    await chosen.connect()
    await chosen.configure(setup_hook(settings))
    assert chosen.engine is realtime and realtime.ready and len(realtime.setups) == 1
    assert fake.sessions[-1].errors_sent[0]["code"] == "model_not_found"

    without = FallbackEngine(LiveEngine(client, settings), None)
    await without.connect()
    with pytest.raises(EngineUnavailable):
        await without.configure(setup_hook(settings))


async def test_a_failed_delegation_gets_an_apology_cue_not_silence(
    fake: FakeLiveServer, settings: Settings
) -> None:
    engine, events, _ = await started(fake, settings)
    session = fake.sessions[0]
    session.script.replies[1] = LiveReply([Say("One moment.", audio=noise(200, 5))], Delegate(fail=True))
    await events.wait(lambda: bool(events.of(ResponseFinished)))
    await say(engine, [LOUD] * 30 + [QUIET] * 30)
    await events.wait(lambda: any(e.status == "failed" for e in events.of(ResponseFinished)))
    [failed] = [e for e in events.of(ResponseFinished) if e.status == "failed"]
    assert failed.failure == "server_error" and failed.tool_calls == ()
    await fake.wait_until(lambda: len(session.commentary) == 2)
    assert session.commentary[1] == DELEGATION_FAILED  # the model is cued to apologise


async def test_a_long_session_moves_to_a_fresh_one_at_a_quiet_moment(
    fake: FakeLiveServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    engine, events, _ = await started(fake, settings, history=[Turn("caller", "Is Dana in?", now)])
    await events.wait(lambda: bool(events.of(ResponseFinished)))
    assert not await engine.rotate(lambda: True)  # far from the session's expiry: nothing to do
    monkeypatch.setattr(live_engine, "ROTATE_AFTER_S", 0.0)
    assert not await engine.rotate(lambda: False)  # not a quiet moment
    assert await engine.rotate(lambda: True)
    await events.wait(lambda: bool(events.of(SessionReplaced)))
    [moved] = events.of(SessionReplaced)
    assert moved.rotated and engine.rotations == 1 and engine.reconnects == 0
    second = fake.sessions[1]
    assert ("user", "Is Dana in?") in [(i["role"], i["content"][0]["text"]) for i in second.config["input"]]
    assert GREETING_CUE not in second.commentary


def test_a_long_note_goes_in_parts_within_the_limit() -> None:
    text = ("word " * 700).strip()  # 3,499 characters
    parts = note_parts(text)
    assert len(parts) == 3 and all(len(part) <= NOTE_CHARS for part in parts)
    assert " ".join(parts) == text
    assert note_parts("short") == ["short"]
