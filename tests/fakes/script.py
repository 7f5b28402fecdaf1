"""What the fake model says: scripted replies, function calls, caller transcripts and summaries.

A `Script` is consumed in order. Each model response in the default conversation takes the next
`Responder` (a fixed `Reply`, or a callable that sees the conversation so far and returns one);
each committed caller turn takes the next transcript; out-of-band responses get `summary`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from callassist.simulator.audio import AudioToolMissing, speak, tone

if TYPE_CHECKING:
    from tests.fakes.realtime_server import FakeSession

# espeak-ng at 170 words/min says about 14 characters per second; the tone stand-in keeps the
# audio about as long as the speech would have been.
_FALLBACK_MS_PER_CHAR = 70
_FALLBACK_MIN_MS = 200

DEFAULT_SUMMARY = json.dumps(
    {
        "summary": "The caller asked a question and the assistant answered it.",
        "caller_name": None,
        "reason": "general enquiry",
        "follow_up": None,
    }
)


@dataclass
class Say:
    """One assistant audio message (a text message if the response's modality is text)."""

    text: str
    audio: bytes | None = None  # μ-law 8 kHz; None means speak(text) on first use

    def resolve_audio(self) -> bytes:
        """The μ-law audio to stream; synthesized once and kept, so tests can compare bytes."""
        if self.audio is None:
            try:
                self.audio = speak(self.text)
            except AudioToolMissing:
                self.audio = tone(max(_FALLBACK_MIN_MS, len(self.text) * _FALLBACK_MS_PER_CHAR))
        return self.audio


@dataclass
class CallFunction:
    """One function_call output item."""

    name: str
    arguments: dict[str, Any] | str  # a str is sent verbatim, so tests can send malformed JSON
    call_id: str | None = None  # None: a fresh "call_..." id each time the call is emitted

    def arguments_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass
class Reply:
    """The outputs of one model response, emitted in order."""

    outputs: list[Say | CallFunction]


@dataclass
class ResponseContext:
    """What a callable Responder can look at when the model "decides" what to say."""

    items: list[dict[str, Any]]  # conversation items so far, wire shape, oldest first
    function_outputs: list[tuple[str, str]]  # (call_id, output) received in this session
    instructions: str
    session: dict[str, Any]
    request: dict[str, Any] | None  # the `response` param of response.create, if any
    fake_session: FakeSession

    @property
    def last_function_output(self) -> str | None:
        return self.function_outputs[-1][1] if self.function_outputs else None

    @property
    def last_user_transcript(self) -> str | None:
        """Transcript of the newest user audio/text message, if it has one yet."""
        for item in reversed(self.items):
            if item.get("type") == "message" and item.get("role") == "user":
                for part in item.get("content", []):
                    text = part.get("transcript") if part.get("type") == "input_audio" else part.get("text")
                    if text:
                        return str(text)
                return None
        return None


Responder: TypeAlias = Reply | Callable[[ResponseContext], Reply]
SummaryText: TypeAlias = str | Callable[[ResponseContext], str]


def _default_reply() -> Reply:
    return Reply([Say("Okay.")])


@dataclass
class Script:
    """The fake model's behaviour for one connection, or for all connections sharing it."""

    replies: list[Responder] = field(default_factory=list)
    default_reply: Responder = field(default_factory=_default_reply)
    transcripts: list[str] = field(default_factory=list)
    summary: SummaryText = DEFAULT_SUMMARY
    default_transcript: str = "(caller speech)"
    _reply_cursor: int = field(default=0, init=False, repr=False)
    _transcript_cursor: int = field(default=0, init=False, repr=False)

    def next_responder(self) -> Responder:
        if self._reply_cursor < len(self.replies):
            responder = self.replies[self._reply_cursor]
            self._reply_cursor += 1
            return responder
        return self.default_reply

    def next_transcript(self) -> str:
        if self._transcript_cursor < len(self.transcripts):
            transcript = self.transcripts[self._transcript_cursor]
            self._transcript_cursor += 1
            return transcript
        return self.default_transcript

    def summary_text(self, context: ResponseContext) -> str:
        return self.summary(context) if callable(self.summary) else self.summary

    @property
    def replies_used(self) -> int:
        """How many scripted replies have been consumed (defaults not counted)."""
        return self._reply_cursor


def resolve_responder(responder: Responder, context: ResponseContext) -> Reply:
    reply = responder(context) if callable(responder) else responder
    if not isinstance(reply, Reply):
        raise TypeError(f"a Responder must return a Reply, got {type(reply).__name__}")
    return reply
