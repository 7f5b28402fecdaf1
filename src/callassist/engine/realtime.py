"""RealtimeEngine: the OpenAI Realtime API (GA) as a model engine.

`realtime/session.py` carries the socket (connect, reconnect, rotate, the raw audio path); this
module is the only place that knows the Realtime event shapes: it turns the call's typed setup and
requests into client events, and the server's events into `engine.events`. Events nobody acts on
are never parsed into the SDK's models (that costs ~100x a JSON parse); the ones we read are
parsed with the SDK's own types.

One reason it is a little over 400 lines: it is the whole translation between the Realtime
protocol and ours, both ways; split, each half would need the other to be read.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, get_args

from openai import AsyncOpenAI
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionFailedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeConversationItemAssistantMessage,
    RealtimeConversationItemFunctionCall,
    RealtimeErrorEvent,
    RealtimeResponse,
    ResponseCreatedEvent,
    ResponseDoneEvent,
)
from openai.types.realtime.conversation_item_input_audio_transcription_completed_event import (
    UsageTranscriptTextUsageDuration,
    UsageTranscriptTextUsageTokens,
)
from pydantic import BaseModel

from callassist.call.transcript import INAUDIBLE, Turn
from callassist.engine.base import EngineUnavailable, SetupHook
from callassist.engine.events import (
    SUMMARY_REQUEST,
    AssistantWords,
    AudioOut,
    CallerInaudible,
    CallerTranscribed,
    EngineError,
    EngineEvent,
    EngineLost,
    ErrorKind,
    ResponseFinished,
    ResponseStarted,
    SessionReplaced,
    SessionSetup,
    SpeechStarted,
    SpeechStopped,
    SpokenItem,
    ToolCall,
)
from callassist.realtime.config import SESSION_UPDATE_ID, build_session, session_update
from callassist.realtime.pricing import Usage
from callassist.realtime.session import OtherEvent, RealtimeSession, RealtimeUnavailable, Reconnected
from callassist.settings import Settings

log = logging.getLogger(__name__)

_TAG = "callassist_"  # our event_ids: the tag comes back in an error's event_id
# Errors the Realtime API sends when a barge-in or a tool result races the server; harmless.
RECOVERABLE_ERRORS = frozenset(
    {
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "rate_limit_exceeded",
        "invalid_value",  # e.g. truncating audio the server already considers shorter
        "item_truncate_invalid_item_id",
        "input_audio_buffer_commit_empty",
    }
)


def _by_type(*models: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Each SDK event model by its `type` (the one value its Literal allows)."""
    return {get_args(model.model_fields["type"].annotation)[0]: model for model in models}


# Parsed into the SDK's models; every other type arrives as OtherEvent (its type only).
_READ = _by_type(
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionFailedEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
    RealtimeErrorEvent,
)
# Events we know and need not act on (anything else is logged once, as new).
_IGNORED = frozenset(
    {
        "session.created",
        "session.updated",
        "conversation.created",
        "conversation.item.added",
        "conversation.item.created",
        "conversation.item.done",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "conversation.item.retrieved",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "rate_limits.updated",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
        # Also sent for calls of interrupted responses, with partial arguments (SDK docstring of
        # ResponseFunctionCallArgumentsDoneEvent): calls are read from response.done, when complete.
        "response.function_call_arguments.done",
    }
)
REPLAY_PREAMBLE = (
    "The connection was briefly interrupted. The conversation so far follows; "
    "carry on from where it stopped without greeting the caller again."
)
INTERRUPTED_MARKER = "(The caller interrupted the assistant here.)"


class RealtimeEngine:
    """One call's assistant on OpenAI Realtime. See `engine.base.Engine` for the contract."""

    def __init__(
        self,
        client: AsyncOpenAI,
        settings: Settings,
        *,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        self._setup: SetupHook | None = None
        self._settings = settings
        self._log = logger
        self._unknown: set[str] = set()
        self._session = RealtimeSession(
            client, settings.realtime_model, setup=self._setup_events, logger=logger, typed_events=_READ
        )
        # Passed straight through: these are the socket's.
        self.send_audio = self._session.send_audio
        self.wait_ready = self._session.wait_ready
        self.settled = self._session.settled

    # Connection ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        try:
            await self._session.connect()
        except RealtimeUnavailable as exc:
            raise EngineUnavailable(str(exc)) from exc

    async def configure(self, setup: SetupHook) -> None:
        self._setup = setup
        try:
            await self._session.configure()
        except RealtimeUnavailable as exc:
            raise EngineUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self._session.close()

    async def rotate(self, quiet: Callable[[], bool]) -> bool:
        return await self._session.rotate(quiet)

    @property
    def ready(self) -> bool:
        return self._session.ready

    @property
    def switching(self) -> bool:
        return self._session.switching

    @property
    def buffered_frames(self) -> int:
        return self._session.buffered_frames

    @property
    def session_age(self) -> float:
        return self._session.session_age

    @property
    def reconnects(self) -> int:
        return self._session.reconnects

    @property
    def rotations(self) -> int:
        return self._session.rotations

    async def _setup_events(self, replacing: bool) -> Sequence[dict[str, Any]]:
        if self._setup is None:
            raise EngineUnavailable("configured without a setup")
        return setup_events(self._settings, await self._setup(replacing))

    # Requests -------------------------------------------------------------------------------------

    async def commit_input(self) -> bool:
        return await self._session.send({"type": "input_audio_buffer.commit"})

    async def request_response(self, request: str, *, audio_only: bool = False) -> bool:
        return await self._session.send(response_create(request, audio_only=audio_only))

    async def request_summary(self, instructions: str) -> bool:
        return await self._session.send(
            {
                "type": "response.create",
                "event_id": _TAG + SUMMARY_REQUEST,
                "response": {
                    "conversation": "none",
                    "output_modalities": ["text"],
                    # An out-of-band response inherits the session's tools and tool_choice: the
                    # summary must not book or hang up anything (RealtimeResponseCreateParams).
                    "tool_choice": "none",
                    "metadata": {"callassist": SUMMARY_REQUEST},
                    "max_output_tokens": 500,
                    "instructions": instructions,
                },
            }
        )

    async def cancel_response(self, response_id: str | None = None) -> bool:
        event: dict[str, Any] = {"type": "response.cancel"}
        if response_id is not None:
            event["response_id"] = response_id
        return await self._session.send(event)

    async def truncate(self, item_id: str, heard_ms: int) -> bool:
        return await self._session.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": heard_ms,
            }
        )

    async def add_note(self, text: str) -> bool:
        return await self._session.send({"type": "conversation.item.create", "item": _system(text)})

    async def hold(self, on: bool) -> None:
        # Nothing to send: the model speaks only when asked (or when its VAD hears speech, and the
        # call forwards no audio on hold).
        return None

    async def add_tool_output(self, call_id: str, output_json: str) -> bool:
        item = {"type": "function_call_output", "call_id": call_id, "output": output_json}
        return await self._session.send({"type": "conversation.item.create", "item": item})

    # Events ---------------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[EngineEvent]:
        audio, words = AudioOut, AssistantWords
        try:
            async for event in self._session.events():
                kind = type(event)
                if kind is audio or kind is words:
                    yield event  # type: ignore[misc]  # the hot path: made by the session itself
                elif kind is Reconnected:
                    assert isinstance(event, Reconnected)
                    yield SessionReplaced(event.downtime_s, event.close_code, event.rotated)
                elif kind is OtherEvent:
                    assert isinstance(event, OtherEvent)
                    self._unknown_type(event.type)
                else:
                    mapped = self._map(event)
                    if mapped is not None:
                        yield mapped
        except RealtimeUnavailable as exc:
            yield EngineLost(str(exc))
            return
        yield EngineLost("the event stream ended")

    def _unknown_type(self, kind: str) -> None:
        if kind not in _IGNORED and kind not in self._unknown:
            self._unknown.add(kind)
            self._log.info("ignoring OpenAI event type %r", kind)

    def _map(self, event: Any) -> EngineEvent | None:
        if isinstance(event, InputAudioBufferSpeechStartedEvent):
            return SpeechStarted(event.item_id, event.audio_start_ms)
        if isinstance(event, InputAudioBufferSpeechStoppedEvent):
            return SpeechStopped(event.item_id, event.audio_end_ms)
        if isinstance(event, ConversationItemInputAudioTranscriptionCompletedEvent):
            return _transcribed(event)
        if isinstance(event, ConversationItemInputAudioTranscriptionFailedEvent):
            return CallerInaudible(event.item_id)
        if isinstance(event, ResponseCreatedEvent):
            return ResponseStarted(event.response.id or "", _request_of(event.response))
        if isinstance(event, ResponseDoneEvent):
            return finished(event.response)
        if isinstance(event, RealtimeErrorEvent):
            return self._error(event)
        self._unknown_type(str(getattr(event, "type", "")))
        return None

    def _error(self, event: RealtimeErrorEvent) -> EngineError:
        error = event.error
        code = error.code or error.type or "unknown"
        event_id = error.event_id or ""
        request = event_id[len(_TAG) :] if event_id.startswith(_TAG) else None
        if event_id == SESSION_UPDATE_ID:
            # Without our configuration the audio formats are wrong: the caller would hear noise.
            self._log.error("OpenAI refused the session configuration: %s", error.message)
            return EngineError(ErrorKind.fatal, code, error.message, None)
        level = logging.INFO if code in RECOVERABLE_ERRORS else logging.WARNING
        self._log.log(level, "OpenAI error %s: %s", code, error.message)
        kind = ErrorKind.refused if request else ErrorKind.recoverable
        return EngineError(kind, code, error.message, request)


# Wire shapes ------------------------------------------------------------------------------------


def _system(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "system", "content": [{"type": "input_text", "text": text}]}


def response_create(request: str, *, audio_only: bool = False) -> dict[str, Any]:
    """A response.create we can recognise later: its event_id echoes in errors, its metadata in
    response.created and response.done. Never `instructions` here: they would replace the session's
    (persona, language, privacy rules, the date) for this response (SDK docstring of
    RealtimeResponseCreateParams)."""
    response: dict[str, Any] = {"metadata": {"callassist": request}}
    if audio_only:
        response["output_modalities"] = ["audio"]
    return {"type": "response.create", "event_id": _TAG + request, "response": response}


def _history_item(turn: Turn) -> dict[str, Any]:
    if turn.role == "caller" and turn.audio:
        # Never transcribed (its session was lost): the model hears it instead. Audio items are read
        # in the session's input format (G.711 μ-law here).
        audio = base64.b64encode(turn.audio).decode("ascii")
        return {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}
    if turn.role == "caller":
        return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": turn.text}]}
    if turn.role == "assistant":
        content = [{"type": "output_text", "text": turn.text}]
        return {"type": "message", "role": "assistant", "content": content}
    return _system(turn.text)


def history_events(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """The conversation so far, as items a new session is given (as text, or a caller's audio)."""
    history: list[dict[str, Any]] = []
    for turn in turns:
        if turn.text == INAUDIBLE:
            continue
        history.append(_history_item(turn))
        if turn.role == "assistant" and turn.interrupted:
            # After the words the caller heard; a separate note, so the model doesn't take the
            # marker for its own words.
            history.append(_system(INTERRUPTED_MARKER))
    if history:
        history.insert(0, _system(REPLAY_PREAMBLE))
    return [{"type": "conversation.item.create", "item": item} for item in history]


def setup_events(settings: Settings, setup: SessionSetup) -> list[dict[str, Any]]:
    """The events that open a session: the configuration, then the greeting on the first, or the
    conversation so far on a replacement, never both."""
    session = build_session(settings, setup.instructions, setup.tools)
    events: list[dict[str, Any]] = [dict(session_update(session))]
    if setup.greeting is not None:
        events.append(response_create(setup.greeting))  # the assistant speaks first
        return events
    events += history_events(setup.history)
    if setup.unfinished_speech:
        # Before the frames buffered meanwhile: the new session's VAD hears the whole turn.
        audio = base64.b64encode(setup.unfinished_speech).decode("ascii")
        events.append({"type": "input_audio_buffer.append", "audio": audio})
    if setup.answer is not None:
        events.append(response_create(setup.answer))
    return events


def _request_of(response: RealtimeResponse) -> str | None:
    metadata = response.metadata or {}
    request = metadata.get("callassist")
    return request if isinstance(request, str) else None


def _transcribed(event: ConversationItemInputAudioTranscriptionCompletedEvent) -> CallerTranscribed:
    usage = event.usage
    text = event.transcript or ""
    if isinstance(usage, UsageTranscriptTextUsageDuration):
        return CallerTranscribed(event.item_id, text, seconds=usage.seconds or None)
    if isinstance(usage, UsageTranscriptTextUsageTokens):
        details = usage.input_token_details
        tokens = Usage(
            audio_in=(details.audio_tokens or 0) if details else 0,
            text_in=(details.text_tokens or 0) if details else 0,
            text_out=usage.output_tokens or 0,
        )
        return CallerTranscribed(event.item_id, text, tokens=tokens)
    return CallerTranscribed(event.item_id, text)


def finished(response: RealtimeResponse) -> ResponseFinished:
    """A finished response in our terms: its spoken items, its function calls, its usage."""
    spoken: list[SpokenItem] = []
    calls: list[ToolCall] = []
    for item in response.output or []:
        if isinstance(item, RealtimeConversationItemFunctionCall):
            completed = item.status == "completed"
            # Types say str; a service that omits them still must not crash the tool run.
            call = ToolCall(
                item.id or "", item.call_id or "", item.name or "", item.arguments or "", completed
            )
            calls.append(call)
        elif isinstance(item, RealtimeConversationItemAssistantMessage):
            text = ""
            has_audio = False
            for part in item.content:
                has_audio = has_audio or part.type == "output_audio"
                text = part.transcript or part.text or text
            spoken.append(SpokenItem(item.id or "", text, has_audio))
    failure = None
    details = response.status_details
    if response.status == "failed":
        error = details.error if details is not None else None
        failure = str((error.code or error.type) if error else (details.reason if details else None))
    return ResponseFinished(
        response_id=response.id or "",
        request=_request_of(response),
        status=response.status or "unknown",  # never taken for "completed" (end_call needs that)
        spoken=tuple(spoken),
        tool_calls=tuple(calls),
        usage=Usage.from_api(response.usage) if response.usage is not None else None,
        failure=failure,
    )
