"""TwiML documents: streaming to the assistant, ringing the owner."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from callassist.telephony import twiml


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
