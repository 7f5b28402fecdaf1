"""The model engine's vocabulary: typed events out of an engine, and the typed setup into it.

Everything above an engine (the call, its sequencer, its journal) reads these and nothing else: no
raw wire events, no `getattr` on SDK objects. An engine (OpenAI Realtime today, GPT-Live next)
normalises its service's events into these in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from callassist.realtime.pricing import Usage

if TYPE_CHECKING:
    from callassist.call.transcript import Turn

# The request tag of the out-of-band summary asked for at the end of a call.
SUMMARY_REQUEST = "summary"


@dataclass(slots=True, frozen=True)
class AudioOut:
    """A chunk of the assistant's speech, as the base64 μ-law string the service sent."""

    response_id: str
    item_id: str
    payload: str


@dataclass(slots=True, frozen=True)
class AssistantWords:
    """The words behind the assistant's audio, as they are generated."""

    item_id: str
    delta: str


@dataclass(slots=True, frozen=True)
class SpeechStarted:
    """The service's voice detection heard the caller begin a turn."""

    item_id: str | None
    audio_start_ms: int | None


@dataclass(slots=True, frozen=True)
class SpeechStopped:
    """The caller's turn ended (after the detector's silence window)."""

    item_id: str | None
    audio_end_ms: int | None


@dataclass(slots=True, frozen=True)
class CallerTranscribed:
    """What the caller said in one turn; `seconds` or `tokens` is what the transcription costs."""

    item_id: str
    text: str
    seconds: float | None = None
    tokens: Usage | None = None


@dataclass(slots=True, frozen=True)
class CallerInaudible:
    """The caller's turn could not be transcribed."""

    item_id: str


@dataclass(slots=True, frozen=True)
class ResponseStarted:
    """A response began. `request` is our tag when we asked for it, None when the service's voice
    detection started it on its own."""

    response_id: str
    request: str | None


@dataclass(slots=True, frozen=True)
class SpokenItem:
    """An assistant message of a finished response: its words, and whether it had audio at all."""

    item_id: str
    text: str
    has_audio: bool


@dataclass(slots=True, frozen=True)
class ToolCall:
    """A function call of a finished response. Only a `completed` one has usable arguments."""

    item_id: str
    call_id: str
    name: str
    arguments: str
    completed: bool


@dataclass(slots=True, frozen=True)
class ResponseFinished:
    """A response is over: what it said, what it called and what it cost."""

    response_id: str
    request: str | None
    status: str  # completed, cancelled, incomplete, failed
    spoken: tuple[SpokenItem, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    failure: str | None = None  # why, when it failed

    @property
    def text(self) -> str:
        return "\n".join(item.text for item in self.spoken if item.text)

    @property
    def text_only(self) -> bool:
        """It answered in text a caller never hears: words, no audio, no tool call."""
        return (
            not self.tool_calls
            and not any(item.has_audio for item in self.spoken)
            and any(item.text for item in self.spoken)
        )


class ErrorKind(StrEnum):
    recoverable = "recoverable"  # a race with the service (a cancel too late, say): carry on
    refused = "refused"  # one of our requests was refused: the sequencer may ask again
    fatal = "fatal"  # the session is unusable (its configuration was refused): end the call


@dataclass(slots=True, frozen=True)
class EngineError:
    kind: ErrorKind
    code: str
    message: str = ""
    request: str | None = None  # the tag of our request it is about, if any


@dataclass(slots=True, frozen=True)
class SessionReplaced:
    """The service session was replaced (a drop reconnected, or a rotation ahead of its time cap)
    and the new one is configured, with the conversation so far."""

    downtime_s: float
    close_code: int | None
    rotated: bool


@dataclass(slots=True, frozen=True)
class EngineLost:
    """The service can't be reached any more, after every retry: the call can't go on."""

    reason: str


EngineEvent = (
    AudioOut
    | AssistantWords
    | SpeechStarted
    | SpeechStopped
    | CallerTranscribed
    | CallerInaudible
    | ResponseStarted
    | ResponseFinished
    | EngineError
    | SessionReplaced
    | EngineLost
)


@dataclass(slots=True)
class SessionSetup:
    """What opens every engine session: the standing instructions and tools; then either the first
    response (the greeting), or, on a replacement session, the conversation so far."""

    instructions: str
    tools: Sequence[dict[str, Any]]
    greeting: str | None = None  # request tag of the greeting, on the first session
    history: Sequence[Turn] = ()  # the conversation so far, on a replacement session
    unfinished_speech: bytes = b""  # μ-law of a caller turn under way at the drop
    answer: str | None = None  # request tag of an answer the caller is owed, after the history
