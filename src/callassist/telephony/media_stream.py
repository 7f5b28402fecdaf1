"""Twilio Media Streams wire format: inbound messages parsed once into typed objects, outbound built here.

Only this module knows Twilio's JSON shapes. Audio payloads stay the base64 strings Twilio and OpenAI
exchange; the only look inside is a strict base64 check so garbage never reaches the model.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from callassist.media.leg import CallerAudio

# A real frame is ~400 bytes and a `start` a few KB; anything far larger is garbage or abuse.
MAX_MESSAGE_CHARS = 64 * 1024


class MediaStreamError(ValueError):
    """A message from Twilio that we cannot use (bad JSON, unknown event, bad payload)."""


@dataclass(slots=True, frozen=True)
class Connected:
    protocol: str
    version: str


@dataclass(slots=True, frozen=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    tracks: tuple[str, ...] = ("inbound",)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000


@dataclass(slots=True)
class Media(CallerAudio):
    """A caller audio frame (base64 μ-law, forwarded unchanged; `size` decoded bytes)."""

    timestamp_ms: int = 0  # ms since the stream started, per Twilio


@dataclass(slots=True, frozen=True)
class Mark:
    name: str


@dataclass(slots=True, frozen=True)
class Dtmf:
    digit: str


@dataclass(slots=True, frozen=True)
class Stop:
    call_sid: str | None


InboundMessage = Connected | Start | Media | Mark | Dtmf | Stop


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MediaStreamError(f"{what} is not an object")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MediaStreamError(f"{what} is missing or not a string")
    return value


def base64_size(payload: str) -> int:
    """Decoded size of a valid base64 string, computed without decoding."""
    padding = 2 if payload.endswith("==") else 1 if payload.endswith("=") else 0
    return len(payload) * 3 // 4 - padding


def _int(value: Any, what: str) -> int:
    """A whole number Twilio sent as a string or a number; 1e400 (inf), NaN, 12.5, "8k" are not."""
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise MediaStreamError(f"{what} is not a number")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (ValueError, OverflowError):
        number = None
    if number is None:
        raise MediaStreamError(f"{what} is not a whole number")
    return number


def parse_inbound(text: str) -> InboundMessage:
    """Parse one text frame from Twilio. Raises MediaStreamError for anything unusable, whatever
    its shape: JSON-valid frames with fields of the wrong type or value included."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise MediaStreamError(f"message of {len(text)} characters exceeds {MAX_MESSAGE_CHARS}")
    try:
        message = orjson.loads(text)  # a JSONDecodeError is a ValueError; nesting is capped at 1024
    except (ValueError, RecursionError) as exc:
        raise MediaStreamError(f"malformed JSON: {exc}") from None
    try:
        message = _mapping(message, "message")
        event = message.get("event")

        if event == "media":
            media = _mapping(message.get("media"), "media")
            payload = _text(media.get("payload"), "media.payload")
            try:
                # strict mode rejects bad padding and stray characters; the decode is ~0.3 µs per frame
                size = len(binascii.a2b_base64(payload, strict_mode=True))
            except (binascii.Error, ValueError):
                raise MediaStreamError("media.payload is not valid base64") from None
            track = media.get("track", "inbound")
            if track not in ("inbound", "inbound_track"):
                raise MediaStreamError(f"unexpected media track {track!r}")
            try:
                timestamp_ms = int(media.get("timestamp", 0))  # "5" (Twilio's), 5 (tolerated)
            except (TypeError, ValueError, OverflowError):  # 1e400 is inf, NaN, "soon", [1]
                raise MediaStreamError("media.timestamp is not a number") from None
            return Media(payload=payload, timestamp_ms=timestamp_ms, size=size)
        if event == "mark":
            mark = _mapping(message.get("mark"), "mark")
            return Mark(name=_text(mark.get("name"), "mark.name"))
        if event == "start":
            start = _mapping(message.get("start"), "start")
            params = start.get("customParameters") or {}
            params = {str(k): str(v) for k, v in _mapping(params, "start.customParameters").items()}
            media_format = start.get("mediaFormat") or {}
            media_format = _mapping(media_format, "start.mediaFormat")
            stream_sid = start.get("streamSid") or message.get("streamSid")
            tracks = start.get("tracks") or ["inbound"]
            if not isinstance(tracks, list) or not all(isinstance(track, str) for track in tracks):
                raise MediaStreamError("start.tracks is not a list of names")
            return Start(
                stream_sid=_text(stream_sid, "start.streamSid"),
                call_sid=_text(start.get("callSid"), "start.callSid"),
                account_sid=str(start.get("accountSid") or ""),
                custom_parameters=params,
                tracks=tuple(tracks),
                encoding=str(media_format.get("encoding", "audio/x-mulaw")),
                sample_rate=_int(media_format.get("sampleRate", 8000), "start.mediaFormat.sampleRate"),
            )
        if event == "connected":
            return Connected(
                protocol=str(message.get("protocol", "")), version=str(message.get("version", ""))
            )
        if event == "dtmf":
            dtmf = _mapping(message.get("dtmf"), "dtmf")
            return Dtmf(digit=_text(dtmf.get("digit"), "dtmf.digit"))
        if event == "stop":
            stop = message.get("stop")
            call_sid = stop.get("callSid") if isinstance(stop, dict) else None
            return Stop(call_sid=call_sid if isinstance(call_sid, str) else None)
        raise MediaStreamError(f"unknown event {str(event)[:40]!r}")
    except MediaStreamError:
        raise
    except (TypeError, ValueError, OverflowError, AttributeError, RecursionError) as exc:
        # A shape no check foresaw: still a bad frame, never an exception in the caller's call.
        raise MediaStreamError(f"unusable message ({type(exc).__name__}: {str(exc)[:80]})") from None


class Outbound:
    """Builds the three messages we send on one stream. The JSON prefix is made once per stream."""

    __slots__ = ("_clear", "_mark_prefix", "_media_prefix")

    def __init__(self, stream_sid: str) -> None:
        sid = json.dumps(stream_sid)
        self._media_prefix = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark_prefix = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":'
        self._clear = '{"event":"clear","streamSid":' + sid + "}"

    def media(self, payload: str) -> str:
        # Base64 never needs JSON escaping; anything that would is re-encoded safely.
        if '"' in payload or "\\" in payload:
            return self._media_prefix[:-1] + json.dumps(payload) + "}}"
        return self._media_prefix + payload + '"}}'

    def mark(self, name: str) -> str:
        return self._mark_prefix + json.dumps(name) + "}}"

    def clear(self) -> str:
        return self._clear
