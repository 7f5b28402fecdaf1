"""The Realtime session configuration, checked against the openai SDK's event types."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from openai.types.realtime import RealtimeClientEvent
from pydantic import Field, TypeAdapter

from callassist.realtime.config import CallContext, build_instructions, build_session, session_update
from callassist.settings import load_settings

CLIENT_EVENTS = TypeAdapter(Annotated[RealtimeClientEvent, Field(discriminator="type")])


def test_session_update_is_ga_pcmu_and_validates_against_the_sdk() -> None:
    settings = load_settings(owner_name="Dana", timezone="Europe/Paris", voice="cedar")
    event = session_update(build_session(settings, "be nice", [{"type": "function", "name": "f"}]))
    parsed = CLIENT_EVENTS.validate_python(event)
    assert parsed.type == "session.update"
    session = event["session"]
    assert session["type"] == "realtime"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "cedar"}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["input"]["transcription"]["model"] == "gpt-transcribe"


def test_semantic_vad_is_selectable() -> None:
    settings = load_settings(turn_detection="semantic_vad", vad_eagerness="high")
    detection = build_session(settings, "x")["audio"]["input"]["turn_detection"]
    assert detection == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": True,
        "interrupt_response": True,
    }
    CLIENT_EVENTS.validate_python(session_update(build_session(settings, "x")))


def test_instructions_know_the_owner_and_local_date() -> None:
    settings = load_settings(owner_name="Dana", timezone="America/New_York")
    now = datetime(2026, 11, 24, 14, 5, tzinfo=ZoneInfo("America/New_York"))
    text = build_instructions(settings, CallContext(caller_number="+15551230000"), now)
    assert "Dana" in text
    assert "Tuesday, November 24, 2026" in text
    assert "2:05 pm" in text
    assert "+15551230000" in text
