"""Tests for the fake OpenAI Realtime server, driven by the official SDK over a real socket.

Every test ends with a check that everything the fake sent validates against the SDK's
`RealtimeServerEvent` union, so the fake can't drift away from the GA protocol unnoticed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openai import AsyncOpenAI
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from callassist.simulator.audio import frames, silence, speak, tone
from callassist.tools.calendar import register_calendar_tools
from callassist.tools.call_control import register_call_tools
from callassist.tools.messages import register_message_tools
from callassist.tools.registry import ToolRegistry
from tests.fakes.protocol import MAX_DURATION_CLOSE_REASON, validate_server_event
from tests.fakes.realtime_server import (
    CallFunction,
    FakeRealtimeServer,
    FakeSession,
    Reply,
    ResponseContext,
    Say,
    Script,
    UseTool,
    demo_script,
)
from tests.fakes.tool_calls import Clock, resolve_time_intent

MODEL = "gpt-realtime-2.1"
INJECTED_UNKNOWN_TYPE = "future.event"

# The session callassist sends for Twilio (GA shape, μ-law in and out).
TWILIO_SESSION: dict[str, Any] = {
    "type": "realtime",
    "output_modalities": ["audio"],
    "instructions": "You are the phone assistant for Ana's bakery. Keep answers short.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcmu"},
            "noise_reduction": {"type": "near_field"},
            "transcription": {"model": "gpt-transcribe", "language": "en"},
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
                "create_response": True,
                "interrupt_response": True,
            },
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0},
    },
    "tools": [
        {
            "type": "function",
            "name": "book_table",
            "description": "Book a table.",
            "parameters": {"type": "object", "properties": {"party_size": {"type": "integer"}}},
        }
    ],
    "tool_choice": "auto",
    "truncation": {"type": "retention_ratio", "retention_ratio": 0.8},
    "max_output_tokens": "inf",
}


class EventReader:
    """Collects every event of an SDK connection in the background; tests wait on it."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.events: list[Any] = []
        self.ended = asyncio.Event()
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for event in self.connection:
                self.events.append(event)
                self._changed.set()
        finally:
            self.ended.set()
            self._changed.set()

    def mark(self) -> int:
        """Index to pass as `after` to wait only for events that arrive from now on."""
        return len(self.events)

    async def expect(
        self,
        event_type: str,
        predicate: Callable[[Any], bool] | None = None,
        *,
        after: int = 0,
        timeout: float = 5.0,  # noqa: ASYNC109 - a plain deadline reads better in tests
    ) -> Any:
        index = after
        try:
            async with asyncio.timeout(timeout):
                while True:
                    while index < len(self.events):
                        event = self.events[index]
                        index += 1
                        if event.type == event_type and (predicate is None or predicate(event)):
                            return event
                    if self.ended.is_set():
                        break
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass
        seen = [event.type for event in self.events[after:]]
        raise AssertionError(f"no {event_type!r} event (connection ended: {self.ended.is_set()}); got {seen}")

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


ServerFactory = Callable[..., Awaitable[FakeRealtimeServer]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    servers: list[FakeRealtimeServer] = []

    async def factory(**kwargs: Any) -> FakeRealtimeServer:
        server = FakeRealtimeServer(**kwargs)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop()
    # The fake only samples deltas at run time; here every single event is checked.
    problems = [
        f"session {session.index}: {sent.type}: {problem}"
        for server in servers
        for session in server.sessions
        for sent in session.server_events
        if sent.type != INJECTED_UNKNOWN_TYPE and (problem := validate_server_event(sent.event)) is not None
    ]
    assert problems == []


@contextlib.asynccontextmanager
async def connected(server: FakeRealtimeServer) -> AsyncIterator[tuple[Any, EventReader, FakeSession]]:
    index = len(server.sessions)
    async with (
        AsyncOpenAI(api_key="sk-test", base_url=server.base_url) as client,
        client.realtime.connect(model=MODEL) as connection,
    ):
        reader = EventReader(connection)
        try:
            session = await server.wait_for_session(index)
            yield connection, reader, session
        finally:
            await reader.stop()


def b64(audio: bytes) -> str:
    return base64.b64encode(audio).decode()


async def append_audio(connection: Any, audio: bytes) -> None:
    """Send audio the way callassist forwards Twilio media: one 20 ms frame per append."""
    for frame in frames(audio):
        await connection.input_audio_buffer.append(audio=b64(frame))


def decoded_audio(reader: EventReader, item_id: str) -> bytes:
    return b"".join(
        base64.b64decode(event.delta)
        for event in reader.events
        if event.type == "response.output_audio.delta" and event.item_id == item_id
    )


async def test_session_created_is_first_with_ga_defaults(make_server: ServerFactory) -> None:
    server = await make_server()
    async with connected(server) as (_, reader, session):
        await reader.expect("session.created")
        assert reader.events[0].type == "session.created"
        assert session.server_events[0].type == "session.created"
        created = session.server_events[0].event["session"]
        assert created["type"] == "realtime"
        assert created["id"].startswith("sess_")
        assert created["model"] == MODEL
        assert created["output_modalities"] == ["audio"]
        assert created["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert created["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert created["audio"]["output"]["voice"] == "alloy"
        assert created["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert created["tools"] == []
        assert created["instructions"]
        assert session.headers["Authorization"] == "Bearer sk-test"
        assert "OpenAI-Beta" not in session.headers
        assert session.query["model"] == MODEL
        assert session.model == MODEL
    assert server.validation_failures == []


async def test_ga_session_update_is_merged_and_echoed(make_server: ServerFactory) -> None:
    server = await make_server()
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=TWILIO_SESSION)
        updated = await reader.expect("session.updated")
        config = session.session_config
        assert config["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert config["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        assert config["audio"]["output"]["voice"] == "marin"
        assert config["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
        assert config["audio"]["input"]["transcription"]["model"] == "gpt-transcribe"
        assert [tool["name"] for tool in config["tools"]] == ["book_table"]
        assert config["instructions"] == TWILIO_SESSION["instructions"]
        assert session.server_events[-1].event["session"] == config
        assert updated.session.instructions == TWILIO_SESSION["instructions"]

        # Only the given fields change.
        mark = reader.mark()
        await connection.session.update(session={"type": "realtime", "instructions": "Be brief."})
        await reader.expect("session.updated", after=mark)
        assert session.session_config["instructions"] == "Be brief."
        assert session.session_config["audio"]["output"]["voice"] == "marin"
    assert server.validation_failures == []


async def test_beta_shapes_and_unknown_events_are_rejected_but_the_session_stays_open(
    make_server: ServerFactory,
) -> None:
    server = await make_server()
    async with connected(server) as (connection, reader, session):
        cases = [
            (
                {"type": "realtime", "input_audio_format": "g711_ulaw"},
                "unknown_parameter",
                "Unknown parameter: 'session.input_audio_format'.",
            ),
            (
                {"instructions": "no type"},
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
            ),
            (
                {"type": "realtime", "audio": {"input": {"format": {"type": "g711_ulaw"}}}},
                "invalid_value",
                "Invalid value: 'g711_ulaw'. "
                "Supported values are: 'audio/pcm', 'audio/pcmu', and 'audio/pcma'.",
            ),
        ]
        for number, (beta_session, code, message) in enumerate(cases):
            event_id = f"evt_beta_{number}"
            await connection.send({"type": "session.update", "event_id": event_id, "session": beta_session})
            error = await reader.expect("error", lambda e, eid=event_id: e.error.event_id == eid)
            assert (error.error.type, error.error.code, error.error.message) == (
                "invalid_request_error",
                code,
                message,
            )

        await connection.send(
            {"type": "transcription_session.update", "event_id": "evt_unknown", "session": {}}
        )
        error = await reader.expect("error", lambda e: e.error.event_id == "evt_unknown")
        assert error.error.code == "invalid_value"
        assert error.error.message.startswith(
            "Invalid value: 'transcription_session.update'. Supported values are: 'session.update', "
        )

        await connection.send({"type": "conversation.item.truncate", "event_id": "evt_str", "item_id": "x",
                               "content_index": 0, "audio_end_ms": "12"})  # fmt: skip
        error = await reader.expect("error", lambda e: e.error.event_id == "evt_str")
        assert error.error.code == "invalid_type"
        assert error.error.message == (
            "Invalid type for 'audio_end_ms': expected an integer, but got a string instead."
        )

        # Still open: a valid update goes through.
        mark = reader.mark()
        await connection.session.update(session={"type": "realtime", "instructions": "Still here."})
        await reader.expect("session.updated", after=mark)
        assert session.session_config["instructions"] == "Still here."
        assert not session.closed
    assert len(server.validation_failures) == 5
    assert "input_audio_format" in server.validation_failures[0]


async def test_handshake_rules_and_malformed_frames(make_server: ServerFactory) -> None:
    server = await make_server()
    url = f"{server.ws_url}?model={MODEL}"

    with pytest.raises(InvalidStatus) as rejected:
        async with ws_connect(url):
            pass
    assert rejected.value.response.status_code == 401

    beta_headers = {"Authorization": "Bearer sk-test", "OpenAI-Beta": "realtime=v1"}
    async with ws_connect(url, additional_headers=beta_headers) as ws:
        error = json.loads(await ws.recv())
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["code"] == "beta_api_shape_disabled"
        with pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000

    async with ws_connect(url, additional_headers={"Authorization": "Bearer sk-test"}) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send("{not json")
        assert json.loads(await ws.recv())["error"]["code"] == "invalid_json"
        await ws.send(
            json.dumps({"type": "input_audio_buffer.append", "event_id": "evt_b64", "audio": "@@@"})
        )
        error = json.loads(await ws.recv())["error"]
        assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", "audio", "evt_b64")

    failures = server.validation_failures
    assert len(failures) == 4
    assert "Authorization" in failures[0]
    assert "beta" in failures[1]
    assert "malformed JSON" in failures[2]
    assert "base64" in failures[3]


async def test_caller_speech_is_detected_transcribed_and_answered(make_server: ServerFactory) -> None:
    answer = Say("Sure, for how many people?")
    script = Script(replies=[Reply([answer])], transcripts=["I'd like to book a table"])
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=TWILIO_SESSION)
        await reader.expect("session.updated")
        caller = silence(400) + speak("I would like to book a table for two") + silence(800)
        await append_audio(connection, caller)

        started = await reader.expect("input_audio_buffer.speech_started")
        stopped = await reader.expect("input_audio_buffer.speech_stopped")
        committed = await reader.expect("input_audio_buffer.committed")
        completed = await reader.expect("conversation.item.input_audio_transcription.completed")
        done = await reader.expect("response.done")

        assert started.item_id == stopped.item_id == committed.item_id == completed.item_id
        # Speech begins ~400 ms in; the start includes 300 ms of prefix padding.
        assert 60 <= started.audio_start_ms <= 160
        assert started.audio_start_ms < stopped.audio_end_ms <= len(caller) // 8
        assert completed.transcript == "I'd like to book a table"
        assert completed.usage.type == "duration"
        assert bytes(session.audio_in) == b"".join(frames(caller))

        assert done.response.status == "completed"
        item_id = session.responses[0]["output"][0]["id"]
        assert decoded_audio(reader, item_id) == answer.audio == speak(answer.text)
        assert bytes(session.audio_out[item_id]) == answer.audio
        assert session.responses[0]["output"][0]["content"][0]["transcript"] == answer.text

        types = [sent.type for sent in session.server_events if not sent.type.endswith(".delta")]
        turn = types[types.index("input_audio_buffer.speech_started") :]
        assert turn == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.input_audio_transcription.completed",
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added",
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
            "rate_limits.updated",
        ]

        usage = session.responses[0]["usage"]
        user_ms = stopped.audio_end_ms - started.audio_start_ms
        assert usage["input_token_details"]["audio_tokens"] == math.ceil(user_ms / 100)
        assert usage["output_token_details"]["audio_tokens"] == math.ceil(len(answer.audio) / 8 / 50)
        assert usage["output_token_details"]["text_tokens"] == math.ceil(len(answer.text) / 4)
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert session.items[0]["content"][0]["transcript"] == "I'd like to book a table"
    assert server.validation_failures == []


async def test_barge_in_cancels_the_response_and_truncate_is_checked(make_server: ServerFactory) -> None:
    script = Script(replies=[Reply([Say("Let me tell you a long story about bread.", audio=tone(3000))])])
    server = await make_server(script=script, speed=1, first_delta_ms=10)
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=TWILIO_SESSION)
        await reader.expect("session.updated")
        await connection.response.create()
        first_delta = await reader.expect("response.output_audio.delta")
        item_id = first_delta.item_id

        await append_audio(connection, tone(300, frequency=300) + silence(700))
        started = await reader.expect("input_audio_buffer.speech_started")
        cancelled = await reader.expect("response.done", lambda e: e.response.status == "cancelled")
        assert cancelled.response.status_details.type == "cancelled"
        assert cancelled.response.status_details.reason == "turn_detected"
        assert reader.events.index(started) < reader.events.index(cancelled)
        item_done = await reader.expect("response.output_item.done", lambda e: e.item.id == item_id)
        assert item_done.item.status == "incomplete"

        generated_ms = len(session.audio_out[item_id]) // 8
        assert 0 < generated_ms < 3000
        assert decoded_audio(reader, item_id) == bytes(session.audio_out[item_id])

        too_far = generated_ms + 500
        await connection.conversation.item.truncate(
            item_id=item_id, content_index=0, audio_end_ms=too_far, event_id="evt_far"
        )
        error = await reader.expect("error", lambda e: e.error.event_id == "evt_far")
        assert error.error.code == "invalid_value"
        assert error.error.message == f"Audio content of {generated_ms}ms is already shorter than {too_far}ms"

        await connection.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=50)
        truncated = await reader.expect("conversation.item.truncated")
        assert (truncated.item_id, truncated.audio_end_ms) == (item_id, 50)
        assert session.truncations[-1]["audio_end_ms"] == 50

        # The caller's turn still ends with a reply (the script's default).
        await reader.expect("response.done", lambda e: e.response.status == "completed")
    assert server.validation_failures == []


async def test_truncate_after_a_completed_response(make_server: ServerFactory) -> None:
    script = Script(replies=[Reply([Say("One two three four.", audio=tone(1000))])])
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.response.create()
        done = await reader.expect("response.done")
        item_id = session.responses[0]["output"][0]["id"]
        assert done.response.output[0].id == item_id

        await connection.conversation.item.truncate(
            item_id=item_id, content_index=0, audio_end_ms=1500, event_id="evt_long"
        )
        error = await reader.expect("error", lambda e: e.error.event_id == "evt_long")
        assert error.error.message == "Audio content of 1000ms is already shorter than 1500ms"

        await connection.conversation.item.truncate(item_id="item_missing", content_index=0, audio_end_ms=0)
        assert (
            await reader.expect("error", lambda e: e.error.code == "item_not_found")
        ).error.param == "item_id"

        await connection.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=500)
        await reader.expect("conversation.item.truncated")
        assert session.items[0]["content"][0]["transcript"] == "One two th"
        assert session.truncations == [
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 500,
            }
        ]
    assert server.validation_failures == []


async def test_one_active_response_and_cancel_errors(make_server: ServerFactory) -> None:
    script = Script(replies=[Reply([Say("A slow answer.", audio=tone(2000))])])
    server = await make_server(script=script, speed=1)
    async with connected(server) as (connection, reader, session):
        await connection.response.cancel(event_id="evt_cancel_idle")
        error = await reader.expect("error", lambda e: e.error.event_id == "evt_cancel_idle")
        assert error.error.code == "response_cancel_not_active"
        assert error.error.message == "Cancellation failed: no active response found"

        await connection.response.create()
        created = await reader.expect("response.created")
        await connection.response.create(event_id="evt_second")
        error = await reader.expect("error", lambda e: e.error.event_id == "evt_second")
        assert error.error.code == "conversation_already_has_active_response"
        assert error.error.message == (
            f"Conversation already has an active response in progress: {created.response.id}. "
            "Wait until the response is finished before creating a new one."
        )

        await connection.response.cancel()
        done = await reader.expect("response.done")
        assert (done.response.status, done.response.status_details.reason) == (
            "cancelled",
            "client_cancelled",
        )
        assert session.active_response_id is None
        assert [error["code"] for error in session.errors_sent] == [
            "response_cancel_not_active",
            "conversation_already_has_active_response",
        ]
    # State-dependent errors are not validation failures.
    assert server.validation_failures == []


async def test_function_call_round_trip(make_server: ServerFactory) -> None:
    seen: list[ResponseContext] = []

    def confirm(context: ResponseContext) -> Reply:
        seen.append(context)
        confirmation = json.loads(context.last_function_output or "{}")["confirmation"]
        return Reply([Say(f"Booked, your code is {confirmation}.", audio=tone(200))])

    script = Script(replies=[Reply([CallFunction("book_table", {"party_size": 2})]), confirm])
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=TWILIO_SESSION)
        await connection.response.create()
        arguments_done = await reader.expect("response.function_call_arguments.done")
        assert arguments_done.name == "book_table"
        assert json.loads(arguments_done.arguments) == {"party_size": 2}
        assert arguments_done.call_id.startswith("call_")
        first = await reader.expect("response.done")
        assert first.response.output[0].type == "function_call"

        await connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": "call_unknown", "output": "{}"},
            event_id="evt_bad",
        )
        error = await reader.expect("error", lambda e: e.error.event_id == "evt_bad")
        assert error.error.code == "invalid_tool_call_id"
        assert error.error.message == "Tool call ID 'call_unknown' not found in conversation."

        output = json.dumps({"confirmation": "A17"})
        await connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": arguments_done.call_id, "output": output}
        )
        await reader.expect("conversation.item.done", lambda e: e.item.type == "function_call_output")
        mark = reader.mark()
        await connection.response.create()
        await reader.expect("response.done", after=mark)

        assert session.responses[1]["output"][0]["content"][0]["transcript"] == "Booked, your code is A17."
        context = seen[0]
        assert [item["type"] for item in context.items] == ["function_call", "function_call_output"]
        assert context.function_outputs == [(arguments_done.call_id, output)]
        assert context.last_function_output == output
        assert context.fake_session is session
        assert context.instructions == TWILIO_SESSION["instructions"]
        assert session.function_outputs == [(arguments_done.call_id, output)]
    assert server.validation_failures == []


async def test_out_of_band_text_response_runs_beside_the_default_one(make_server: ServerFactory) -> None:
    summary = json.dumps({"summary": "Caller booked a table for two."})
    script = Script(replies=[Reply([Say("Still talking.", audio=tone(2000))])], summary=summary)
    server = await make_server(script=script, speed=1)
    async with connected(server) as (connection, reader, session):
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi there"}]}
        )
        user_item = await reader.expect("conversation.item.done")
        await connection.response.create()
        await reader.expect("response.created")

        await connection.send(
            {
                "type": "response.create",
                "event_id": "evt_summary",
                "response": {
                    "conversation": "none",
                    "output_modalities": ["text"],
                    "instructions": "Summarize the call.",
                    "metadata": {"purpose": "post_call_summary"},
                    "input": [{"type": "item_reference", "id": user_item.item.id}],
                },
            }
        )
        text_done = await reader.expect("response.output_text.done")
        assert text_done.text == summary
        oob = await reader.expect("response.done", lambda e: (e.response.metadata or {}).get("purpose"))
        assert oob.response.status == "completed"
        assert oob.response.conversation_id is None
        assert oob.response.output[0].content[0].text == summary
        assert oob.response.output[0].id not in {item["id"] for item in session.items}
        assert session.active_response_id is not None  # the default response is still speaking

        await connection.response.cancel()
        await reader.expect("response.done", lambda e: e.response.status == "cancelled")
        record = next(r for r in session.responses if r["conversation"] == "none")
        assert record["request"]["instructions"] == "Summarize the call."
        assert not any(error.get("event_id") == "evt_summary" for error in session.errors_sent)
    assert server.validation_failures == []


async def test_manual_turns_without_vad(make_server: ServerFactory) -> None:
    server = await make_server(script=Script(transcripts=["hello"]), speed=50)
    manual = {
        "type": "realtime",
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "turn_detection": None,
                "transcription": {"model": "whisper-1"},
            }
        },
    }
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=manual)
        await reader.expect("session.updated")
        await connection.input_audio_buffer.commit(event_id="evt_empty")
        error = await reader.expect("error", lambda e: e.error.event_id == "evt_empty")
        assert error.error.code == "input_audio_buffer_commit_empty"

        await append_audio(connection, tone(500))
        await connection.input_audio_buffer.commit()
        completed = await reader.expect("conversation.item.input_audio_transcription.completed")
        deltas = [e for e in reader.events if e.type == "conversation.item.input_audio_transcription.delta"]
        assert [delta.delta for delta in deltas] == ["hello"]  # whisper-1: one delta
        assert completed.usage.seconds == 0.5
        assert session.responses == [] and session.active_response_id is None  # no VAD, no auto reply
        assert not any(e.type == "input_audio_buffer.speech_started" for e in reader.events)

        await append_audio(connection, tone(200))
        await connection.input_audio_buffer.clear()
        await reader.expect("input_audio_buffer.cleared")
    assert server.validation_failures == []


async def test_items_retrieve_delete_ordering_and_voice_lock(make_server: ServerFactory) -> None:
    script = Script(replies=[Reply([Say("Hi.", audio=tone(300))])])
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=TWILIO_SESSION)
        await connection.response.create()
        await reader.expect("response.done")
        assistant_id = session.items[0]["id"]

        # previous_item_id "root" puts the item first.
        await connection.conversation.item.create(
            previous_item_id="root",
            item={
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "Context."}],
            },
        )
        added = await reader.expect("conversation.item.added", lambda e: e.item.role == "system")
        assert added.previous_item_id is None
        assert [item["role"] for item in session.items] == ["system", "assistant"]

        await connection.conversation.item.retrieve(item_id=assistant_id)
        retrieved = await reader.expect("conversation.item.retrieved")
        assert base64.b64decode(retrieved.item.content[0].audio) == tone(300)

        await connection.conversation.item.delete(item_id=added.item.id)
        await reader.expect("conversation.item.deleted")
        await connection.conversation.item.delete(item_id=added.item.id, event_id="evt_gone")
        error = await reader.expect("error", lambda e: e.error.event_id == "evt_gone")
        assert error.error.code == "item_not_found"
        assert [item["id"] for item in session.items] == [assistant_id]

        # The voice is fixed once the model has spoken.
        await connection.session.update(
            session={"type": "realtime", "audio": {"output": {"voice": "cedar"}}}, event_id="evt_voice"
        )
        error = await reader.expect("error", lambda e: e.error.event_id == "evt_voice")
        assert error.error.code == "cannot_update_voice"
        assert session.session_config["audio"]["output"]["voice"] == "marin"
    assert server.validation_failures == []


async def test_idle_timeout_prompts_the_model(make_server: ServerFactory) -> None:
    script = Script(
        replies=[Reply([Say("Hello?", audio=tone(100))]), Reply([Say("Are you there?", audio=tone(100))])]
    )
    server = await make_server(script=script, speed=50)
    config = json.loads(json.dumps(TWILIO_SESSION))
    config["audio"]["input"]["turn_detection"]["idle_timeout_ms"] = 150
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=config)
        await connection.response.create()
        await reader.expect("response.done")
        triggered = await reader.expect("input_audio_buffer.timeout_triggered")
        await reader.expect("input_audio_buffer.committed", lambda e: e.item_id == triggered.item_id)
        await reader.expect("response.done", lambda e: e.response.id != session.responses[0]["id"])
        assert session.responses[1]["output"][0]["content"][0]["transcript"] == "Are you there?"
    assert server.validation_failures == []


async def test_server_close_and_maximum_duration(make_server: ServerFactory) -> None:
    server = await make_server()
    async with connected(server) as (_, reader, session):
        await reader.expect("session.created")
        await session.close(1001, "going away")
        # The SDK ends iteration quietly on 1001 (no on_reconnecting given).
        await asyncio.wait_for(reader.ended.wait(), 5)
        assert session.closed and session.close_code == 1001

    capped = await make_server(max_session_seconds=0.2)
    async with ws_connect(
        f"{capped.ws_url}?model={MODEL}", additional_headers={"Authorization": "Bearer sk-test"}
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, MAX_DURATION_CLOSE_REASON)
    assert capped.sessions[0].close_code == 1001


async def test_shared_script_continues_across_reconnects_and_injection(make_server: ServerFactory) -> None:
    script = Script(
        replies=[Reply([Say("First.", audio=tone(100))]), Reply([Say("Second.", audio=tone(100))])]
    )
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.response.create()
        await reader.expect("response.done")
        await session.send_error("rate_limit_exceeded", "Slow down.", type="rate_limit_error")
        injected = await reader.expect("error", lambda e: e.error.code == "rate_limit_exceeded")
        assert injected.error.type == "rate_limit_error"
        await session.send_raw(json.dumps({"type": INJECTED_UNKNOWN_TYPE, "event_id": "event_x"}))
        await reader.expect(INJECTED_UNKNOWN_TYPE)
        await session.close()
    async with connected(server) as (connection, reader, second_session):
        await connection.response.create()
        await reader.expect("response.done")
        assert second_session.responses[0]["output"][0]["content"][0]["transcript"] == "Second."
        await second_session.wait_for_client_event("response.create")
        await second_session.wait_for_server_event("rate_limits.updated")
    await server.wait_until(lambda: all(s.closed for s in server.sessions))
    assert server.validation_failures == []


async def test_wait_helpers_time_out_with_a_useful_message(make_server: ServerFactory) -> None:
    server = await make_server()
    async with connected(server) as (_, reader, session):
        await reader.expect("session.created")
        with pytest.raises(TimeoutError, match=r"no server event 'response\.done'"):
            await session.wait_for_server_event("response.done", timeout=0.05)
        with pytest.raises(TimeoutError, match="waiting for two sessions"):
            await server.wait_until(
                lambda: len(server.sessions) == 2, timeout=0.05, description="two sessions"
            )


# ---------------------------------------------------------------------------------------------
# The model uses the declared tools; the service's less obvious behaviours
# ---------------------------------------------------------------------------------------------

NOW_LINE = (
    "Right now it is Wednesday, December 2, 2026, 3:04 pm in Dana's time zone (America/New_York). "
    "Resolve relative dates such as 'tomorrow' or 'next Tuesday' from this."
)
CREATE_EVENT: dict[str, Any] = {
    "type": "function",
    "name": "create_event",
    "description": "Book a meeting with Dana.",
    "parameters": {
        "type": "object",
        "properties": {
            "title": {
                "type": "string",
                "minLength": 1,
                "description": "Short title, e.g. 'Call with Alex Kim'",
            },
            "start": {"type": "string", "description": "Start, Dana's local time, e.g. 2026-11-25T14:00"},
            "end": {"type": "string", "description": "End, Dana's local time, instead of a duration"},
            "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 480, "description": "Length"},
            "caller_name": {"type": "string", "minLength": 1, "description": "The caller's name"},
            "notes": {"type": "string", "description": "What it's about, if they said"},
        },
        "required": ["title", "start", "caller_name"],
        "additionalProperties": False,
    },
}
CHECK_AVAILABILITY: dict[str, Any] = {
    "type": "function",
    "name": "check_availability",
    "description": "Find when Dana is free.",
    "parameters": {
        "type": "object",
        "properties": {
            "date": {"type": "string", "description": "First day to check, YYYY-MM-DD"},
            "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 480, "description": "Length"},
        },
        "required": ["date"],
        "additionalProperties": False,
    },
}
# The registry bug of issue 8: the property `title` is gone while `required` still names it.
BROKEN_CREATE_EVENT: dict[str, Any] = json.loads(json.dumps(CREATE_EVENT))
del BROKEN_CREATE_EVENT["parameters"]["properties"]["title"]


def scheduling_session(*tools: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """TWILIO_SESSION with a clock line in the instructions and the given tools."""
    session = json.loads(json.dumps(TWILIO_SESSION))
    session["instructions"] = f"You are Dana's phone assistant.\n{NOW_LINE}"
    session["tools"] = list(tools)
    session.update(changes)
    return session


def arguments_of(session: FakeSession) -> list[dict[str, Any]]:
    return [
        json.loads(sent.event["arguments"])
        for sent in session.server_events
        if sent.type == "response.function_call_arguments.done"
    ]


def test_time_intents_resolve_against_the_instructions_clock() -> None:
    clock = Clock.from_instructions(f"Be nice.\n{NOW_LINE}")
    assert (clock.today.isoformat(), clock.zone, clock.source) == (
        "2026-12-02",
        "America/New_York",
        "instructions",
    )
    cases = {
        "tomorrow 14:00": "2026-12-03 14:00",
        "today 09:30": "2026-12-02 09:30",
        "2026-12-03 14:00": "2026-12-03 14:00",
        "next Tuesday 10:00": "2026-12-08 10:00",
        "Wednesday at 2 pm": "2026-12-09 14:00",  # a weekday is the first one after today
        "noon tomorrow": "2026-12-03 12:00",
        "tomorrow": "2026-12-03",
    }
    for text, expected in cases.items():
        resolved = resolve_time_intent(text, clock)
        assert resolved is not None, text
        day, at = resolved
        assert (f"{day} {at:%H:%M}" if at else str(day)) == expected, text
    assert resolve_time_intent("next blursday", clock) is None
    assert resolve_time_intent("tomorrow 2", clock) is None  # no minutes, no am/pm: not a time
    # No date in the line: today in the zone it names.
    assert Clock.from_instructions("Right now it is now in Dana's time zone (Europe/Paris).").source == "zone"


async def test_use_tool_builds_arguments_from_the_declared_schema(make_server: ServerFactory) -> None:
    script = Script(
        replies=[
            Reply(
                [
                    Say("One moment.", audio=tone(100)),
                    UseTool(
                        "create_event",
                        intent={
                            "title": "Call with Alex Kim",
                            "start": "tomorrow 14:00",
                            "end": "tomorrow 15:30",
                            "caller_name": "Alex Kim",
                        },
                    ),
                    UseTool("check_availability", intent={"date": "next Tuesday 10:00"}),
                ]
            ),
            # Nothing but the required properties the model must fill in itself.
            Reply([UseTool("create_event"), UseTool("check_availability")]),
        ]
    )
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=scheduling_session(CREATE_EVENT, CHECK_AVAILABILITY))
        await connection.response.create()
        await reader.expect("response.done")
        mark = reader.mark()
        await connection.response.create()
        await reader.expect("response.done", after=mark)

        booked, checked, plausible_booking, plausible_check = arguments_of(session)
        assert booked == {
            "title": "Call with Alex Kim",
            "start": "2026-12-03T14:00",  # written like the description's example
            "end": "2026-12-03T15:30",  # no example of its own: like its sibling "start"
            "caller_name": "Alex Kim",
        }
        assert checked == {"date": "2026-12-08"}  # a date-only property gets the date
        # Required properties get plausible values; optional ones are left out.
        assert plausible_booking == {
            "title": "Call with Alex Kim",  # the description's example
            "start": "2026-12-03T10:00",
            "caller_name": "Alex Kim",
        }
        assert plausible_check == {"date": "2026-12-03"}
        for arguments, tool in zip(
            arguments_of(session), [CREATE_EVENT, CHECK_AVAILABILITY] * 2, strict=True
        ):
            assert list(Draft202012Validator(tool["parameters"]).iter_errors(arguments)) == []
        first = session.responses[0]["output"]
        assert [item["type"] for item in first] == ["message", "function_call", "function_call"]
        assert all(item["status"] == "completed" for item in first)
    assert server.validation_failures == []


async def test_a_schema_no_model_can_satisfy_is_a_recorded_violation(make_server: ServerFactory) -> None:
    invalid = {
        "type": "function",
        "name": "take_message",
        "description": "Take a message.",
        "parameters": {"type": "object", "properties": {"message": {"type": "strin"}}},
    }
    script = Script(
        replies=[
            Reply(
                [UseTool("create_event", intent={"title": "Call with Alex Kim", "start": "tomorrow 14:00"})]
            ),
            Reply([UseTool("end_call")]),  # not declared at all
        ]
    )
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=scheduling_session(BROKEN_CREATE_EVENT, invalid))
        await reader.expect("session.updated")
        # Found when declared, before anything calls the tool.
        assert len(server.validation_failures) == 2
        assert "'title' is not in 'properties'" in server.validation_failures[0]
        assert "no argument object satisfies the schema" in server.validation_failures[0]
        assert "invalid JSON Schema at properties/message/type" in server.validation_failures[1]

        await connection.response.create()
        done = await reader.expect("response.done")
        # The model emits what a schema-following model can: no title.
        [arguments] = arguments_of(session)
        assert arguments == {"start": "2026-12-03T14:00", "caller_name": "Alex Kim"}
        assert done.response.output[0].type == "function_call"
        failures = server.validation_failures[2:]
        assert any("the model cannot produce 'title'" in failure for failure in failures)
        assert any("fail the schema" in f and "'title' is a required property" in f for f in failures)

        before = len(server.validation_failures)
        mark = reader.mark()
        await connection.response.create()
        undeclared = await reader.expect("response.done", after=mark)
        assert undeclared.response.output == []  # a model can't call a tool it wasn't given
        assert "'end_call'" in server.validation_failures[before]
        assert "only calls a declared tool" in server.validation_failures[before]


async def test_response_tools_override_the_session_tools(make_server: ServerFactory) -> None:
    script = Script(
        replies=[
            Reply([UseTool("check_availability", intent={"date": "tomorrow"})]),
            Reply([UseTool("create_event", intent={"title": "Sync", "start": "today 16:00"})]),
        ]
    )
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=scheduling_session(CREATE_EVENT))
        await reader.expect("session.updated")
        await connection.response.create(response={"tools": [CHECK_AVAILABILITY]})
        await reader.expect("response.done")
        assert arguments_of(session) == [{"date": "2026-12-03"}]
        assert server.validation_failures == []

        # The request's instructions replace the session's: its own clock line is the one used.
        mark = reader.mark()
        later = NOW_LINE.replace("Wednesday, December 2", "Friday, December 4")
        await connection.response.create(response={"tools": [CHECK_AVAILABILITY], "instructions": later})
        await reader.expect("response.done", after=mark)
        assert "create_event" in server.validation_failures[0]  # not among this response's tools
        assert len(arguments_of(session)) == 1


async def test_response_instructions_replace_the_session_instructions(make_server: ServerFactory) -> None:
    seen: list[ResponseContext] = []

    def remember(context: ResponseContext) -> Reply:
        seen.append(context)
        return Reply([UseTool("check_availability", intent={"date": "tomorrow"})])

    server = await make_server(script=Script(replies=[remember, remember]), speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=scheduling_session(CHECK_AVAILABILITY))
        await connection.response.create()
        await reader.expect("response.done")
        mark = reader.mark()
        only_this = "Say goodbye.\n" + NOW_LINE.replace("Wednesday, December 2", "Monday, December 7")
        await connection.response.create(response={"instructions": only_this})
        await reader.expect("response.done", after=mark)

        assert seen[0].instructions == session.session_config["instructions"]
        assert seen[1].instructions == only_this  # replaced, not appended
        assert seen[1].tool_names == ["check_availability"]  # tools still inherited
        # "tomorrow" as the model saw it: from the clock of the instructions it was given.
        assert arguments_of(session) == [{"date": "2026-12-03"}, {"date": "2026-12-08"}]
    assert server.validation_failures == []


async def test_a_barge_in_while_arguments_stream_leaves_an_incomplete_call(
    make_server: ServerFactory,
) -> None:
    intent = {
        "title": "Quarterly planning with Alex Kim",
        "start": "tomorrow 14:00",
        "caller_name": "Alex Kim",
        "notes": "Bring the budget numbers and the new hiring plan",
    }
    script = Script(replies=[Reply([UseTool("create_event", intent=intent)])], argument_delta_s=0.3)
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=scheduling_session(CREATE_EVENT))
        await reader.expect("session.updated")
        await connection.response.create()
        await reader.expect("response.function_call_arguments.delta")

        await append_audio(connection, tone(300, frequency=300) + silence(700))
        await reader.expect("input_audio_buffer.speech_started")
        arguments_done = await reader.expect("response.function_call_arguments.done")
        cancelled = await reader.expect("response.done", lambda e: e.response.status == "cancelled")

        deltas = [e.delta for e in reader.events if e.type == "response.function_call_arguments.delta"]
        full = json.dumps({**intent, "start": "2026-12-03T14:00"})
        assert arguments_done.arguments == "".join(deltas)
        assert 0 < len(arguments_done.arguments) < len(full)
        assert full.startswith(arguments_done.arguments)
        assert cancelled.response.status_details.reason == "turn_detected"
        [call] = cancelled.response.output
        assert (call.type, call.status, call.arguments) == (
            "function_call",
            "incomplete",
            arguments_done.arguments,
        )
        item_done = await reader.expect("response.output_item.done", lambda e: e.item.id == call.id)
        assert item_done.item.status == "incomplete"
        assert next(i for i in session.items if i["id"] == call.id)["status"] == "incomplete"
    assert server.validation_failures == []


async def test_a_cancel_before_any_argument_gives_empty_arguments(make_server: ServerFactory) -> None:
    script = Script(replies=[Reply([UseTool("check_availability", intent={"date": "tomorrow"}, delta_s=30)])])
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, _session):
        await connection.session.update(session=scheduling_session(CHECK_AVAILABILITY))
        await connection.response.create()
        await reader.expect("response.output_item.added", lambda e: e.item.type == "function_call")
        await connection.response.cancel()
        arguments_done = await reader.expect("response.function_call_arguments.done")
        done = await reader.expect("response.done")
        assert arguments_done.arguments == ""
        assert (done.response.status, done.response.status_details.reason) == (
            "cancelled",
            "client_cancelled",
        )
        assert (done.response.output[0].status, done.response.output[0].arguments) == ("incomplete", "")
    assert server.validation_failures == []


async def test_max_output_tokens_ends_a_call_incomplete(make_server: ServerFactory) -> None:
    script = Script(
        replies=[Reply([UseTool("create_event", intent={"title": "A long title", "start": "today 16:00"})])]
    )
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, _session):
        await connection.session.update(session=scheduling_session(CREATE_EVENT))
        await connection.response.create(response={"max_output_tokens": 6})
        arguments_done = await reader.expect("response.function_call_arguments.done")
        done = await reader.expect("response.done")
        assert (done.response.status, done.response.status_details.type) == ("incomplete", "incomplete")
        assert done.response.status_details.reason == "max_output_tokens"
        assert done.response.output[0].status == "incomplete"
        # 6 tokens: 3 for the name "create_event", 3 (12 characters) of arguments.
        assert arguments_done.arguments == '{"title": "A'
        assert done.response.usage.output_tokens == 6
    assert server.validation_failures == []


async def test_a_transcript_can_arrive_after_the_answer(make_server: ServerFactory) -> None:
    seen: list[str | None] = []

    def answer(context: ResponseContext) -> Reply:
        seen.append(context.last_user_transcript)
        return Reply([Say("Sure.", audio=tone(200))])

    script = Script(replies=[answer], transcripts=["Book me in tomorrow"], transcript_delay_s=1.0)
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=TWILIO_SESSION)
        await reader.expect("session.updated")
        await append_audio(connection, tone(400, frequency=300) + silence(700))
        done = await reader.expect("response.done")
        completed = await reader.expect("conversation.item.input_audio_transcription.completed")
        assert reader.events.index(done) < reader.events.index(completed)
        assert done.response.status == "completed"
        assert seen == [None]  # the model answered before the transcript existed
        assert completed.transcript == "Book me in tomorrow"
        assert session.items[0]["content"][0]["transcript"] == "Book me in tomorrow"
    assert server.validation_failures == []


async def test_text_only_answer_after_a_text_replay(make_server: ServerFactory) -> None:
    script = Script(
        replies=[Reply([Say("Where were we?")]), Reply([Say("Where were we?", audio=tone(200))])],
        text_only_after_replay=1,
    )
    server = await make_server(script=script, speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=TWILIO_SESSION)
        for role, kind, text in [
            ("user", "input_text", "Book me in."),
            ("assistant", "output_text", "Sure."),
        ]:
            await connection.conversation.item.create(
                item={"type": "message", "role": role, "content": [{"type": kind, "text": text}]}
            )
        await connection.response.create()
        text_done = await reader.expect("response.done")
        assert text_done.response.output_modalities == ["audio"]  # asked for audio...
        assert text_done.response.output[0].content[0].type == "output_text"  # ...got text
        assert text_done.response.output[0].content[0].text == "Where were we?"
        assert not any(e.type == "response.output_audio.delta" for e in reader.events)

        mark = reader.mark()
        await connection.response.create(response={"instructions": "Say your last answer out loud."})
        spoken = await reader.expect("response.done", after=mark)
        assert spoken.response.output[0].content[0].type == "output_audio"
        assert bytes(session.audio_out[spoken.response.output[0].id]) == tone(200)
    assert server.validation_failures == []


async def test_out_of_band_responses_inherit_the_session_tools(make_server: ServerFactory) -> None:
    summary = json.dumps({"summary": "Booked."})
    script = Script(summary=summary, summary_tool=UseTool("create_event", intent={"title": "Follow-up"}))
    server = await make_server(script=script, speed=50)
    out_of_band = {"conversation": "none", "output_modalities": ["text"], "metadata": {"purpose": "summary"}}
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=scheduling_session(CREATE_EVENT))
        await connection.send({"type": "response.create", "response": out_of_band})
        inherited = await reader.expect("response.done")
        [call] = inherited.response.output
        assert call.type == "function_call" and call.name == "create_event"
        assert json.loads(call.arguments) == {
            "title": "Follow-up",
            "start": "2026-12-03T10:00",
            "caller_name": "Alex Kim",
        }
        assert inherited.response.conversation_id is None
        assert call.id not in {item["id"] for item in session.items}

        for override in ({"tool_choice": "none"}, {"tools": []}):
            mark = reader.mark()
            await connection.send({"type": "response.create", "response": {**out_of_band, **override}})
            done = await reader.expect("response.done", after=mark)
            assert done.response.output[0].type == "message"
            assert done.response.output[0].content[0].text == summary

        # A session with tool_choice "none" is inherited too.
        await connection.session.update(session={"type": "realtime", "tool_choice": "none"})
        mark = reader.mark()
        await connection.send({"type": "response.create", "response": out_of_band})
        done = await reader.expect("response.done", after=mark)
        assert done.response.output[0].content[0].text == summary
    assert server.validation_failures == []


async def test_a_summary_can_take_a_while(make_server: ServerFactory) -> None:
    server = await make_server(script=Script(summary_delay_s=0.6), speed=50)
    async with connected(server) as (connection, reader, session):
        await connection.send(
            {"type": "response.create", "response": {"conversation": "none", "output_modalities": ["text"]}}
        )
        created = await session.wait_for_server_event("response.created")
        await reader.expect("response.done")
        done_at = next(e.t for e in session.server_events if e.type == "response.done")
        created_at = next(e.t for e in session.server_events if e.event is created)
        assert done_at - created_at >= 0.6
    assert server.validation_failures == []


async def test_a_response_created_during_speech_plays_over_it(make_server: ServerFactory) -> None:
    script = Script(replies=[Reply([Say("Talking over you.", audio=tone(1500))])])
    server = await make_server(script=script, speed=1, first_delta_ms=10)
    async with connected(server) as (connection, reader, session):
        await connection.session.update(session=TWILIO_SESSION)
        await reader.expect("session.updated")
        await append_audio(connection, tone(300, frequency=300))
        await reader.expect("input_audio_buffer.speech_started")
        await connection.response.create()
        created = await reader.expect("response.created")

        await append_audio(connection, silence(700))
        await reader.expect("input_audio_buffer.speech_stopped")
        await reader.expect("input_audio_buffer.committed")
        # The VAD's own response is skipped: one response is active, and it was not cancelled.
        mark = reader.mark()
        await connection.session.update(session={"type": "realtime", "instructions": "Sync."})
        await reader.expect("session.updated", after=mark)
        assert [e.type for e in reader.events].count("response.created") == 1
        assert session.active_response_id == created.response.id

        done = await reader.expect("response.done")
        assert (done.response.id, done.response.status) == (created.response.id, "completed")
        # ...and not made up for afterwards.
        mark = reader.mark()
        await connection.session.update(session={"type": "realtime", "instructions": "Sync again."})
        await reader.expect("session.updated", after=mark)
        assert [e.type for e in reader.events].count("response.created") == 1
        assert session.errors_sent == []
    assert server.validation_failures == []


async def test_demo_script_books_and_takes_a_message_through_the_real_tools(
    make_server: ServerFactory,
) -> None:
    registry = ToolRegistry()
    register_calendar_tools(registry)
    register_message_tools(registry)
    register_call_tools(registry)
    declarations = registry.declarations(owner=False)
    schemas = {tool["name"]: tool["parameters"] for tool in declarations}
    server = await make_server(script=demo_script, speed=50)
    async with connected(server) as (connection, reader, _session):
        await connection.session.update(session=scheduling_session(*declarations))
        await connection.response.create()
        greeting = await reader.expect("response.done")
        assert greeting.response.output[0].content[0].transcript.startswith("Hello, you've reached")

        outputs = [
            {"ok": True, "days": [{"date": "2026-12-03", "day": "tomorrow", "free": "9 am to 5 pm"}],
             "suggested_times": [{"start": "2026-12-03T09:00:00-05:00", "spoken": "9 am tomorrow"}]},
            {"ok": True, "say": "Done: Thursday, December 3 at 9 am, one hour, with Dana."},
            {"ok": True, "saved": True, "say": "I've taken your message; Dana will get it after this call."},
        ]  # fmt: skip
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi!"}]}
        )
        calls: list[Any] = []
        spoken: list[str] = []
        for output in [*outputs, None]:
            mark = reader.mark()
            await connection.response.create()
            done = await reader.expect("response.done", after=mark)
            spoken.append(done.response.output[0].content[0].transcript)
            if output is None:
                [goodbye_call] = [item for item in done.response.output if item.type == "function_call"]
                break
            [call] = [item for item in done.response.output if item.type == "function_call"]
            calls.append(call)
            await connection.conversation.item.create(
                item={"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(output)}
            )

        names = [call.name for call in calls]
        arguments = [json.loads(call.arguments) for call in calls]
        assert names == ["check_availability", "create_event", "take_message"]
        assert arguments[0] == {"date": "2026-12-03"}
        assert arguments[1] == {
            "title": "Call with Alex Kim",
            "start": "2026-12-03T09:00",
            "caller_name": "Alex Kim",
        }
        assert arguments[2]["caller_name"] == "Alex Kim" and arguments[2]["message"]
        for name, args in zip(names, arguments, strict=True):
            assert list(Draft202012Validator(schemas[name]).iter_errors(args)) == []
        assert spoken[1] == "Tomorrow, the free times are: 9 am to 5 pm. I'll book the first one for you."
        assert spoken[2].startswith(outputs[1]["say"])
        assert spoken[3] == outputs[2]["say"] + " Thank you for calling, goodbye!"
        assert goodbye_call.name == "end_call" and json.loads(goodbye_call.arguments)["reason"]
    assert server.validation_failures == []
