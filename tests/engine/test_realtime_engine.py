"""The Realtime engine's translation, both ways, checked against the SDK's own types.

What the engine sends (the setup of a first and of a replacement session, every request) must be
a valid client event in the SDK's strict types; what the service sends (a response.done shaped as
the SDK's `ResponseDoneEvent`) must come out as the engine's typed events with nothing lost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from openai.types.realtime import ResponseDoneEvent

from callassist.call.transcript import INAUDIBLE, Turn
from callassist.engine.events import SessionSetup
from callassist.engine.realtime import (
    INTERRUPTED_MARKER,
    REPLAY_PREAMBLE,
    finished,
    response_create,
    setup_events,
)
from callassist.settings import Settings
from callassist.tools import all_tools
from tests.fakes.protocol import validate_client_event

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, owner_name="Dana", openai_api_key="sk-test")  # type: ignore[call-arg]


def valid(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for event in events:
        assert validate_client_event(event) is None, (event["type"], validate_client_event(event))
    return events


def test_a_first_session_is_configured_then_greets(settings: Settings) -> None:
    tools = all_tools().declarations(owner=False, owner_name="Dana")
    events = valid(setup_events(settings, SessionSetup("Be kind.", tools, greeting="1")))
    assert [e["type"] for e in events] == ["session.update", "response.create"]
    session = events[0]["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert {tool["name"] for tool in session["tools"]} >= {"create_event", "take_message", "end_call"}
    # Our tag comes back: in an error's event_id, in the response's metadata.
    assert events[1]["event_id"] == "callassist_1"
    assert events[1]["response"] == {"metadata": {"callassist": "1"}}


def test_a_replacement_session_gets_the_conversation_not_a_greeting(settings: Settings) -> None:
    history = [
        Turn("assistant", "Hi, Dana's assistant.", NOW),
        Turn("caller", "Is Dana free Thursday?", NOW),
        Turn("assistant", "Let me", NOW, interrupted=True),
        Turn("caller", INAUDIBLE, NOW),
        Turn("caller", "[lost]", NOW, audio=b"\xff" * 800),
    ]
    setup = SessionSetup("Be kind.", (), history=history, unfinished_speech=b"\x7f" * 160, answer="7")
    events = valid(setup_events(settings, setup))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "session.update" and kinds[-1] == "response.create"
    items = [e["item"] for e in events if e["type"] == "conversation.item.create"]
    texts = [part.get("text") for item in items for part in item["content"]]
    assert texts[0] == REPLAY_PREAMBLE
    assert INAUDIBLE not in texts
    # The marker follows the words the caller heard before they interrupted.
    assert texts.index(INTERRUPTED_MARKER) == texts.index("Let me") + 1
    assert items[-1]["content"][0]["type"] == "input_audio"  # the untranscribed turn, as audio
    assert kinds[-2] == "input_audio_buffer.append"  # speech under way, before the answer


def test_requests_are_valid_client_events() -> None:
    valid([response_create("3"), response_create("4", audio_only=True)])
    assert response_create("4", audio_only=True)["response"]["output_modalities"] == ["audio"]


def response_done(output: list[dict[str, Any]], status: str = "completed") -> Any:
    return ResponseDoneEvent.model_validate(
        {
            "type": "response.done",
            "event_id": "event_1",
            "response": {
                "id": "resp_1",
                "object": "realtime.response",
                "status": status,
                "metadata": {"callassist": "5"},
                "output": output,
                "usage": {
                    "total_tokens": 30,
                    "input_tokens": 20,
                    "output_tokens": 10,
                    "input_token_details": {"text_tokens": 5, "audio_tokens": 15},
                    "output_token_details": {"text_tokens": 4, "audio_tokens": 6},
                },
            },
        }
    ).response


def test_a_finished_response_keeps_its_words_calls_and_usage() -> None:
    done = finished(
        response_done(
            [
                {
                    "id": "item_a",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_audio", "transcript": "Booked for Thursday."}],
                },
                {
                    "id": "item_f",
                    "type": "function_call",
                    "status": "incomplete",
                    "call_id": "call_1",
                    "name": "create_event",
                    "arguments": '{"title": "Ro',
                },
            ],
            status="cancelled",
        )
    )
    assert done.request == "5" and done.status == "cancelled"
    assert [(s.item_id, s.text, s.has_audio) for s in done.spoken] == [
        ("item_a", "Booked for Thursday.", True)
    ]
    [call] = done.tool_calls
    assert (call.call_id, call.name, call.completed) == ("call_1", "create_event", False)
    assert done.usage is not None and (done.usage.audio_in, done.usage.audio_out) == (15, 6)
    assert not done.text_only


def test_a_text_only_answer_is_seen_as_such() -> None:
    text = {
        "id": "i",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "3 pm."}],
    }
    assert finished(response_done([text])).text_only
