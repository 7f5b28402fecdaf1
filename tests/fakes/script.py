"""What the fake model says: scripted replies, function calls, caller transcripts and summaries.

A `Script` is consumed in order. Each model response in the default conversation takes the next
`Responder` (a fixed `Reply`, or a callable that sees the conversation so far and returns one);
each committed caller turn takes the next transcript; out-of-band responses get `summary`.

Function calls come in two kinds:

* `UseTool(name, intent={...})`: the model picks a tool *declared in the tools the response sees*
  and builds the arguments from that tool's JSON schema (see tool_calls.py), as a model does. Use
  this by default: a schema no model can satisfy, an undeclared tool or an intent the schema can't
  carry becomes a recorded violation (`server.validation_failures`).
* `CallFunction(name, arguments)`: the arguments are sent verbatim, bypassing the declared tools and
  their schemas entirely. Only for tests that deliberately send what no schema-following model
  would (malformed JSON, wrong types, an undeclared tool).

Per-test behaviours of the service (each documented on its `Script` field): slow argument streams a
caller can talk over, late caller transcripts, text-only answers after a replay, an out-of-band
response that calls an inherited tool, a slow summary.
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
    """One function_call output item with hand-written arguments, sent as given.

    Bypasses the schema: the tool need not be declared and the arguments are not checked. Meant for
    tests that deliberately send malformed JSON or wrong types; everything else uses `UseTool`.
    """

    name: str
    arguments: dict[str, Any] | str  # a str is sent verbatim, so tests can send malformed JSON
    call_id: str | None = None  # None: a fresh "call_..." id each time the call is emitted
    delta_s: float | None = None  # pause before each arguments delta; None: Script.argument_delta_s

    def arguments_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass
class UseTool:
    """The model calls a declared tool; its arguments are built from the tool's JSON schema.

    `intent` gives values per property name, e.g. `{"start": "tomorrow 14:00", "caller_name": "Alex
    Kim"}`; a date/time intent is resolved against the "Right now it is ..." line of the
    instructions the response sees and written as the property's description shows. Required
    properties without intent get plausible values from the schema; optional ones are left out.
    The rules are in tool_calls.py. The tool must be declared in the tools the response sees (the
    session's, or the response's `tools` override), or the call is not made and a violation is
    recorded; so is every schema problem and a failed validation of the built arguments.
    """

    name: str
    intent: dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None  # None: a fresh "call_..." id each time the call is emitted
    delta_s: float | None = None  # pause before each arguments delta; None: Script.argument_delta_s


Output: TypeAlias = Say | CallFunction | UseTool


@dataclass
class Reply:
    """The outputs of one model response, emitted in order."""

    outputs: list[Output]


@dataclass
class ResponseContext:
    """What a callable Responder can look at when the model "decides" what to say."""

    items: list[dict[str, Any]]  # conversation items the response sees, wire shape, oldest first
    function_outputs: list[tuple[str, str]]  # (call_id, output) received in this session
    instructions: str  # what the model was told: the request's instructions if given, else the session's
    session: dict[str, Any]
    request: dict[str, Any] | None  # the `response` param of response.create, if any
    fake_session: FakeSession
    # The tools and tool_choice this response sees: the request's if given, else the session's.
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"

    @property
    def tool_names(self) -> list[str]:
        """Names of the function tools this response may call ([] when tool_choice is "none")."""
        if self.tool_choice == "none":
            return []
        return [str(tool.get("name")) for tool in self.tools if tool.get("type", "function") == "function"]

    def last_output_of(self, name: str) -> dict[str, Any] | None:
        """The parsed output of the newest call of tool `name` in the items, if it has one."""
        calls = {
            item.get("call_id"): item.get("name")
            for item in self.items
            if item.get("type") == "function_call"
        }
        for item in reversed(self.items):
            if item.get("type") == "function_call_output" and calls.get(item.get("call_id")) == name:
                try:
                    parsed = json.loads(str(item.get("output")))
                except ValueError:
                    return {"raw": item.get("output")}
                return parsed if isinstance(parsed, dict) else {"value": parsed}
        return None

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
    # Seconds before each function_call_arguments delta (UseTool/CallFunction.delta_s override it),
    # so a caller can talk over a call whose arguments are still streaming.
    argument_delta_s: float = 0.0
    # Seconds from a caller turn's commit to its transcription events. Transcription runs
    # asynchronously with response creation (SDK docstring of
    # conversation.item.input_audio_transcription.completed), so with a delay longer than the
    # answer, `...transcription.completed` arrives after the answer's `response.done`.
    transcript_delay_s: float = 0.0
    # After the client adds an assistant message as text (a replay after a reconnect), this many
    # default-conversation responses that ask for audio come back as text only (output_text, no
    # audio; `output_modalities` still says audio), whatever their instructions or a system item
    # say; the one after them speaks again, so with 1 a single re-ask gets audio. Each replayed
    # assistant text item starts the count anew.
    # (openai/openai-realtime-api-beta #72, livekit/agents #1143: text-only answers after assistant
    # text items were added to the conversation.)
    text_only_after_replay: int = 0
    # An out-of-band response (conversation "none") inherits the session's tools and tool_choice
    # unless the request overrides them (SDK docstring of response.create: tools and instructions
    # "override the Session's configuration for this Response only"). With this set, such a
    # response calls this tool instead of writing the summary when the tool is among the tools it
    # sees and tool_choice isn't "none"; otherwise it writes the summary as usual.
    summary_tool: UseTool | CallFunction | None = None
    # Seconds an out-of-band response takes before its first output (a summary that takes a while).
    summary_delay_s: float = 0.0
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
