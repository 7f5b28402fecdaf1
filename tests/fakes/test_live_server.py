"""The fake GPT-Live server holds clients to the SDK's types and behaves as the docstrings say."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.fakes.live_protocol import validate_live_client_event, validate_live_server_event
from tests.fakes.live_script import Delegate, LiveReply
from tests.fakes.live_server import FakeLiveServer, FakeLiveSession, LiveScript
from tests.fakes.script import Say, UseTool

TOOL = {
    "type": "function",
    "name": "take_message",
    "description": "Take a message.",
    "parameters": {
        "type": "object",
        "properties": {"message": {"type": "string"}, "urgency": {"type": "string", "enum": ["low", "high"]}},
        "required": ["message", "urgency"],
        "additionalProperties": False,
    },
}
START: dict[str, Any] = {
    "type": "session.start",
    "event_id": "s1",
    "session": {
        "model": "gpt-live-1.1",
        "audio": {"format": {"type": "audio/pcmu", "rate": 8000}},
        "instructions": "Be brief.",
        "delegation": {"type": "responses", "responses": {"model": "gpt-5.4-mini", "tools": [TOOL]}},
    },
}
LOUD, QUIET = b"\x00" * 160, b"\xff" * 160  # μ-law: 0x00 is full scale, 0xff silence


@pytest.fixture
async def fake() -> AsyncIterator[FakeLiveServer]:
    script = LiveScript(
        replies=[
            LiveReply([Say("Hello.", audio=b"\x01" * 1600)]),
            LiveReply(
                [Say("One moment.", audio=b"\x02" * 800)],
                Delegate(
                    [UseTool("take_message", {"message": "call back"})],
                    result="Saved.",
                    spoken=Say("Saved.", audio=b"\x03" * 800),
                ),
            ),
        ],
        transcripts=["Please take a message"],
    )
    async with FakeLiveServer(script, usage_interval_s=0.1) as server:
        yield server


async def opened(fake: FakeLiveServer) -> tuple[ClientConnection, FakeLiveSession]:
    ws = await connect(
        f"ws://127.0.0.1:{fake.port}/v1/live/sessions", additional_headers={"Authorization": "Bearer sk"}
    )
    return ws, await fake.wait_for_session(len(fake.sessions) - 1 if fake.sessions else 0)


async def next_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        event = json.loads(await ws.recv())
        if event["type"] == kind:
            return event


def test_the_sdk_union_decides_what_is_valid() -> None:
    assert validate_live_client_event(START) is None
    # An unknown key anywhere, a Realtime-shaped format, a Realtime event, a lax type: refused.
    unknown = {**START, "session": {**START["session"], "voice": "marin"}}
    assert validate_live_client_event(unknown).param == "session.voice"
    realtime_format = {**START, "session": {**START["session"], "audio": {"format": {"type": "audio/pcmu"}}}}
    assert validate_live_client_event(realtime_format).code == "missing_required_parameter"
    assert (
        validate_live_client_event({"type": "input_audio_buffer.append", "audio": ""}).code == "invalid_value"
    )
    lax = {
        **START,
        "session": {**START["session"], "audio": {"format": {"type": "audio/pcmu", "rate": "8000"}}},
    }
    assert validate_live_client_event(lax) is not None
    assert validate_live_client_event({"type": "response.create", "response": {}}).code == "unknown_parameter"
    # Server side: a nested Responses event is checked too.
    assert validate_live_server_event({"type": "session.output_audio.delta", "delta": "AA=="}) is None
    bad_nested = {"type": "response.event", "event_id": "e", "event": {"type": "response.output_text.delta"}}
    assert validate_live_server_event(bad_nested) is not None


async def test_the_handshake_wants_the_path_no_query_and_a_key(fake: FakeLiveServer) -> None:
    with pytest.raises(InvalidStatus):
        await connect(
            f"ws://127.0.0.1:{fake.port}/v1/live/sessions?model=gpt-live-1.1",
            additional_headers={"Authorization": "Bearer sk"},
        )
    with pytest.raises(InvalidStatus):
        await connect(f"ws://127.0.0.1:{fake.port}/v1/live/sessions")
    assert len(fake.validation_failures) == 2
    fake.validation_failures.clear()
    fake.refuse_status = HTTPStatus.FORBIDDEN
    with pytest.raises(InvalidStatus) as refused:
        await connect(
            f"ws://127.0.0.1:{fake.port}/v1/live/sessions", additional_headers={"Authorization": "Bearer sk"}
        )
    assert refused.value.response.status_code == 403 and fake.refused == 1


async def test_invalid_and_early_events_are_errors_and_recorded(fake: FakeLiveServer) -> None:
    ws, _ = await opened(fake)
    await ws.send(json.dumps({"type": "session.input_audio.append", "audio": "AAAA"}))  # before start
    assert (await next_of(ws, "error"))["error"]["code"] == "session_not_started"
    await ws.send(json.dumps(START))
    started = await next_of(ws, "session.started")
    assert started["client_event_id"] == "s1" and started["session"]["model"] == "gpt-live-1.1"
    await ws.send(json.dumps({"type": "session.commentary.append", "content": "hi"}))  # delegation_id missing
    assert (await next_of(ws, "error"))["error"]["param"] == "delegation_id"
    await ws.send(json.dumps({"type": "session.start", "session": {"model": "gpt-live-1.1", "tools": []}}))
    assert (await next_of(ws, "error"))["error"]["code"] == "unknown_parameter"
    assert len(fake.validation_failures) == 3
    await ws.close()


async def test_a_refused_model_is_an_error_about_session_start(fake: FakeLiveServer) -> None:
    fake.refused_models.add("gpt-live-1.1")
    ws, _ = await opened(fake)
    await ws.send(json.dumps(START))
    error = (await next_of(ws, "error"))["error"]
    assert error["code"] == "model_not_found" and error["client_event_id"] == "s1"
    await ws.close()


async def test_it_speaks_listens_stops_delegates_and_closes(fake: FakeLiveServer) -> None:
    ws, session = await opened(fake)
    await ws.send(json.dumps(START))
    await next_of(ws, "session.started")
    await ws.send(
        json.dumps({"type": "session.commentary.append", "content": "Greet.", "delegation_id": None})
    )
    first = await next_of(ws, "session.output_audio.delta")
    assert base64.b64decode(first["delta"]) == b"\x01" * 800  # 100 ms chunks of the scripted audio
    # The caller speaks: an input transcript, then the model's acknowledgement and a delegation.
    for frame in [LOUD] * 30 + [QUIET] * 30:
        await ws.send(
            json.dumps({"type": "session.input_audio.append", "audio": base64.b64encode(frame).decode()})
        )
    delta = await next_of(ws, "session.input_transcript.delta")
    assert delta["delta"].strip() == "Please"
    done: dict[str, Any] = {}
    while done.get("type") != "response.completed":
        event = await next_of(ws, "response.event")
        done = event["event"]
        if done["type"] == "response.output_item.done":
            call = done["item"]
    assert call["name"] == "take_message" and json.loads(call["arguments"]) == {
        "message": "call back",
        "urgency": "low",
    }
    assert event["delegation_id"] and done["response"]["usage"]["output_tokens"] > 0
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": '{"ok": true}'}
    await ws.send(json.dumps({"type": "response.item.create", "item": output}))
    await ws.send(json.dumps({"type": "response.create"}))
    text = await next_of(ws, "response.event")
    while text["event"]["type"] != "response.output_text.done":
        text = await next_of(ws, "response.event")
    assert text["event"]["text"] == "Saved."
    await fake.wait_until(lambda: [s.text for s in session.said] == ["Hello.", "One moment.", "Saved."])
    usage = await next_of(ws, "session.usage.updated")
    assert isinstance(usage["usage"]["seconds"], float)
    await ws.send(json.dumps({"type": "session.close"}))
    closed = await next_of(ws, "session.closed")
    assert closed["reason"] == "close_requested" and "seconds" in closed["usage"]
    await fake.wait_until(lambda: session.closed)
    assert session.close_code == 1000 and fake.validation_failures == [] and session.errors_sent == []
    assert session.function_outputs == [(call["call_id"], '{"ok": true}')]


async def test_the_model_stops_when_the_caller_talks_over_it(fake: FakeLiveServer) -> None:
    fake.speed = 1.0  # real time: the greeting takes 200 ms to stream
    ws, session = await opened(fake)
    await ws.send(json.dumps(START))
    await next_of(ws, "session.started")
    session.script.replies[0] = LiveReply([Say("A long hello.", audio=b"\x01" * 16000)])  # 2 s
    await ws.send(
        json.dumps({"type": "session.commentary.append", "content": "Greet.", "delegation_id": None})
    )
    await next_of(ws, "session.output_audio.delta")
    for frame in [LOUD] * 5:
        await ws.send(
            json.dumps({"type": "session.input_audio.append", "audio": base64.b64encode(frame).decode()})
        )
    await next_of(ws, "session.input_transcript.delta")
    await fake.wait_until(lambda: session.said[0].interrupted)
    assert len(session.said[0].audio) < 16000  # it stopped: the rest was never sent
    await ws.close()
