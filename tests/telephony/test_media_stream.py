"""Twilio Media Streams parsing and building: every bad input is a MediaStreamError, never a crash."""

from __future__ import annotations

import base64
import json

import pytest

from callassist.telephony.media_stream import (
    MAX_MESSAGE_CHARS,
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaStreamError,
    Outbound,
    Start,
    Stop,
    base64_size,
    parse_inbound,
)

PAYLOAD = base64.b64encode(bytes(range(160))).decode()


def test_parses_each_twilio_event() -> None:
    assert parse_inbound('{"event":"connected","protocol":"Call","version":"1.0.0"}') == Connected(
        "Call", "1.0.0"
    )
    start = parse_inbound(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": "AC1",
                    "streamSid": "MZ1",
                    "callSid": "CA1",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {"callerNumber": "+15551230000", "token": "t"},
                },
                "streamSid": "MZ1",
            }
        )
    )
    assert isinstance(start, Start)
    assert (start.stream_sid, start.call_sid, start.custom_parameters["callerNumber"]) == (
        "MZ1",
        "CA1",
        "+15551230000",
    )
    media = parse_inbound(
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": "4",
                "media": {"track": "inbound", "chunk": "2", "timestamp": "40", "payload": PAYLOAD},
                "streamSid": "MZ1",
            }
        )
    )
    assert media == Media(payload=PAYLOAD, timestamp_ms=40, size=160)
    assert parse_inbound('{"event":"mark","streamSid":"MZ1","mark":{"name":"7"}}') == Mark("7")
    assert parse_inbound('{"event":"dtmf","dtmf":{"track":"inbound_track","digit":"5"}}') == Dtmf("5")
    assert parse_inbound('{"event":"stop","stop":{"accountSid":"AC1","callSid":"CA1"}}') == Stop("CA1")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        "{}",
        '{"event": "surprise"}',
        '{"event": "media"}',
        '{"event": "media", "media": {"payload": "!!!not base64"}}',
        '{"event": "media", "media": {"payload": "abc"}}',  # bad padding
        '{"event": "media", "media": {"payload": 42}}',
        '{"event": "media", "media": {"payload": "AAAA", "track": "outbound"}}',
        '{"event": "mark", "mark": {}}',
        '{"event": "start", "start": {"streamSid": "MZ"}}',
        '{"event": "start", "start": {"streamSid": "MZ", "callSid": "CA", "customParameters": 3}}',
        '{"event": "dtmf"}',
        "[" * 100_000,
        '{"event": "media", "media": {"payload": "' + "A" * MAX_MESSAGE_CHARS + '"}}',
    ],
)
def test_rejects_unusable_frames(text: str) -> None:
    with pytest.raises(MediaStreamError):
        parse_inbound(text)


START = '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", %s}}'
MEDIA = '{"event": "media", "media": {"track": "inbound", "payload": "AAAA", %s}}'


@pytest.mark.parametrize(
    "text",
    [
        # JSON-valid, wrong inside: each once raised something other than MediaStreamError.
        MEDIA % '"timestamp": 1e400',  # inf: OverflowError
        MEDIA % '"timestamp": -1e400',
        MEDIA % '"timestamp": NaN',
        MEDIA % '"timestamp": "soon"',
        MEDIA % '"timestamp": [40]',
        MEDIA % '"timestamp": {"ms": 40}',
        START % '"mediaFormat": {"sampleRate": "fast"}',
        START % '"mediaFormat": {"sampleRate": 1e400}',
        START % '"mediaFormat": {"sampleRate": 8000.5}',
        START % '"mediaFormat": {"sampleRate": null, "encoding": "audio/x-mulaw"}',
        START % '"mediaFormat": {"sampleRate": true}',
        START % '"mediaFormat": {"sampleRate": [8000]}',
        START % '"mediaFormat": {"sampleRate": "' + "9" * 5000 + '"}',  # past int()'s digit limit
        START % '"tracks": 5',
        START % '"tracks": "inbound"',
        START % '"tracks": {"inbound": true}',
        START % '"tracks": [["inbound"]]',
        START % '"mediaFormat": ["audio/x-mulaw"]',
        START % '"customParameters": ["token"]',
        '{"event": ["media"]}',
    ],
)
def test_json_valid_frames_with_wrong_fields_are_media_stream_errors(text: str) -> None:
    with pytest.raises(MediaStreamError):
        parse_inbound(text)


def test_twilios_own_shapes_still_parse() -> None:
    assert parse_inbound(MEDIA % '"timestamp": "40"') == Media("AAAA", 3, timestamp_ms=40)
    assert parse_inbound(MEDIA % '"timestamp": 40') == Media("AAAA", 3, timestamp_ms=40)
    assert parse_inbound(MEDIA % '"chunk": "1"') == Media("AAAA", 3, timestamp_ms=0)  # no timestamp: 0
    start = parse_inbound(START % '"mediaFormat": {"sampleRate": "8000"}, "tracks": ["inbound"]')
    assert isinstance(start, Start) and start.sample_rate == 8000 and start.tracks == ("inbound",)
    assert isinstance(parse_inbound(START % '"mediaFormat": {"sampleRate": 8000.0}'), Start)


def test_outbound_messages_are_valid_json_and_keep_payload_unchanged() -> None:
    out = Outbound("MZ1")
    assert json.loads(out.media(PAYLOAD)) == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": PAYLOAD},
    }
    assert json.loads(out.mark("12")) == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "12"}}
    assert json.loads(out.clear()) == {"event": "clear", "streamSid": "MZ1"}
    # Something that is not base64 can't break the JSON document.
    assert json.loads(out.media('a"b\\c'))["media"]["payload"] == 'a"b\\c'
    assert json.loads(Outbound('M"Z').clear())["streamSid"] == 'M"Z'


@pytest.mark.parametrize("size", [0, 1, 2, 3, 160, 161, 800])
def test_base64_size_matches_decoded_length(size: int) -> None:
    assert base64_size(base64.b64encode(bytes(size)).decode()) == size
