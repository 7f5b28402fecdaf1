"""The session parses the events the engine reads with pydantic's validation of the SDK's own models
(fast), falling back to the SDK's lenient parse for anything those types don't know yet."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import ResponseDoneEvent

from callassist.engine.realtime import _READ
from callassist.realtime.session import OtherEvent, RealtimeSession
from tests.realtime.test_pricing import EXAMPLE as USAGE  # the usage shape of the API reference


def response(status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "realtime.response",
        "status": status,
        "status_details": None,
        "output": output,
        "conversation_id": "conv_1",
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
        "usage": usage,
        "metadata": {"callassist": "3"},
    }


# Shaped as the SDK's types declare them (openai.types.realtime), as the service sends them.
EVENTS: list[dict[str, Any]] = [
    {"type": "input_audio_buffer.speech_started", "event_id": "e1", "audio_start_ms": 1020, "item_id": "i1"},
    {"type": "input_audio_buffer.speech_stopped", "event_id": "e2", "audio_end_ms": 2480, "item_id": "i1"},
    {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": "e3",
        "item_id": "i1",
        "content_index": 0,
        "transcript": "Is Dana free on Thursday?",
        "usage": {"type": "duration", "seconds": 1.5},
    },
    {
        "type": "conversation.item.input_audio_transcription.failed",
        "event_id": "e4",
        "item_id": "i1",
        "content_index": 0,
        "error": {"type": "transcription_error", "code": "audio_unintelligible", "message": "x"},
    },
    {"type": "response.created", "event_id": "e5", "response": response("in_progress", [], None)},
    {
        "type": "response.done",
        "event_id": "e6",
        "response": response(
            "completed",
            [
                {
                    "id": "i2",
                    "type": "message",
                    "object": "realtime.item",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_audio", "transcript": "Let me check."}],
                },
                {
                    "id": "i3",
                    "type": "function_call",
                    "object": "realtime.item",
                    "status": "completed",
                    "call_id": "call_1",
                    "name": "check_availability",
                    "arguments": '{"date": "2026-12-03"}',
                },
            ],
            USAGE,
        ),
    },
    {
        "type": "error",
        "event_id": "e7",
        "error": {
            "type": "invalid_request_error",
            "code": "response_cancel_not_active",
            "message": "no active response",
            "param": None,
            "event_id": "callassist_4",
        },
    },
]


@pytest.fixture
def parse() -> Any:
    session = RealtimeSession(AsyncOpenAI(api_key="sk-test"), "gpt-realtime", setup=None, typed_events=_READ)  # type: ignore[arg-type]
    connection = AsyncRealtimeConnection(None)  # type: ignore[arg-type]  # parse_event reads no socket
    return lambda event: (
        session._parse(connection, orjson.dumps(event)),
        connection.parse_event(orjson.dumps(event)),
    )


def test_the_engine_reads_every_event_it_parses() -> None:
    assert set(_READ) == {event["type"] for event in EVENTS}


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: event["type"])
def test_a_read_event_is_the_sdk_model_the_sdk_would_build(parse: Any, event: dict[str, Any]) -> None:
    ours, sdks = parse(event)
    assert type(ours) is _READ[event["type"]]
    assert ours == sdks
    assert ours.model_dump() == sdks.model_dump()


def test_a_value_the_sdk_types_do_not_know_still_arrives(parse: Any) -> None:
    # A status the SDK's Literal doesn't list yet, and a new field: pydantic refuses the first.
    event = {"type": "response.done", "event_id": "e8", "response": response("paused", [], USAGE)}
    event["response"]["new_field"] = {"x": 1}
    ours, sdks = parse(event)
    assert isinstance(ours, ResponseDoneEvent)
    assert ours.response.status == "paused"
    assert ours.response.usage is not None and ours.response.usage.output_tokens == USAGE["output_tokens"]
    assert ours == sdks


def test_an_event_nobody_reads_is_not_parsed(parse: Any) -> None:
    ours, _ = parse({"type": "rate_limits.updated", "event_id": "e9", "rate_limits": []})
    assert ours == OtherEvent("rate_limits.updated")
