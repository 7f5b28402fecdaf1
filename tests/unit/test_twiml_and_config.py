"""TwiML documents and the Realtime session configuration."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import pytest
from openai.types.realtime import RealtimeClientEvent
from pydantic import Field, TypeAdapter

from callassist.realtime.config import CallContext, build_instructions, build_session, session_update
from callassist.settings import SettingsError, load_settings
from callassist.telephony import twiml

CLIENT_EVENTS = TypeAdapter(Annotated[RealtimeClientEvent, Field(discriminator="type")])


def test_connect_twiml_streams_with_parameters_then_hangs_up() -> None:
    root = ET.fromstring(twiml.connect_assistant("wss://h/voice/stream", {"callerNumber": "+1555", "x": "y"}))
    assert [child.tag for child in root] == ["Connect", "Hangup"]
    stream = root.find("Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://h/voice/stream"
    assert {p.get("name"): p.get("value") for p in stream.findall("Parameter")} == {
        "callerNumber": "+1555",
        "x": "y",
    }


def test_ring_owner_twiml() -> None:
    root = ET.fromstring(twiml.ring_owner("+15550001111", 2, "/voice/dial-result"))
    dial = root.find("Dial")
    assert dial is not None
    assert dial.get("timeout") == "5"  # clamped to Twilio's minimum
    assert dial.get("action") == "/voice/dial-result"
    assert dial.get("answerOnBridge") == "true"
    assert dial.findtext("Number") == "+15550001111"


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


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"timezone": "Mars/Olympus"}, "CALLASSIST_TIMEZONE"),
        ({"public_base_url": "example.com"}, "PUBLIC_BASE_URL"),
        ({"owner_phone": "555-1234"}, "OWNER_PHONE"),
        ({"vad_threshold": 3}, "CALLASSIST_VAD_THRESHOLD"),
        ({"turn_detection": "psychic"}, "CALLASSIST_TURN_DETECTION"),
        ({"public_base_url": "https://x.ngrok.app"}, "TWILIO_AUTH_TOKEN is required"),
    ],
)
def test_bad_settings_give_one_clear_line(overrides: dict[str, object], needle: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert needle in message and "\n" not in message


def test_stream_url_follows_the_public_url_scheme() -> None:
    public = load_settings(public_base_url="https://x.ngrok.app", twilio_auth_token="t")
    assert public.stream_url() == "wss://x.ngrok.app/voice/stream"
    assert load_settings(port=9001).stream_url() == "ws://127.0.0.1:9001/voice/stream"
