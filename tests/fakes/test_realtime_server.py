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
from openai import AsyncOpenAI
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from callassist.simulator.audio import frames, silence, speak, tone
from tests.fakes.protocol import MAX_DURATION_CLOSE_REASON, validate_server_event
from tests.fakes.realtime_server import (
    CallFunction,
    FakeRealtimeServer,
    FakeSession,
    Reply,
    ResponseContext,
    Say,
    Script,
)

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
    """Send audio the way the bridge forwards Twilio media: one 20 ms frame per append."""
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
