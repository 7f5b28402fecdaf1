"""A local fake of OpenAI GPT-Live (`wss://api.openai.com/v1/live/sessions`) over a real WebSocket.

Like the Realtime fake (realtime_server.py), it is driven from the outside truth: every client frame
is validated against the SDK's `openai.types.live.ClientEvent` union in strict mode, unknown keys
included (live_protocol.py); every frame it sends against `ServerEvent` (and the Responses events
nested in `response.event` against `ResponseStreamEvent`). What the model says and delegates comes
from a `LiveScript` (live_script.py); tool arguments are built from the declared function schemas
(tool_calls.py); caller turns are found by the energy VAD (vad.py) on the μ-law input.

`server.validation_failures` holds what the real service would reject whatever the state (and what
no model could do with the declared tools); `session.errors_sent` every `error` event sent.

Behaviours and their sources (openai 3.57.0, `types/live/` and `resources/live/`):
- URL `/v1/live/sessions`, no query parameters, model in `session.start` ("Connect to Live without
  query parameters", AsyncLive.connect; SessionConfig.model: "do not pass it as a URL query
  parameter").
- `session.start` first, answered by `session.started` with the resolved session (SessionStartEvent,
  SessionStartedEvent); anything before it is an error.
- audio in/out in the startup format, immutable (session_config.Audio); output deltas carry no
  timestamps on the primary socket (OutputAudioDeltaEvent.start_ms).
- transcripts as delta events only, no turn boundaries, no done event (InputTranscriptDeltaEvent).
- full duplex: the model stops speaking when the caller talks over it; nothing the client sends
  creates, cancels or truncates its speech (the client events: none does).
- `session.instructions/thinking/commentary.append`: `delegation_id` "Required, nullable", non-null
  refused with Responses delegation; commentary is "context the Live model can communicate".
- delegation: `session.delegation.created`, then the backend's Responses streaming events as
  `response.event` with the delegation_id (DelegationCreatedEvent, ResponseEvent); lifecycle
  snapshots carry no output or tools ("consume granular output events"); tool results go back as
  `response.item.create` + `response.create` ("continue a delegated response waiting for tool
  results", LiveResponseResource.create); both "Require Responses delegation".
- `session.usage.updated`: cumulative whole seconds ("Do not sum values across usage events").
- `session.close` -> `session.closed` (reason close_requested, final usage), then the socket closes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NamedTuple, Self
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes.formats import AudioKind, bytes_per_ms, ulaw_to_format
from tests.fakes.live_protocol import (
    LIVE_MODELS,
    live_error,
    validate_live_client_event,
    validate_live_server_event,
)
from tests.fakes.live_script import Delegate, LiveReply, LiveScript
from tests.fakes.protocol import new_id
from tests.fakes.realtime_server import FakeRealtimeServer
from tests.fakes.script import Say
from tests.fakes.tool_calls import Clock, build_arguments, schema_problems
from tests.fakes.vad import TurnDetector, VadSettings

__all__ = ["FakeLiveServer", "FakeLiveSession", "LiveScript"]

_WORDS = re.compile(r"\S+\s*")
_QUIET = frozenset({"session.input_audio.append", "session.output_audio.delta"})
_SAMPLED = (".delta",)  # validated once per session: the benchmark streams thousands
# The service's VAD is a model; this is the energy detector of the Realtime fake with a silence
# window a little longer than server_vad's, as a full-duplex model waits for the turn to be over.
_VAD = VadSettings("server_vad", 0.5, 300, 500, True, True, None)
WORD_MS = 250  # a caller's word every so often while they speak (an average speaking rate)
SESSION_LIFETIME_S = 2 * 60 * 60  # sessions observed to expire after about 2 h (reference E)


class Received(NamedTuple):
    t: float
    type: str
    event: dict[str, Any]


class Sent(NamedTuple):
    t: float
    type: str
    event: dict[str, Any]


@dataclass
class Said:
    """One stretch of the model's speech: its words, the audio sent, and whether the caller cut it."""

    text: str
    audio: bytearray = field(default_factory=bytearray)
    interrupted: bool = False


@dataclass
class _Delegation:
    id: str
    delegate: Delegate
    calls: dict[str, str] = field(default_factory=dict)  # call_id -> tool name, of the open response
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (name, output) received
    waiting: bool = False  # its backend response is waiting for tool results
    sequence: int = 0


class FakeLiveSession:
    """One accepted connection. Records for assertions: client_events, server_events (in order),
    audio_in (μ-law, byte-exact), said (the model's speech), function_outputs, instructions_appended,
    commentary, errors_sent, start (the session.start's session), closed/close_code."""

    def __init__(self, server: FakeLiveServer, ws: ServerConnection, index: int, script: LiveScript) -> None:
        request = ws.request
        assert request is not None
        self._server = server
        self._ws = ws
        self.script = script
        self.index = index
        self.headers = request.headers
        self.id = new_id("sess")
        self.client_events: list[Received] = []
        self.server_events: list[Sent] = []
        self.audio_in = bytearray()
        self.said: list[Said] = []
        self.function_outputs: list[tuple[str, str]] = []
        self.instructions_appended: list[str] = []
        self.commentary: list[str] = []
        self.errors_sent: list[dict[str, Any]] = []
        self.backend_items: list[dict[str, Any]] = []
        self.start: dict[str, Any] | None = None
        self.closed = False
        self.close_code: int | None = None
        self.usage_seconds = 0
        self._started_at = 0.0
        self._kind: AudioKind = "pcm"
        self._input_ms = 0.0
        self._vad: TurnDetector | None = None
        self._speaking: asyncio.Task[None] | None = None
        self._speech: Said | None = None
        self._caller_words: list[str] = []
        self._caller_end_ms = 0
        self._delegations: dict[str, _Delegation] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._validated: set[str] = set()
        self._changed = asyncio.Event()
        self._handlers: dict[str, Callable[[dict[str, Any], str | None], Awaitable[None]]] = {
            "session.start": self._on_start,
            "session.input_audio.append": self._on_append,
            "session.instructions.append": self._on_append_text,
            "session.thinking.append": self._on_append_text,
            "session.commentary.append": self._on_append_text,
            "response.item.create": self._on_item_create,
            "response.create": self._on_response_create,
            "session.close": self._on_close,
            "session.input_audio.mute": self._on_mute,
            "session.input_audio.unmute": self._on_mute,
        }
        self.input_muted = False
        self.mutes: list[bool] = []  # every mute (True) and unmute (False), in order

    # Public API for tests ---------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        return self.start or {}

    @property
    def audio_out(self) -> bytes:
        return b"".join(bytes(said.audio) for said in self.said)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5) -> None:  # noqa: ASYNC109
        await self._server.wait_until(predicate, timeout)

    async def wait_for_client_event(self, kind: str, timeout: float = 5) -> dict[str, Any]:  # noqa: ASYNC109
        await self.wait_for(lambda: any(e.type == kind for e in self.client_events), timeout)
        return next(e.event for e in self.client_events if e.type == kind)

    async def send_event(self, kind: str, **fields: Any) -> None:
        """Any server event on demand (validated like every other), e.g. a usage report."""
        await self._emit(kind, **fields)

    async def send_error(self, code: str, message: str = "Something went wrong.", **extra: Any) -> None:
        """An `error` event on demand (ErrorEvent: code, message, type; param, client_event_id)."""
        await self._emit("error", error=live_error(code, message, **extra))

    async def drop(self, code: int = 1011) -> None:
        """The socket closes without `session.closed` ("A connection closing without this event
        does not confirm successful finalization", SessionClosedEvent)."""
        self._stop_all()
        with contextlib.suppress(ConnectionClosed):
            await self._ws.close(code, "upstream disconnected")
        self._mark_closed(code)

    async def expire(self) -> None:
        """The session reached its duration limit: session.closed with reason `expired`."""
        await self._closed("expired")

    # Lifecycle --------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    await self._error("invalid_value", "Binary frames are not supported.", invalid=True)
                else:
                    await self._on_text(message)
        except ConnectionClosed:
            pass
        finally:
            self._stop_all()
            self._mark_closed(None)

    def _stop_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _mark_closed(self, code: int | None) -> None:
        if self.closed:
            return
        self.closed = True
        received = self._ws.protocol.close_rcvd
        self.close_code = code if code is not None else (received.code if received else 1006)
        self._notify()

    def pending_tasks(self) -> list[asyncio.Task[Any]]:
        return [task for task in self._tasks if not task.done()]

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guarded(coroutine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: coroutine.close())  # cancelled before it ran: never awaited
        return task

    async def _guarded(self, coroutine: Coroutine[Any, Any, None]) -> None:
        try:
            await coroutine
        except (ConnectionClosed, asyncio.CancelledError):
            pass
        except Exception as exc:
            self._server.fail(self, f"fake internal error: {exc!r}\n{traceback.format_exc()}")

    def _notify(self) -> None:
        self._server.notify()

    def now_ms(self) -> int:
        """The session timeline: ms since session.started."""
        return int((time.monotonic() - self._started_at) * 1000) if self._started_at else 0

    # Sending ----------------------------------------------------------------------------------

    async def _emit(self, kind: str, *, with_id: bool = True, **fields: Any) -> dict[str, Any]:
        event: dict[str, Any] = {"type": kind, **fields}
        if with_id:
            event["event_id"] = new_id("event")
        if not kind.endswith(_SAMPLED) or kind not in self._validated:
            self._validated.add(kind)
            problem = validate_live_server_event(event)
            if problem is not None:
                self._server.fail(self, f"the fake sent an invalid {kind}: {problem}")
        if self._server.keep_history or not kind.endswith(_SAMPLED):
            self.server_events.append(Sent(time.monotonic(), kind, event))
        if kind == "error":
            self.errors_sent.append(event["error"])
        self._notify()
        await self._ws.send(json.dumps(event))
        return event

    async def _error(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        client_event_id: str | None = None,
        invalid: bool = False,
    ) -> None:
        if invalid:
            self._server.fail(self, f"{code}: {message}")
        error = live_error(code, message, param=param, client_event_id=client_event_id)
        await self._emit(
            "error", error=error, **({"client_event_id": client_event_id} if client_event_id else {})
        )

    # Client frames ----------------------------------------------------------------------------

    async def _on_text(self, message: str) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            await self._error(
                "invalid_json", "We could not parse the JSON body of your request.", invalid=True
            )
            return
        if not isinstance(data, dict):
            await self._error("invalid_type", "Invalid type for event: expected an object.", invalid=True)
            return
        kind = str(data.get("type"))
        if self._server.keep_history or kind not in _QUIET:
            self.client_events.append(Received(time.monotonic(), kind, data))
        self._notify()
        event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        problem = validate_live_client_event(data)
        if (
            problem is None
            and kind
            in {
                "session.instructions.append",
                "session.thinking.append",
                "session.commentary.append",
            }
            and "delegation_id" not in data
        ):
            # InstructionsAppendEvent.delegation_id: "Required, nullable." (the SDK sends it always)
            problem_args = ("missing_required_parameter", "Missing required parameter: 'delegation_id'.")
            await self._error(*problem_args, param="delegation_id", client_event_id=event_id, invalid=True)
            return
        if problem is not None:
            await self._error(
                problem.code, problem.message, param=problem.param, client_event_id=event_id, invalid=True
            )
            return
        if kind != "session.start" and self.start is None:
            # SessionStartEvent: "Send this event before other commands and wait for session.started."
            await self._error(
                "session_not_started",
                f"{kind} sent before session.start.",
                client_event_id=event_id,
                invalid=True,
            )
            return
        handler = self._handlers.get(kind)
        if handler is None:
            await self._error(
                "unsupported_by_fake",
                f"The fake does not implement {kind}.",
                client_event_id=event_id,
                invalid=True,
            )
            return
        await handler(data, event_id)

    async def _on_start(self, data: dict[str, Any], event_id: str | None) -> None:
        if self.start is not None:
            await self._error(
                "session_already_started", "session.start was sent twice.", client_event_id=event_id
            )
            return
        session = dict(data["session"])
        model = session.get("model")
        if model in self._server.refused_models or model not in LIVE_MODELS:
            # A model the account may not use (reference E: "some accounts may need access").
            await self._error(
                "model_not_found",
                f"The model '{model}' does not exist or you do not have access to it.",
                param="session.model",
                client_event_id=event_id,
            )
            return
        fmt = (session.get("audio") or {}).get("format")
        self._kind = {"audio/pcmu": "pcmu", "audio/pcma": "pcma"}.get(str((fmt or {}).get("type")), "pcm")
        for tool in self._backend_tools(session):
            for problem in schema_problems(str(tool.get("name")), tool.get("parameters")):
                self._server.fail(self, problem)
        if len(session.get("input") or []) > 128:  # SessionConfig.input: "at most 128 messages"
            await self._error(
                "invalid_value", "At most 128 input items.", param="session.input", invalid=True
            )
            return
        self.start = session
        self._started_at = time.monotonic()
        self._vad = TurnDetector(_VAD, self._kind, 0.0)
        resolved = {
            **session,
            "id": self.id,
            "status": "active",
            "expires_at": int(time.time()) + SESSION_LIFETIME_S,
        }
        await self._emit("session.started", session=resolved, **_reply_to(event_id))
        self._spawn(self._report_usage())

    def _backend_tools(self, session: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        delegation = (session or self.config).get("delegation") or {}
        if delegation.get("type") != "responses":
            return []
        return [tool for tool in delegation["responses"].get("tools") or [] if tool.get("type") == "function"]

    @property
    def _responses_delegation(self) -> bool:
        return (self.config.get("delegation") or {}).get("type") == "responses"

    async def _report_usage(self) -> None:
        while True:
            await asyncio.sleep(self._server.usage_interval_s)
            await self._emit("session.usage.updated", usage={"seconds": float(self._seconds())})

    def _seconds(self) -> int:
        self.usage_seconds = int(time.monotonic() - self._started_at)  # whole seconds (SessionUsage)
        return self.usage_seconds

    async def _on_append(self, data: dict[str, Any], event_id: str | None) -> None:
        try:
            audio = base64.b64decode(data["audio"], validate=True)
        except (binascii.Error, ValueError):
            await self._error("invalid_value", "Invalid base64 audio.", param="audio", invalid=True)
            return
        if self.input_muted:
            # Muted: the model hears silence (InputAudioMutedEvent).
            audio = (
                bytes([0xFF]) if self._kind == "pcmu" else bytes([0xD5]) if self._kind == "pcma" else b"\0"
            ) * len(audio)
        if self._server.keep_history:
            self.audio_in += audio
        if self._server.on_audio_in is not None:
            self._server.on_audio_in(audio)
        if self._vad is None:
            return
        for vad in self._vad.feed(audio, 0.0):
            if vad.kind == "speech_started":
                await self._caller_began(vad.ms)
            else:
                await self._caller_ended(vad.ms)
        if (
            self._vad.in_speech
            and self._caller_words
            and self._input_ms_now() >= self._caller_end_ms + WORD_MS
        ):
            # The transcript streams while the caller speaks, a word at a time.
            start, self._caller_end_ms = self._caller_end_ms, int(self._input_ms_now())
            word = self._caller_words.pop(0)
            await self._emit(
                "session.input_transcript.delta", delta=word, start_ms=start, end_ms=self._caller_end_ms
            )

    async def _caller_began(self, at_ms: int) -> None:
        if self._speaking is not None and not self._speaking.done() and self.script.yields_to_caller:
            self._speaking.cancel()  # the model stops talking: nothing more of this speech is sent
            if self._speech is not None:
                self._speech.interrupted = True
        self._caller_words = _WORDS.findall(self.script.next_transcript())
        first = self._caller_words.pop(0) if self._caller_words else ""
        self._caller_end_ms = max(at_ms, int(self._input_ms_now()))
        await self._emit(
            "session.input_transcript.delta", delta=first, start_ms=at_ms, end_ms=self._caller_end_ms
        )

    def _input_ms_now(self) -> float:
        return len(self.audio_in) / bytes_per_ms(self._kind) if self._server.keep_history else self.now_ms()

    async def _caller_ended(self, at_ms: int) -> None:
        if self._caller_words:
            rest, self._caller_words = "".join(self._caller_words), []
            await self._emit(
                "session.input_transcript.delta", delta=rest, start_ms=self._caller_end_ms, end_ms=at_ms
            )
        self._spawn(self._answer(self.script.next_reply()))

    async def _on_append_text(self, data: dict[str, Any], event_id: str | None) -> None:
        kind = data["type"]
        if data.get("delegation_id") is not None and self._responses_delegation:
            await self._error(
                "invalid_value",
                "Non-null delegation IDs are not accepted with Responses delegation.",
                param="delegation_id",
                client_event_id=event_id,
                invalid=True,
            )
            return
        now = self.now_ms()
        acknowledged = kind.removesuffix(".append") + ".appended"
        await self._emit(acknowledged, start_ms=now, end_ms=now, **_reply_to(event_id))
        if kind == "session.instructions.append":
            self.instructions_appended.append(data["content"])
        elif kind == "session.commentary.append":
            self.commentary.append(data["content"])
            self._spawn(self._answer(self.script.next_reply()))

    # The model speaks -------------------------------------------------------------------------

    async def _answer(self, reply: LiveReply) -> None:
        await asyncio.sleep(self._server.first_delta_ms / 1000)
        if reply.delegate is not None:
            self._spawn(self._delegate(reply.delegate))
        if reply.say:
            await self._speak(reply.say)

    async def _speak(self, says: list[Say]) -> None:
        previous = self._speaking
        if previous is not None and not previous.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(previous)  # one voice: the next speech follows the current one
        task = asyncio.current_task()
        assert task is not None
        self._speaking = task
        for say in says:
            await self._stream(say)

    async def _stream(self, say: Say) -> None:
        audio = say.resolve_audio() if say.audio is not None else await asyncio.to_thread(say.resolve_audio)
        out = ulaw_to_format(audio, self._kind)
        bpm = bytes_per_ms(self._kind)
        chunk_bytes = max(bpm, self._server.chunk_ms * bpm)
        words = _WORDS.findall(say.text.strip() + " ")  # a space after the last word: speech goes on
        chunks = max(1, math.ceil(len(out) / chunk_bytes))
        said = self._speech = Said(say.text)
        self.said.append(said)
        began = time.monotonic()
        sent_words = 0
        interval = self._server.chunk_ms / 1000 / self._server.speed
        for index in range(chunks):
            upto = math.ceil((index + 1) * len(words) / chunks)
            if upto > sent_words:  # the transcript runs a little ahead of the audio
                now = self.now_ms()
                delta = "".join(words[sent_words:upto])
                sent_words = upto
                await self._emit("session.output_transcript.delta", delta=delta, start_ms=now, end_ms=now)
            chunk = out[index * chunk_bytes : (index + 1) * chunk_bytes]
            delay = began + index * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._server.on_audio_out is not None:
                chunk = self._server.on_audio_out(chunk)
            if self._server.keep_history:
                said.audio += chunk
            await self._emit(
                "session.output_audio.delta", with_id=False, delta=base64.b64encode(chunk).decode()
            )

    # Delegation -------------------------------------------------------------------------------

    async def _delegate(self, delegate: Delegate) -> None:
        if not self._responses_delegation:
            self._server.fail(self, "the script delegates, but the session has no Responses delegation")
            return
        delegation = _Delegation(new_id("dlg"), delegate)
        self._delegations[delegation.id] = delegation
        response_id = new_id("resp")
        await self._emit(
            "session.delegation.created",
            delegation={
                "id": delegation.id,
                "target": "responses",
                "type": "delegation",
                "response_id": response_id,
            },
            offset_ms=self.now_ms(),
        )
        await asyncio.sleep(self._server.backend_latency_s)
        if delegate.fail:
            await self._backend_event(
                delegation, "response.created", response=self._snapshot(response_id, "in_progress")
            )
            failed = self._snapshot(response_id, "failed")
            failed["error"] = {"code": "server_error", "message": "The backend failed."}
            await self._backend_event(delegation, "response.failed", response=failed)
            return
        if not delegate.calls:
            await self._final(delegation, response_id, None)
            return
        await self._tool_calls(delegation, response_id)

    async def _backend_event(
        self, delegation: _Delegation | None, kind: str, client_event_id: str | None = None, **fields: Any
    ) -> None:
        sequence = delegation.sequence if delegation is not None else 0
        if delegation is not None:
            delegation.sequence += 1
        nested = {"type": kind, "sequence_number": sequence, **fields}
        extra: dict[str, Any] = {}
        if delegation is not None:
            extra["delegation_id"] = delegation.id
        if client_event_id is not None:
            extra["client_event_id"] = client_event_id
        await self._emit("response.event", event=nested, **extra)

    def _snapshot(self, response_id: str, status: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        """A lifecycle snapshot: no input, instructions, tools or output ("to keep messages small",
        ResponseEvent.event)."""
        backend = (self.config.get("delegation") or {}).get("responses") or {}
        snapshot: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "model": backend.get("model", ""),
            "status": status,
            "output": [],
            "tools": [],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "instructions": None,
        }
        if usage is not None:
            snapshot["usage"] = usage
        return snapshot

    def _usage(self, output_chars: int) -> dict[str, Any]:
        backend = (self.config.get("delegation") or {}).get("responses") or {}
        prompt = len(str(backend.get("instructions") or "")) + len(json.dumps(backend.get("tools") or []))
        prompt += sum(len(json.dumps(item)) for item in self.backend_items)
        input_tokens, output_tokens = prompt // 4 + 50, output_chars // 4 + 5
        cached = (input_tokens // 2) if self.backend_items else 0
        return {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }

    async def _tool_calls(self, delegation: _Delegation, response_id: str) -> None:
        backend = (self.config.get("delegation") or {}).get("responses") or {}
        clock = Clock.from_instructions(
            str(backend.get("instructions") or self.config.get("instructions") or "")
        )
        declared = {str(tool["name"]): tool for tool in self._backend_tools()}
        await self._backend_event(
            delegation, "response.created", response=self._snapshot(response_id, "in_progress")
        )
        chars = 0
        for index, use in enumerate(delegation.delegate.calls):
            tool = declared.get(use.name)
            if tool is None:
                self._server.fail(self, f"the backend can't call {use.name!r}: not among the declared tools")
                continue
            arguments, problems = build_arguments(use.name, tool.get("parameters"), use.intent, clock)
            for problem in problems:
                self._server.fail(self, problem)
            text = json.dumps(arguments)
            chars += len(text)
            call = {
                "type": "function_call",
                "id": new_id("fc"),
                "call_id": use.call_id or new_id("call"),
                "name": use.name,
                "arguments": "",
                "status": "in_progress",
            }
            delegation.calls[call["call_id"]] = use.name
            where = {"item_id": call["id"], "output_index": index}
            await self._backend_event(delegation, "response.output_item.added", item=call, output_index=index)
            await self._backend_event(
                delegation, "response.function_call_arguments.delta", delta=text, **where
            )
            await self._backend_event(
                delegation, "response.function_call_arguments.done", arguments=text, **where
            )
            done = {**call, "arguments": text, "status": "completed"}
            await self._backend_event(delegation, "response.output_item.done", item=done, output_index=index)
        delegation.waiting = True
        completed = self._snapshot(response_id, "completed", self._usage(chars))
        await self._backend_event(delegation, "response.completed", response=completed)

    async def _final(
        self,
        delegation: _Delegation | None,
        response_id: str,
        client_event_id: str | None,
        *,
        answers_message: bool = False,
    ) -> None:
        """A backend response that writes text: the delegation's result (which the Live model then
        says), or, when the client's newest backend item is a message (a request of its own, like
        an end-of-call summary), the script's summary (not spoken)."""
        summary = answers_message or delegation is None
        text = self.script.summary if summary else delegation.delegate.result_text(delegation.outputs)
        created = self._snapshot(response_id, "in_progress")
        await self._backend_event(delegation, "response.created", client_event_id, response=created)
        message = {
            "type": "message",
            "id": new_id("msg"),
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        where = {"item_id": message["id"], "output_index": 0}
        await self._backend_event(
            delegation, "response.output_item.added", client_event_id, item=message, output_index=0
        )
        await self._backend_event(
            delegation,
            "response.output_text.delta",
            client_event_id,
            delta=text,
            content_index=0,
            logprobs=[],
            **where,
        )
        await self._backend_event(
            delegation,
            "response.output_text.done",
            client_event_id,
            text=text,
            content_index=0,
            logprobs=[],
            **where,
        )
        part = {"type": "output_text", "text": text, "annotations": []}
        done = {**message, "status": "completed", "content": [part]}
        await self._backend_event(
            delegation, "response.output_item.done", client_event_id, item=done, output_index=0
        )
        completed = self._snapshot(response_id, "completed", self._usage(len(text)))
        await self._backend_event(delegation, "response.completed", client_event_id, response=completed)
        if delegation is not None and not summary:
            spoken = delegation.delegate.spoken or Say(text)
            await self._speak([spoken])

    async def _on_item_create(self, data: dict[str, Any], event_id: str | None) -> None:
        if not self._responses_delegation:
            await self._error(
                "invalid_request",
                "response.item.create requires Responses delegation.",
                client_event_id=event_id,
            )
            return
        item = data["item"]
        self.backend_items.append(item)
        if item.get("type") != "function_call_output":
            return
        call_id = item.get("call_id")
        output = item["output"] if isinstance(item["output"], str) else json.dumps(item["output"])
        for delegation in self._delegations.values():
            if call_id in delegation.calls:
                delegation.outputs.append((delegation.calls.pop(call_id), output))
                self.function_outputs.append((str(call_id), output))
                return
        await self._error(
            "invalid_value",
            f"No tool call found with call_id '{call_id}'.",
            param="item.call_id",
            client_event_id=event_id,
        )

    async def _on_response_create(self, data: dict[str, Any], event_id: str | None) -> None:
        if not self._responses_delegation:
            await self._error(
                "invalid_request", "response.create requires Responses delegation.", client_event_id=event_id
            )
            return
        waiting = [d for d in self._delegations.values() if d.waiting]
        # The backend answers the newest item it was given: a message of the client's own (not a
        # tool output) is a request of its own.
        message = bool(self.backend_items) and self.backend_items[-1].get("type", "message") == "message"
        if not waiting:
            self._spawn(self._final(None, new_id("resp"), event_id, answers_message=message))
            return
        delegation = waiting[0]
        if delegation.calls:
            missing = next(iter(delegation.calls))
            # The Responses API refuses to continue with a function call left unanswered.
            await self._error(
                "invalid_request",
                f"No tool output found for function call {missing}.",
                client_event_id=event_id,
            )
            return
        delegation.waiting = False
        # A delegation continued by our response.create: its events carry that command's event_id
        # (ResponseEvent.client_event_id: "the client command associated with this server event").
        self._spawn(self._final(delegation, new_id("resp"), event_id, answers_message=message))

    async def _on_mute(self, data: dict[str, Any], event_id: str | None) -> None:
        # InputAudioMuteEvent: "Mute audio input to the Live model without closing the session. The
        # server acknowledges with `session.input_audio.muted`"; a mute "sends silence to the model".
        muted = data["type"] == "session.input_audio.mute"
        self.input_muted = muted
        self.mutes.append(muted)
        ack = "session.input_audio.muted" if muted else "session.input_audio.unmuted"
        await self._emit(ack, **({"client_event_id": event_id} if event_id else {}))
        self._server.notify()

    async def _on_close(self, data: dict[str, Any], event_id: str | None) -> None:
        await self._closed("close_requested", event_id)

    async def _closed(self, reason: str, event_id: str | None = None) -> None:
        self._stop_all()
        session = {**self.config, "id": self.id, "status": "active", "expires_at": int(self._started_at)}
        await self._emit(
            "session.closed",
            reason=reason,
            session=session,
            usage={"seconds": float(self._seconds())},
            **_reply_to(event_id),
        )
        with contextlib.suppress(ConnectionClosed):
            await self._ws.close(1000)
        self._mark_closed(1000)


def _reply_to(event_id: str | None) -> dict[str, Any]:
    return {"client_event_id": event_id} if event_id else {}


class FakeLiveServer:
    """A local stand-in for wss://api.openai.com/v1/live/sessions, one FakeLiveSession per connection."""

    def __init__(
        self,
        script: LiveScript | Callable[[], LiveScript] | None = None,
        *,
        chunk_ms: int = 100,
        speed: float = 8.0,
        first_delta_ms: int = 60,
        backend_latency_s: float = 0.05,
        usage_interval_s: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_history: bool = True,
        realtime: FakeRealtimeServer | None = None,
    ) -> None:
        """realtime: a fake Realtime server to serve `/v1/realtime` on the same port, as
        api.openai.com serves both (for a call that falls back from GPT-Live to Realtime)."""
        self._script = script if script is not None else LiveScript()
        self.chunk_ms = chunk_ms
        self.speed = speed
        self.first_delta_ms = first_delta_ms
        self.backend_latency_s = backend_latency_s
        self.usage_interval_s = usage_interval_s
        self.host = host
        self.keep_history = keep_history
        self.realtime = realtime
        self.port_wanted = port
        # Benchmark hooks (bench/relay.py): watch caller audio as it arrives, rewrite the model's
        # audio as it leaves; with keep_history=False no per-frame history is kept.
        self.on_audio_in: Callable[[bytes], None] | None = None
        self.on_audio_out: Callable[[bytes], bytes] | None = None
        # Set to e.g. HTTPStatus.FORBIDDEN: new connections are refused at the handshake (an account
        # without access); `refused` counts them.
        self.refuse_status: HTTPStatus | None = None
        self.refused = 0
        self.refused_models: set[str] = set()  # session.start with one of these gets an error
        self.sessions: list[FakeLiveSession] = []
        self.validation_failures: list[str] = []
        self._server: Server | None = None
        self._changed = asyncio.Event()

    async def start(self) -> Self:
        self._server = await serve(
            self._handle,
            self.host,
            self.port_wanted,
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
        )
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None
        leftovers = [task for session in self.sessions for task in session.pending_tasks()]
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeLiveServer is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def base_url(self) -> str:
        """What to give the SDK as base_url (it appends /live/sessions and switches to ws)."""
        return f"http://{self.host}:{self.port}/v1"

    def notify(self) -> None:
        self._changed.set()

    def fail(self, session: FakeLiveSession | None, text: str) -> None:
        where = f"session {session.index}" if session is not None else "handshake"
        self.validation_failures.append(f"{where}: {text}")
        self.notify()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"timed out after {timeout}s; {len(self.sessions)} session(s); "
                    f"failures: {self.validation_failures or 'none'}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_for_session(self, index: int, timeout: float = 5) -> FakeLiveSession:  # noqa: ASYNC109
        await self.wait_until(lambda: len(self.sessions) > index, timeout)
        return self.sessions[index]

    def _http_error(
        self, connection: ServerConnection, status: HTTPStatus, message: str, code: str | None
    ) -> Response:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
        response = connection.respond(status, json.dumps(body) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | Awaitable[Response | None] | None:
        url = urlsplit(request.path)
        if self.realtime is not None and url.path.rstrip("/") == "/v1/realtime":
            return self.realtime._process_request(connection, request)
        if url.path.rstrip("/") != "/v1/live/sessions":
            self.fail(None, f"unknown path {request.path!r}")
            return self._http_error(connection, HTTPStatus.NOT_FOUND, f"Invalid URL (GET {url.path})", None)
        if url.query:
            # AsyncLive.connect: "Connect to Live without query parameters."
            self.fail(None, f"query parameters in {request.path!r}")
            return self._http_error(connection, HTTPStatus.BAD_REQUEST, "Unexpected query parameters.", None)
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[7:].strip():
            self.fail(None, "no 'Authorization: Bearer ...' header")
            return self._http_error(
                connection, HTTPStatus.UNAUTHORIZED, "You didn't provide an API key.", None
            )
        if self.refuse_status is not None:
            self.refused += 1
            self.notify()
            return self._http_error(
                connection, self.refuse_status, "You do not have access to GPT-Live.", "model_not_found"
            )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        if (
            self.realtime is not None
            and ws.request is not None
            and ws.request.path.startswith("/v1/realtime")
        ):
            await self.realtime._handle(ws)
            return
        script = self._script if isinstance(self._script, LiveScript) else self._script()
        session = FakeLiveSession(self, ws, len(self.sessions), script)
        self.sessions.append(session)
        self.notify()
        await session.run()
