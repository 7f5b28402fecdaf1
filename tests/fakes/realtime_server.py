"""A faithful local fake of the OpenAI Realtime API (GA), served over a real WebSocket.

Stands in for `wss://api.openai.com/v1/realtime?model=...` so callassist can be tested end to end
with the official SDK (`OPENAI_BASE_URL=http://127.0.0.1:PORT/v1`). It speaks only the GA
protocol: every client frame is validated against the SDK's types (unknown keys included), beta
traffic is rejected the way the live service rejects it, and every event it sends validates
against `RealtimeServerEvent`. What the "model" says comes from a `Script` (see script.py); turn
detection is an energy VAD (see vad.py).

Two kinds of client mistakes are kept apart:

* `server.validation_failures`: frames the real service would reject whatever the conversation
  state (malformed JSON, unknown event types or keys, wrong value types, invalid base64, the beta
  header, a missing API key, a malformed response.create...). Tests normally assert it is empty.
  Also recorded there: what no model could do with what the client declared, i.e. a function
  tool whose JSON schema is invalid or unsatisfiable (checked when declared and when used), a
  scripted `UseTool` of a tool the response doesn't see, an intent the schema can't carry and
  built arguments that fail the schema (see script.py and tool_calls.py). Recorded once per session.
* `session.errors_sent`: every `error` event, including state-dependent ones that a correct
  client can still hit in a race (response already active, nothing to cancel, truncating past
  the generated audio, unknown tool call id, committing an empty buffer).

The model's behaviour follows the service's documented and reported behaviour; where the fake
does something on purpose, a comment names the source (SDK docstring, API reference, issue).

Run alone for local trials:  python -m tests.fakes.realtime_server [--host 127.0.0.1] [--port 8765]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import json
import math
import re
import signal
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, NamedTuple, Self
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes.demo import demo_script
from tests.fakes.formats import AudioKind, audio_kind, bytes_per_ms, ulaw_to_format
from tests.fakes.protocol import (
    MAX_DURATION_CLOSE_REASON,
    SEMANTIC_VAD_DEFAULTS,
    SERVER_VAD_DEFAULTS,
    default_session,
    error_event_body,
    new_id,
    quote_list,
    validate_client_event,
    validate_server_event,
)
from tests.fakes.script import (
    CallFunction,
    Reply,
    Responder,
    ResponseContext,
    Say,
    Script,
    UseTool,
    resolve_responder,
)
from tests.fakes.tool_calls import Clock, build_arguments, schema_problems
from tests.fakes.vad import TurnDetector, VadSettings

__all__ = [
    "AudioTaps",
    "CallFunction",
    "FakeRealtimeServer",
    "FakeSession",
    "ReceivedEvent",
    "Reply",
    "Responder",
    "ResponseContext",
    "Say",
    "Script",
    "SentEvent",
    "UseTool",
    "demo_script",
]

BETA_SHAPE_MESSAGE = (
    "The Realtime API beta interface has been retired. Remove the 'OpenAI-Beta: realtime=v1' header "
    "and use the GA interface."
)
MIN_COMMIT_MS = 100
# Events sent many times per response: validated once per session to keep the benchmark cheap.
_SAMPLED_EVENT_SUFFIXES = (".delta",)
# Left out of the human-readable log: one line per 20 ms of audio helps nobody.
_QUIET_EVENT_TYPES = frozenset(
    {
        "input_audio_buffer.append",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "conversation.item.input_audio_transcription.delta",
    }
)
_TOKENS_PER_MINUTE_LIMIT = 40_000
_TEXT_WORDS_PER_DELTA = 4
_TEXT_DELTA_SECONDS = 0.05
_WORDS = re.compile(r"\S+\s*")


class ReceivedEvent(NamedTuple):
    t: float  # time.monotonic()
    type: str
    event: dict[str, Any]


class SentEvent(NamedTuple):
    t: float  # time.monotonic()
    type: str
    event: dict[str, Any]
    injected: bool = False  # sent verbatim by a test through send_raw(), deliberately off-protocol


@dataclass
class AudioTaps:
    """Benchmark hooks: watch caller audio as it arrives, rewrite assistant audio as it leaves, and
    (keep_history=False) keep no per-frame history, so hours of audio don't pile up in memory."""

    on_audio_in: Callable[[bytes], None] | None = None
    on_audio_out: Callable[[bytes], bytes] | None = None
    keep_history: bool = True


class _ChangeNotifier:
    """Wakes waiters whenever something happened; costs nothing while nobody waits."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self, deadline: float) -> None:
        """Return on the next notification or at `deadline` (event-loop time)."""
        if self._event is None:
            self._event = asyncio.Event()
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await event.wait()


@dataclass
class _Item:
    """A conversation item: its wire shape plus the audio the wire shape leaves out."""

    data: dict[str, Any]
    audio: bytearray = field(default_factory=bytearray)
    audio_bytes_per_ms: int = 8

    @property
    def audio_ms(self) -> float:
        return len(self.audio) / self.audio_bytes_per_ms


@dataclass
class _Output:
    """Progress of one output item of a response, so a cancellation can close it correctly."""

    item: _Item
    index: int
    kind: Literal["audio", "text", "function_call"]
    text: str  # full transcript / text / arguments
    sent: str = ""  # the part of `text` already sent in deltas
    part_open: bool = False
    content_complete: bool = False
    closing_events_sent: set[str] = field(default_factory=set)

    def mark(self, name: str) -> bool:
        """True the first time a closing event is about to be sent, False afterwards."""
        if name in self.closing_events_sent:
            return False
        self.closing_events_sent.add(name)
        return True


@dataclass
class _PlannedCall:
    """A function call as the response will stream it: name and final arguments text."""

    name: str
    arguments: str
    call_id: str | None
    delta_s: float  # pause before each arguments delta


class _OutOfTokens(Exception):
    """The response reached its max_output_tokens: it ends `incomplete`."""


@dataclass
class _Response:
    id: str
    conversation: Literal["auto", "none"]
    request: dict[str, Any] | None
    modalities: list[str]
    audio_format: dict[str, Any]
    voice: Any
    max_output_tokens: Any
    metadata: dict[str, Any] | None
    input_usage: dict[str, int]
    token_limit: int | None = None  # max_output_tokens as a number, None for "inf"
    text_only: bool = False  # answers in text although audio was asked for (after a text replay)
    start_delay_s: float = 0.0  # extra time before the first output (a slow summary)
    outputs: list[_Output] = field(default_factory=list)
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None
    cancelling: bool = False
    task: asyncio.Task[None] | None = None
    first_delta_at: float = 0.0
    chunks_paced: int = 0
    audio_ms: float = 0.0


def _merge_session(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Apply a GA session.update: only given fields change; lists and formats are replaced."""
    replaced_whole = {"tools", "tool_choice", "format", "truncation", "tracing", "prompt", "include", "voice"}
    result = dict(base)
    for key, value in update.items():
        current = base.get(key)
        if key == "turn_detection":
            result[key] = _merge_turn_detection(current, value)
        elif isinstance(value, dict) and isinstance(current, dict) and key not in replaced_whole:
            result[key] = _merge_session(current, value)
        else:
            result[key] = copy.deepcopy(value)
        if key == "format" and isinstance(result[key], dict) and result[key].get("type") == "audio/pcm":
            result[key].setdefault("rate", 24000)
    return result


def _merge_turn_detection(
    current: dict[str, Any] | None, update: dict[str, Any] | None
) -> dict[str, Any] | None:
    if update is None:
        return None
    kind = update.get("type")
    if isinstance(current, dict) and current.get("type") == kind:
        base = current
    else:
        base = SEMANTIC_VAD_DEFAULTS if kind == "semantic_vad" else SERVER_VAD_DEFAULTS
    # An explicit null means "default" for the tunables but "off" for idle_timeout_ms.
    given = {k: v for k, v in update.items() if v is not None or k == "idle_timeout_ms"}
    return {**base, **given}


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _parameters(tool: dict[str, Any]) -> Any:
    """A function tool's parameters schema; none given means no arguments."""
    parameters = tool.get("parameters")
    return parameters if parameters is not None else {"type": "object", "properties": {}}


def _ceil_div(value: float, divisor: float) -> int:
    return math.ceil(value / divisor) if value > 0 else 0


def _text_chunks(text: str, words_per_chunk: int) -> list[str]:
    words = _WORDS.findall(text)
    if not words:
        return [text] if text else []
    return ["".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)]


def _resolve_all(says: list[Say]) -> None:
    for say in says:
        say.resolve_audio()


class FakeSession:
    """One accepted connection: its records, its conversation and its protocol state.

    Records for assertions (all in order):
      headers, query, model     the opening handshake (headers are case-insensitive)
      client_events             every client frame that parsed as a JSON object, valid or not
                                (ReceivedEvent(t, type, event)); invalid ones are also in
                                server.validation_failures
      server_events             every frame sent (SentEvent(t, type, event))
      audio_in                  decoded input_audio_buffer.append audio, byte-exact
      audio_out / audio_out_order
                                bytes sent in response.output_audio.delta per item_id, in the
                                session's output format (μ-law for audio/pcmu)
      truncations               accepted conversation.item.truncate events, as received
      responses                 finished responses: the wire object of response.done plus
                                "conversation" ("auto"/"none") and "request" (the response param)
      errors_sent               the `error` objects of every error event
      function_outputs          (call_id, output) of each function_call_output item
      session_config            the merged session, as in the last session.updated
      items                     the conversation now, wire shape
      closed, close_code
    """

    def __init__(self, server: FakeRealtimeServer, ws: ServerConnection, index: int, script: Script) -> None:
        request = ws.request
        assert request is not None  # the handler only runs after the opening handshake
        self._server = server
        self._ws = ws
        self._script = script
        self.index = index
        self.headers: Headers = request.headers
        self.query: dict[str, str] = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
        self.model: str = self.query.get("model", "")
        self.id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.created_at = time.time()

        self.client_events: list[ReceivedEvent] = []
        self.server_events: list[SentEvent] = []
        self.audio_in = bytearray()
        self.audio_out: dict[str, bytearray] = {}
        self.audio_out_order: list[tuple[str, bytes]] = []
        self.truncations: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.errors_sent: list[dict[str, Any]] = []
        self.function_outputs: list[tuple[str, str]] = []
        self.session_config: dict[str, Any] = default_session(self.model, self.id, self.created_at)
        self.closed = False
        self.close_code: int | None = None

        self._notifier = _ChangeNotifier()
        self._conversation: list[_Item] = []
        self._items_by_id: dict[str, _Item] = {}
        self._active: dict[str, _Response] = {}
        self._active_default: _Response | None = None
        self._last_input_tokens = 0
        self._audio_produced = False
        self._validated_sampled_types: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._close_task: asyncio.Task[None] | None = None
        self._closing_code: int | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._idle_timer: asyncio.TimerHandle | None = None
        self._reported: set[str] = set()  # violations already recorded for this session
        self._text_only_left = 0  # responses still answered as text after a text replay

        # Input audio buffer: positions in ms of the session's input stream and byte offsets
        # into audio_in for where the uncommitted buffer starts.
        self._input_kind: AudioKind = audio_kind(_get(self.session_config, "audio", "input", "format"))
        self._input_ms = 0.0
        self._buffer_start_ms = 0.0
        self._buffer_start_byte = 0
        self._pending_user_item_id: str | None = None
        self._speech_start_ms = 0.0
        self._vad_settings: VadSettings | None = None
        self._vad: TurnDetector | None = None
        self._configure_turn_detection()

        self._handlers: dict[str, Callable[[dict[str, Any], str | None], Awaitable[None]]] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.truncate": self._on_item_truncate,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
            "output_audio_buffer.clear": self._on_output_audio_buffer_clear,
        }

    # -----------------------------------------------------------------------------------------
    # Public API for tests
    # -----------------------------------------------------------------------------------------

    @property
    def items(self) -> list[dict[str, Any]]:
        """The conversation as the service holds it now (wire shape, oldest first)."""
        return [copy.deepcopy(item.data) for item in self._conversation]

    @property
    def active_response_id(self) -> str | None:
        """The response currently writing to the default conversation, if any."""
        return self._active_default.id if self._active_default else None

    async def wait_for_client_event(
        self,
        type: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 5,  # noqa: ASYNC109 - part of the fixed test API
        after_index: int = 0,
    ) -> dict[str, Any]:
        """First client event of `type` at or after `after_index` in client_events."""
        return await self._wait_for_event(self.client_events, "client", type, predicate, timeout, after_index)

    async def wait_for_server_event(
        self,
        type: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 5,  # noqa: ASYNC109 - part of the fixed test API
        after_index: int = 0,
    ) -> dict[str, Any]:
        """First server event of `type` at or after `after_index` in server_events."""
        return await self._wait_for_event(self.server_events, "server", type, predicate, timeout, after_index)

    async def send_error(
        self,
        code: str,
        message: str = "The server had an error while processing your request. Sorry about that!",
        type: str = "invalid_request_error",
        event_id: str | None = None,
    ) -> None:
        """Inject an `error` event (event_id: the client event it pretends to answer)."""
        await self._emit(
            "error", error=error_event_body(code, message, error_type=type, client_event_id=event_id)
        )

    async def send_raw(self, text: str) -> None:
        """Inject any frame, e.g. an event type the SDK doesn't know. Not validated."""
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        event = parsed if isinstance(parsed, dict) else {"raw": text}
        self._record_sent(str(event.get("type", "<raw>")), event, validate=False, injected=True)
        await self._ws.send(text)

    async def close(self, code: int = 1001, reason: str = "") -> None:
        """Close from the server side (e.g. to exercise the client's reconnect)."""
        if self.closed or self._closing_code is not None:
            return
        self._closing_code = code
        with contextlib.suppress(ConnectionClosed):
            await self._ws.close(code, reason)
        self._mark_closed()

    # -----------------------------------------------------------------------------------------
    # Connection lifecycle
    # -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._server.log(f"[{self.index}] connected {self.id} model={self.model!r}")
        try:
            beta = self.headers.get("OpenAI-Beta", "")
            if "realtime" in beta.lower():
                self._server.fail(
                    self, f"handshake: beta header 'OpenAI-Beta: {beta}' (the beta API is retired)"
                )
                await self._emit(
                    "error", error=error_event_body("beta_api_shape_disabled", BETA_SHAPE_MESSAGE)
                )
                await self.close(4000, "beta_api_shape_disabled")
                return
            await self._emit("session.created", session=copy.deepcopy(self.session_config))
            if self._server.max_session_seconds is not None:
                self._timers.append(
                    asyncio.get_running_loop().call_later(
                        self._server.max_session_seconds, self._start_max_duration_close
                    )
                )
            async for message in self._ws:
                if isinstance(message, bytes):
                    await self._on_binary(message)
                else:
                    await self._on_text(message)
        except ConnectionClosed:
            pass
        finally:
            self._shutdown()

    def _start_max_duration_close(self) -> None:
        self._close_task = asyncio.create_task(self.close(1001, MAX_DURATION_CLOSE_REASON))

    def _mark_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._closing_code is not None:
            self.close_code = self._closing_code
        else:
            received = self._ws.protocol.close_rcvd
            self.close_code = received.code if received is not None else 1006
        self._server.log(f"[{self.index}] closed code={self.close_code}")
        self._notify()

    def _shutdown(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._cancel_idle_timer()
        for task in list(self._tasks):
            task.cancel()
        self._mark_closed()

    def pending_tasks(self) -> list[asyncio.Task[Any]]:
        """Background tasks (responses, idle timeout, max-duration close) not finished yet."""
        tasks = list(self._tasks)
        if self._close_task is not None:
            tasks.append(self._close_task)
        return [task for task in tasks if not task.done()]

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -----------------------------------------------------------------------------------------
    # Recording, sending, waiting
    # -----------------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._notifier.notify()
        self._server.notify()

    def _record_sent(
        self, event_type: str, event: dict[str, Any], *, validate: bool = True, injected: bool = False
    ) -> None:
        if validate and self._server.validate_outgoing:
            sampled = event_type.endswith(_SAMPLED_EVENT_SUFFIXES)
            if not sampled or event_type not in self._validated_sampled_types:
                self._validated_sampled_types.add(event_type)
                problem = validate_server_event(event)
                if problem is not None:
                    self._server.fail(self, f"the fake sent an invalid {event_type}: {problem}")
        if self._server.taps.keep_history or not event_type.endswith(_SAMPLED_EVENT_SUFFIXES):
            self.server_events.append(SentEvent(time.monotonic(), event_type, event, injected))
        if event_type == "error":
            self.errors_sent.append(event["error"])
        if event_type not in _QUIET_EVENT_TYPES:
            self._server.log(f"[{self.index}] -> {_summarize(event_type, event)}")
        self._notify()

    async def _emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        event = {"type": event_type, "event_id": new_id("event"), **fields}
        # Record before awaiting the send: the frame is written synchronously, so
        # server_events stays in wire order even with responses streaming concurrently.
        self._record_sent(event_type, event)
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
        received: str = "",
    ) -> None:
        """Send an `error`; `invalid` also records a validation failure."""
        if invalid:
            self._server.fail(self, f"{received or 'client event'}: {code}: {message}")
        await self._emit(
            "error", error=error_event_body(code, message, param=param, client_event_id=client_event_id)
        )

    async def _wait_for_event(
        self,
        events: list[ReceivedEvent] | list[SentEvent],
        side: str,
        event_type: str,
        predicate: Callable[[dict[str, Any]], bool] | None,
        timeout: float,  # noqa: ASYNC109 - forwarded from the public wait helpers
        after_index: int,
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        index = after_index
        while True:
            while index < len(events):
                record = events[index]
                index += 1
                if record.type == event_type and (predicate is None or predicate(record.event)):
                    return record.event
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closed:
                seen = [record.type for record in events[after_index:]]
                tail = ", ".join(seen[-25:]) or "none"
                state = "session closed" if self.closed else f"timed out after {timeout}s"
                raise TimeoutError(
                    f"session {self.index}: no {side} event {event_type!r}"
                    f"{' matching the predicate' if predicate else ''} ({state}); "
                    f"{len(seen)} {side} events since index {after_index}, last: {tail}; "
                    f"validation failures: {self._server.validation_failures or 'none'}"
                )
            await self._notifier.wait(deadline)

    # -----------------------------------------------------------------------------------------
    # Client frames
    # -----------------------------------------------------------------------------------------

    async def _on_binary(self, message: bytes) -> None:
        await self._error(
            "invalid_value",
            "Binary frames are not supported. Send JSON text frames.",
            invalid=True,
            received="binary frame",
        )

    async def _on_text(self, message: str) -> None:
        received_at = time.monotonic()
        try:
            data = json.loads(message)
        except ValueError as exc:
            await self._error(
                "invalid_json",
                f"We could not parse the JSON body of your request. ({exc})",
                invalid=True,
                received=f"malformed JSON {message[:120]!r}",
            )
            return
        if not isinstance(data, dict):
            await self._error(
                "invalid_type",
                "Invalid type for event: expected an object.",
                invalid=True,
                received=f"non-object JSON {message[:120]!r}",
            )
            return
        event_type = data.get("type")
        label = event_type if isinstance(event_type, str) else "<missing type>"
        if self._server.taps.keep_history or label != "input_audio_buffer.append":
            self.client_events.append(ReceivedEvent(received_at, label, data))
        if label not in _QUIET_EVENT_TYPES:
            self._server.log(f"[{self.index}] <- {label}")
        self._notify()

        client_event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        problem = validate_client_event(data)
        if problem is not None:
            await self._error(
                problem.code,
                problem.message,
                param=problem.param,
                client_event_id=client_event_id,
                invalid=True,
                received=f"{label} {message[:300]}",
            )
            return
        try:
            await self._handlers[label](data, client_event_id)
        except ConnectionClosed:
            raise
        except Exception as exc:
            self._server.fail(self, f"fake internal error on {label}: {exc!r}\n{traceback.format_exc()}")
            await self._emit(
                "error",
                error=error_event_body(
                    None,
                    f"Internal error in the fake: {exc!r}",
                    error_type="server_error",
                    client_event_id=client_event_id,
                ),
            )

    # -- session ------------------------------------------------------------------------------

    async def _on_session_update(self, data: dict[str, Any], client_event_id: str | None) -> None:
        if self.index in self._server.fail_during_setup:
            # An internal failure as the session is being configured (the service's 1011).
            await self.close(code=1011, reason="Internal server error.")
            return
        update: dict[str, Any] = data["session"]
        raw = f"session.update {json.dumps(update)[:300]}"
        if update.get("type") != "realtime":
            await self._error(
                "invalid_value",
                f"Cannot change the session type from 'realtime' to '{update.get('type')}'.",
                param="session.type",
                client_event_id=client_event_id,
                invalid=True,
                received=raw,
            )
            return
        modalities = update.get("output_modalities")
        if modalities is not None and len(set(modalities)) != 1:
            await self._error(
                "invalid_value",
                f"Invalid 'session.output_modalities': {modalities}. "
                "Supported values are: ['audio'] and ['text'].",
                param="session.output_modalities",
                client_event_id=client_event_id,
                invalid=True,
                received=raw,
            )
            return
        model = update.get("model")
        if model is not None and model != self.model:
            await self._error(
                "invalid_value",
                f"Cannot update a session's model from '{self.model}' to '{model}'. "
                "Choose the model in the connection URL.",
                param="session.model",
                client_event_id=client_event_id,
                invalid=True,
                received=raw,
            )
            return
        voice = _get(update, "audio", "output", "voice")
        if (
            voice is not None
            and voice != _get(self.session_config, "audio", "output", "voice")
            and self._audio_produced
        ):
            await self._error(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                param="session.audio.output.voice",
                client_event_id=client_event_id,
            )
            return
        self.session_config = _merge_session(self.session_config, update)
        self._configure_turn_detection()
        self._check_tools(update.get("tools"))
        await self._emit("session.updated", session=copy.deepcopy(self.session_config))

    def _report(self, text: str) -> None:
        """Record a violation once per session."""
        if text not in self._reported:
            self._reported.add(text)
            self._server.fail(self, text)

    def _check_tools(self, tools: Any) -> None:
        """Function tools reach the model as declared ("Parameters of the function in JSON Schema",
        SDK RealtimeFunctionTool.parameters): a schema no model can satisfy is a defect even before
        anything calls it. The service itself accepts it silently; this is the fake's judgement."""
        if not isinstance(tools, list):
            return
        for tool in tools:
            if isinstance(tool, dict) and tool.get("type", "function") == "function":
                for problem in schema_problems(str(tool.get("name")), _parameters(tool)):
                    self._report(problem)

    def _configure_turn_detection(self) -> None:
        """(Re)build the VAD when the input format or turn detection settings changed."""
        kind = audio_kind(_get(self.session_config, "audio", "input", "format"))
        settings = VadSettings.from_turn_detection(
            _get(self.session_config, "audio", "input", "turn_detection")
        )
        if (
            kind == self._input_kind
            and settings == self._vad_settings
            and (self._vad is not None) == (settings is not None)
        ):
            return
        self._input_kind = kind
        self._vad_settings = settings
        # A turn in progress is dropped: its start was measured with the old settings.
        self._pending_user_item_id = None
        self._vad = TurnDetector(settings, kind, self._input_ms) if settings is not None else None
        if settings is None or settings.idle_timeout_ms is None:
            self._cancel_idle_timer()

    # -- input audio buffer -------------------------------------------------------------------

    def _ms_to_byte(self, ms: float) -> int:
        offset = self._buffer_start_byte + round(
            (ms - self._buffer_start_ms) * bytes_per_ms(self._input_kind)
        )
        return max(0, min(len(self.audio_in), offset))

    async def _on_append(self, data: dict[str, Any], client_event_id: str | None) -> None:
        try:
            chunk = base64.b64decode(data["audio"], validate=True)
        except (binascii.Error, ValueError):
            await self._error(
                "invalid_value",
                "Invalid 'audio'. Expected base64-encoded audio bytes.",
                param="audio",
                client_event_id=client_event_id,
                invalid=True,
                received=f"input_audio_buffer.append audio={data['audio'][:60]!r}",
            )
            return
        taps = self._server.taps
        if taps.keep_history:
            self.audio_in += chunk
        if taps.on_audio_in is not None:
            taps.on_audio_in(chunk)
        self._input_ms += len(chunk) / bytes_per_ms(self._input_kind)
        if self._vad is None:
            return
        for vad_event in self._vad.feed(chunk, floor_ms=self._buffer_start_ms):
            if vad_event.kind == "speech_started":
                await self._on_speech_started(vad_event.ms)
            else:
                await self._on_speech_stopped(vad_event.ms)

    async def _on_speech_started(self, audio_start_ms: int) -> None:
        self._cancel_idle_timer()
        item_id = new_id("item")
        self._pending_user_item_id = item_id
        self._speech_start_ms = float(audio_start_ms)
        await self._emit("input_audio_buffer.speech_started", audio_start_ms=audio_start_ms, item_id=item_id)
        active = self._active_default
        if active is not None and self._vad_settings is not None and self._vad_settings.interrupt_response:
            await self._cancel_response(active, "turn_detected")

    async def _on_speech_stopped(self, audio_end_ms: int) -> None:
        item_id = self._pending_user_item_id or new_id("item")
        self._pending_user_item_id = None
        await self._emit("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id)
        await self._commit_user_audio(item_id, self._speech_start_ms, float(audio_end_ms), transcribe=True)
        settings = self._vad_settings
        # With interrupt_response off the model may still be talking; the service then simply
        # doesn't start another response.
        if settings is not None and settings.create_response and self._active_default is None:
            await self._start_response(None, None)

    async def _commit_user_audio(
        self, item_id: str, start_ms: float, end_ms: float, *, transcribe: bool
    ) -> None:
        start_byte = self._ms_to_byte(start_ms)
        end_byte = self._ms_to_byte(end_ms)
        self._buffer_start_ms = end_ms
        self._buffer_start_byte = end_byte
        previous_id = self._conversation[-1].data["id"] if self._conversation else None
        await self._emit("input_audio_buffer.committed", previous_item_id=previous_id, item_id=item_id)
        item = _Item(
            {
                "id": item_id,
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            },
            audio=bytearray(self.audio_in[start_byte:end_byte]),
            audio_bytes_per_ms=bytes_per_ms(self._input_kind),
        )
        self._insert_item(item, len(self._conversation))
        await self._emit(
            "conversation.item.added", previous_item_id=previous_id, item=copy.deepcopy(item.data)
        )
        await self._emit(
            "conversation.item.done", previous_item_id=previous_id, item=copy.deepcopy(item.data)
        )
        transcription = _get(self.session_config, "audio", "input", "transcription")
        if transcribe and isinstance(transcription, dict):
            transcript = self._script.next_transcript()  # taken now: turns keep their order
            delay = self._script.transcript_delay_s
            if delay > 0:
                # "Transcription runs asynchronously with Response creation, so this event may come
                # before or after the Response events." (SDK docstring of
                # conversation.item.input_audio_transcription.completed)
                self._spawn(self._transcribe_later(item, transcription, transcript, delay))
            else:
                await self._transcribe(item, transcription, transcript)

    async def _transcribe_later(
        self, item: _Item, transcription: dict[str, Any], transcript: str, delay: float
    ) -> None:
        await asyncio.sleep(delay)
        if self.closed or item.data["id"] not in self._items_by_id:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._transcribe(item, transcription, transcript)

    async def _transcribe(self, item: _Item, transcription: dict[str, Any], transcript: str) -> None:
        model = str(transcription.get("model") or "whisper-1")
        item_id = item.data["id"]
        # whisper-1 delivers the whole transcript in one delta; the newer models stream it.
        deltas = [transcript] if model == "whisper-1" else _WORDS.findall(transcript)
        for delta in deltas:
            await self._emit(
                "conversation.item.input_audio_transcription.delta",
                item_id=item_id,
                content_index=0,
                delta=delta,
            )
        item.data["content"][0]["transcript"] = transcript
        usage: dict[str, Any]
        if "4o" in model:  # token-billed transcription models
            audio_tokens = _ceil_div(item.audio_ms, 100)
            text_tokens = _ceil_div(len(str(transcription.get("prompt") or "")), 4)
            output_tokens = _ceil_div(len(transcript), 4)
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens + text_tokens,
                "output_tokens": output_tokens,
                "total_tokens": audio_tokens + text_tokens + output_tokens,
                "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
            }
        else:  # billed per minute of audio
            usage = {"type": "duration", "seconds": round(item.audio_ms / 1000, 3)}
        await self._emit(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage=usage,
        )

    async def _on_commit(self, data: dict[str, Any], client_event_id: str | None) -> None:
        buffered_ms = self._input_ms - self._buffer_start_ms
        if buffered_ms < MIN_COMMIT_MS:
            await self._error(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
                client_event_id=client_event_id,
            )
            return
        item_id = self._pending_user_item_id or new_id("item")
        self._pending_user_item_id = None
        if self._vad is not None:
            self._vad.reset()
        await self._commit_user_audio(item_id, self._buffer_start_ms, self._input_ms, transcribe=True)

    async def _on_clear(self, data: dict[str, Any], client_event_id: str | None) -> None:
        self._buffer_start_ms = self._input_ms
        self._buffer_start_byte = len(self.audio_in)
        self._pending_user_item_id = None
        if self._vad is not None:
            self._vad.reset()
        await self._emit("input_audio_buffer.cleared")

    async def _on_output_audio_buffer_clear(self, data: dict[str, Any], client_event_id: str | None) -> None:
        await self._error(
            "invalid_value",
            "output_audio_buffer.clear is only supported for WebRTC and SIP connections.",
            param="type",
            client_event_id=client_event_id,
            invalid=True,
            received="output_audio_buffer.clear",
        )

    # -- idle timeout -------------------------------------------------------------------------

    def _arm_idle_timer(self, response: _Response) -> None:
        settings = self._vad_settings
        if self.closed or settings is None or settings.idle_timeout_ms is None:
            return
        self._cancel_idle_timer()
        # Per the SDK docstring: response.done time plus the audio's playback duration.
        delay = response.audio_ms / 1000 + settings.idle_timeout_ms / 1000
        self._idle_timer = asyncio.get_running_loop().call_later(
            delay, lambda: self._spawn(self._on_idle_timeout())
        )

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    async def _on_idle_timeout(self) -> None:
        self._idle_timer = None
        settings = self._vad_settings
        if (
            self.closed
            or settings is None
            or settings.idle_timeout_ms is None
            or (self._vad is not None and self._vad.in_speech)
            or self._active_default is not None
        ):
            return
        end_ms = self._input_ms
        start_ms = max(self._buffer_start_ms, end_ms - settings.idle_timeout_ms)
        item_id = new_id("item")
        await self._emit(
            "input_audio_buffer.timeout_triggered",
            audio_start_ms=int(start_ms),
            audio_end_ms=int(end_ms),
            item_id=item_id,
        )
        if self._vad is not None:
            self._vad.reset()
        await self._commit_user_audio(item_id, start_ms, end_ms, transcribe=False)
        await self._start_response(None, None)

    # -- conversation items -------------------------------------------------------------------

    def _insert_item(self, item: _Item, position: int) -> None:
        self._conversation.insert(position, item)
        self._items_by_id[item.data["id"]] = item

    def _previous_id(self, item: _Item) -> str | None:
        for index, candidate in enumerate(self._conversation):
            if candidate is item:
                return self._conversation[index - 1].data["id"] if index > 0 else None
        return None

    async def _on_item_create(self, data: dict[str, Any], client_event_id: str | None) -> None:
        raw_item: dict[str, Any] = data["item"]
        item_type = raw_item["type"]
        if item_type == "function_call_output":
            call_id = raw_item["call_id"]
            known = any(
                item.data.get("type") == "function_call" and item.data.get("call_id") == call_id
                for item in self._conversation
            )
            if not known:
                await self._error(
                    "invalid_tool_call_id",
                    f"Tool call ID '{call_id}' not found in conversation.",
                    param="item.call_id",
                    client_event_id=client_event_id,
                )
                return
        item_id = raw_item.get("id") or new_id("item")
        if item_id in self._items_by_id:
            await self._error(
                "invalid_value",
                f"Item with id '{item_id}' already exists.",
                param="item.id",
                client_event_id=client_event_id,
            )
            return
        previous_param = data.get("previous_item_id")
        if previous_param is None:
            position = len(self._conversation)
        elif previous_param == "root":
            position = 0
        elif previous_param in self._items_by_id:
            position = self._conversation.index(self._items_by_id[previous_param]) + 1
        else:
            await self._error(
                "item_not_found",
                f"Previous item with id '{previous_param}' not found.",
                param="previous_item_id",
                client_event_id=client_event_id,
            )
            return

        audio = bytearray()
        audio_bpm = bytes_per_ms(self._input_kind)
        content: list[dict[str, Any]] = []
        for index, part in enumerate(raw_item.get("content") or []):
            part = dict(part)
            if "audio" in part:
                try:
                    audio += base64.b64decode(part.pop("audio") or "", validate=True)
                except (binascii.Error, ValueError):
                    await self._error(
                        "invalid_value",
                        "Invalid 'audio'. Expected base64-encoded audio bytes.",
                        param=f"item.content[{index}].audio",
                        client_event_id=client_event_id,
                        invalid=True,
                        received="conversation.item.create with invalid base64 audio",
                    )
                    return
                if part.get("type") == "output_audio":
                    audio_bpm = bytes_per_ms(
                        audio_kind(_get(self.session_config, "audio", "output", "format"))
                    )
            if part.get("type") in ("input_audio", "output_audio"):
                part.setdefault("transcript", None)
            content.append(part)

        wire: dict[str, Any] = {"id": item_id, "type": item_type, "status": "completed"}
        wire.update(
            {k: copy.deepcopy(v) for k, v in raw_item.items() if k not in ("id", "type", "status", "object")}
        )
        if "content" in raw_item:
            wire["content"] = content
        if item_type == "function_call" and not wire.get("call_id"):
            wire["call_id"] = new_id("call", 16)
        item = _Item(wire, audio=audio, audio_bytes_per_ms=audio_bpm)
        self._insert_item(item, position)
        previous_id = self._previous_id(item)
        await self._emit("conversation.item.added", previous_item_id=previous_id, item=copy.deepcopy(wire))
        await self._emit("conversation.item.done", previous_item_id=previous_id, item=copy.deepcopy(wire))
        if item_type == "function_call_output":
            self.function_outputs.append((raw_item["call_id"], raw_item["output"]))
        if item_type == "message" and raw_item.get("role") == "assistant" and not audio:
            # Assistant text put into the conversation by the client (a replay): the model has
            # answered in text only after that (openai/openai-realtime-api-beta #72).
            self._text_only_left = self._script.text_only_after_replay

    async def _item_or_error(self, item_id: str, client_event_id: str | None) -> _Item | None:
        item = self._items_by_id.get(item_id)
        if item is None:
            await self._error(
                "item_not_found",
                f"Conversation item with id '{item_id}' not found.",
                param="item_id",
                client_event_id=client_event_id,
            )
        return item

    async def _on_item_delete(self, data: dict[str, Any], client_event_id: str | None) -> None:
        item = await self._item_or_error(data["item_id"], client_event_id)
        if item is None:
            return
        self._conversation.remove(item)
        del self._items_by_id[data["item_id"]]
        await self._emit("conversation.item.deleted", item_id=data["item_id"])

    async def _on_item_retrieve(self, data: dict[str, Any], client_event_id: str | None) -> None:
        item = await self._item_or_error(data["item_id"], client_event_id)
        if item is None:
            return
        wire = copy.deepcopy(item.data)
        # Unlike every other event, retrieve includes the (post-processing) audio itself.
        for part in wire.get("content", []):
            if part.get("type") in ("input_audio", "output_audio"):
                part["audio"] = base64.b64encode(bytes(item.audio)).decode()
        await self._emit("conversation.item.retrieved", item=wire)

    async def _on_item_truncate(self, data: dict[str, Any], client_event_id: str | None) -> None:
        item = await self._item_or_error(data["item_id"], client_event_id)
        if item is None:
            return
        content = item.data.get("content") or []
        has_audio = item.data.get("role") == "assistant" and any(
            part.get("type") == "output_audio" for part in content
        )
        if not has_audio:
            await self._error(
                "invalid_value",
                "Only assistant messages with audio can be truncated.",
                param="item_id",
                client_event_id=client_event_id,
            )
            return
        content_index = data["content_index"]
        if content_index != 0 or content[0].get("type") != "output_audio":
            await self._error(
                "invalid_value",
                f"Invalid 'content_index': {content_index}. It must point at the audio content part.",
                param="content_index",
                client_event_id=client_event_id,
            )
            return
        audio_end_ms = data["audio_end_ms"]
        generated_ms = int(item.audio_ms)
        if audio_end_ms < 0:
            await self._error(
                "invalid_value",
                f"Invalid 'audio_end_ms': {audio_end_ms}. Expected a value greater than or equal to 0.",
                param="audio_end_ms",
                client_event_id=client_event_id,
            )
            return
        if audio_end_ms > generated_ms:
            await self._error(
                "invalid_value",
                f"Audio content of {generated_ms}ms is already shorter than {audio_end_ms}ms",
                param="audio_end_ms",
                client_event_id=client_event_id,
            )
            return
        kept_fraction = audio_end_ms / generated_ms if generated_ms else 0.0
        del item.audio[audio_end_ms * item.audio_bytes_per_ms :]
        transcript = content[0].get("transcript") or ""
        # The service drops the transcript of the unheard part; proportional by length here.
        content[0]["transcript"] = transcript[: round(len(transcript) * kept_fraction)]
        self.truncations.append(copy.deepcopy(data))
        await self._emit(
            "conversation.item.truncated",
            item_id=data["item_id"],
            content_index=content_index,
            audio_end_ms=audio_end_ms,
        )

    # -- responses ----------------------------------------------------------------------------

    async def _on_response_create(self, data: dict[str, Any], client_event_id: str | None) -> None:
        await self._start_response(data.get("response"), client_event_id)

    async def _on_response_cancel(self, data: dict[str, Any], client_event_id: str | None) -> None:
        response_id = data.get("response_id")
        if response_id:
            response = self._active.get(response_id)
        else:
            response = self._active_default or next(reversed(self._active.values()), None)
        if response is None or response.cancelling:
            await self._error(
                "response_cancel_not_active",
                "Cancellation failed: no active response found",
                client_event_id=client_event_id,
            )
            return
        await self._cancel_response(response, "client_cancelled")

    def _context_items(self, request: dict[str, Any] | None) -> tuple[list[_Item], str | None]:
        """Items the response sees: the default conversation, or exactly `response.input`."""
        given = (request or {}).get("input")
        if given is None:
            return list(self._conversation), None
        items: list[_Item] = []
        for entry in given:
            if entry.get("type") == "item_reference":
                referenced = self._items_by_id.get(entry["id"])
                if referenced is None:
                    return [], entry["id"]
                items.append(referenced)
            else:
                items.append(_Item({"id": entry.get("id") or new_id("item"), **entry}))
        return items, None

    async def _start_response(self, request: dict[str, Any] | None, client_event_id: str | None) -> None:
        params = request or {}
        conversation = params.get("conversation") or "auto"
        if conversation not in ("auto", "none"):
            await self._error(
                "invalid_value",
                f"Invalid value: '{conversation}'. Supported values are: {quote_list(['auto', 'none'])}.",
                param="response.conversation",
                client_event_id=client_event_id,
                invalid=True,
                received=f"response.create {json.dumps(params)[:300]}",
            )
            return
        if conversation == "auto" and self._active_default is not None:
            await self._error(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{self._active_default.id}. Wait until the response is finished before creating a new one.",
                client_event_id=client_event_id,
            )
            return
        modalities = list(params.get("output_modalities") or self.session_config["output_modalities"])
        if len(set(modalities)) != 1:
            await self._error(
                "invalid_value",
                f"Invalid 'response.output_modalities': {modalities}. "
                "Supported values are: ['audio'] and ['text'].",
                param="response.output_modalities",
                client_event_id=client_event_id,
                invalid=True,
                received=f"response.create {json.dumps(params)[:300]}",
            )
            return
        context_items, missing_reference = self._context_items(request)
        if missing_reference is not None:
            await self._error(
                "item_not_found",
                f"Conversation item with id '{missing_reference}' not found.",
                param="response.input",
                client_event_id=client_event_id,
            )
            return

        # "`instructions` and `tools`. If these are set, they will override the Session's
        # configuration for this Response only." (SDK docstring of ResponseCreateEvent): the request's
        # instructions replace the session's; without `tools`/`tool_choice` the session's apply,
        # out-of-band responses included.
        instructions = (
            str(params["instructions"])
            if params.get("instructions") is not None
            else str(self.session_config.get("instructions") or "")
        )
        tools = params["tools"] if params.get("tools") is not None else self.session_config.get("tools") or []
        tool_choice = (
            params["tool_choice"]
            if params.get("tool_choice") is not None
            else self.session_config.get("tool_choice", "auto")
        )
        if params.get("tools") is not None:
            self._check_tools(params["tools"])
        context = ResponseContext(
            items=[copy.deepcopy(item.data) for item in context_items],
            function_outputs=list(self.function_outputs),
            instructions=instructions,
            session=copy.deepcopy(self.session_config),
            request=copy.deepcopy(request),
            fake_session=self,
            tools=copy.deepcopy(tools),
            tool_choice=copy.deepcopy(tool_choice),
        )
        outputs: list[Say | _PlannedCall] | None = None
        failure: str | None = None
        try:
            if conversation == "auto":
                reply = resolve_responder(self._script.next_responder(), context)
            else:
                reply = self._out_of_band_reply(context)
            outputs = self._plan_outputs(reply, context)
        except Exception as exc:
            failure = f"script responder raised {exc!r}"
            self._server.fail(self, f"{failure}\n{traceback.format_exc()}")

        text_only = False
        if conversation == "auto" and modalities == ["audio"] and self._text_only_left > 0:
            self._text_only_left -= 1
            text_only = True
        output_config = _get(params, "audio", "output") or {}
        session_output = _get(self.session_config, "audio", "output") or {}
        max_output_tokens = params.get("max_output_tokens", self.session_config.get("max_output_tokens"))
        response = _Response(
            id=new_id("resp"),
            conversation=conversation,
            request=copy.deepcopy(request),
            modalities=modalities,
            audio_format=copy.deepcopy(output_config.get("format") or session_output.get("format")),
            voice=output_config.get("voice") or session_output.get("voice"),
            max_output_tokens=max_output_tokens,
            metadata=copy.deepcopy(params.get("metadata")),
            input_usage=self._input_usage(
                context_items, instructions, tools, shares_prefix=request is None or "input" not in request
            ),
            token_limit=max_output_tokens if isinstance(max_output_tokens, int) else None,
            text_only=text_only,
            start_delay_s=self._script.summary_delay_s if conversation == "none" else 0.0,
        )
        self._active[response.id] = response
        if conversation == "auto":
            self._active_default = response
            self._cancel_idle_timer()
        await self._emit("response.created", response=self._response_object(response, None))
        if outputs is None:
            await self._finish_response(
                response,
                "failed",
                {
                    "type": "failed",
                    "error": {"type": "server_error", "code": "fake_script_error", "message": str(failure)},
                },
            )
            return
        response.task = asyncio.create_task(self._run_response(response, outputs))
        self._tasks.add(response.task)
        response.task.add_done_callback(self._tasks.discard)

    def _out_of_band_reply(self, context: ResponseContext) -> Reply:
        """The summary, or a call of `Script.summary_tool` when the response may call it: an
        out-of-band response inherits the session's tools and tool_choice unless the request
        overrides them (SDK docstring of ResponseCreateEvent)."""
        tool = self._script.summary_tool
        if tool is not None and tool.name in context.tool_names:
            return Reply([tool])
        return Reply([Say(self._script.summary_text(context))])

    def _plan_outputs(self, reply: Reply, context: ResponseContext) -> list[Say | _PlannedCall]:
        """Turn the script's outputs into what the model emits; `UseTool` builds its arguments from
        the declared schema of a tool the response sees (the request's `tools` override the session's,
        SDK docstring of response.create), recording every problem on the way."""
        planned: list[Say | _PlannedCall] = []
        declared = {
            str(tool.get("name")): tool
            for tool in context.tools
            if isinstance(tool, dict) and tool.get("type", "function") == "function"
        }
        clock: Clock | None = None
        for output in reply.outputs:
            if isinstance(output, Say):
                planned.append(output)
                continue
            delta_s = output.delta_s if output.delta_s is not None else self._script.argument_delta_s
            if isinstance(output, CallFunction):  # verbatim, bypassing the schema (by design)
                planned.append(_PlannedCall(output.name, output.arguments_text(), output.call_id, delta_s))
                continue
            if context.tool_choice == "none":
                # tool_choice "none": "the model will not call a function and instead generates a
                # message" (SDK docstring of tool_choice, chat/completion_create_params.py).
                self._server.log(f"[{self.index}] tool_choice 'none': no call of {output.name}")
                continue
            tool = declared.get(output.name)
            if tool is None:
                self._report(
                    f"the script has the model call {output.name!r}, but the tools this response sees "
                    f"are {sorted(declared)}: a model only calls a declared tool"
                )
                continue
            clock = clock or Clock.from_instructions(context.instructions)
            arguments, problems = build_arguments(output.name, _parameters(tool), output.intent, clock)
            for problem in problems:
                self._report(problem)
            planned.append(_PlannedCall(output.name, json.dumps(arguments), output.call_id, delta_s))
        return planned

    async def _run_response(self, response: _Response, outputs: list[Say | _PlannedCall]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            audio_mode = response.modalities == ["audio"] and not response.text_only
            unresolved = [o for o in outputs if isinstance(o, Say) and o.audio is None]
            if audio_mode and unresolved:
                # espeak-ng is a subprocess: keep it off the event loop.
                await asyncio.to_thread(_resolve_all, unresolved)
            latency = self._server.first_delta_ms / 1000 + response.start_delay_s - (loop.time() - started)
            if latency > 0:
                await asyncio.sleep(latency)
            response.first_delta_at = loop.time()
            for output in outputs:
                if isinstance(output, _PlannedCall):
                    await self._stream_function_call(response, output)
                elif audio_mode:
                    await self._stream_audio_message(response, output)
                else:
                    await self._stream_text_message(response, output.text)
            await self._finish_response(response, "completed", None)
        except _OutOfTokens:
            # Stopped at max_output_tokens: the open item ends incomplete, and so does the response
            # (RealtimeResponseStatus reason "max_output_tokens").
            with contextlib.suppress(ConnectionClosed):
                for output in response.outputs:
                    await self._close_output(response, output)
                await self._finish_response(
                    response, "incomplete", {"type": "incomplete", "reason": "max_output_tokens"}
                )
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            # Cancelled by _cancel_response (which already sent the closing events) or by the
            # session shutting down.
            raise
        except Exception as exc:
            self._server.fail(
                self, f"fake internal error in {response.id}: {exc!r}\n{traceback.format_exc()}"
            )
            with contextlib.suppress(ConnectionClosed):
                await self._finish_response(
                    response,
                    "failed",
                    {"type": "failed", "error": {"type": "server_error", "code": None, "message": repr(exc)}},
                )

    async def _pace(self, response: _Response) -> None:
        """Sleep until the next delta is due: first_delta_ms after start, then chunk_ms/speed."""
        interval = self._server.chunk_ms / 1000 / self._server.speed
        due = response.first_delta_at + response.chunks_paced * interval
        response.chunks_paced += 1
        delay = due - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _open_output(self, response: _Response, output: _Output) -> None:
        response.outputs.append(output)
        await self._emit(
            "response.output_item.added",
            response_id=response.id,
            output_index=output.index,
            item=copy.deepcopy(output.item.data),
        )
        if response.conversation == "auto":
            previous_id = self._conversation[-1].data["id"] if self._conversation else None
            self._insert_item(output.item, len(self._conversation))
            await self._emit(
                "conversation.item.added", previous_item_id=previous_id, item=copy.deepcopy(output.item.data)
            )

    def _new_assistant_message(
        self, response: _Response, kind: Literal["audio", "text"], text: str
    ) -> _Output:
        item = _Item(
            {
                "id": new_id("item"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
            audio_bytes_per_ms=bytes_per_ms(audio_kind(response.audio_format)),
        )
        return _Output(item=item, index=len(response.outputs), kind=kind, text=text)

    async def _stream_audio_message(self, response: _Response, say: Say) -> None:
        output = self._new_assistant_message(response, "audio", say.text)
        item_id = output.item.data["id"]
        where = {
            "response_id": response.id,
            "item_id": item_id,
            "output_index": output.index,
            "content_index": 0,
        }
        await self._open_output(response, output)
        output.part_open = True
        await self._emit("response.content_part.added", **where, part={"type": "audio", "transcript": ""})

        kind = audio_kind(response.audio_format)
        bpm = bytes_per_ms(kind)
        audio = ulaw_to_format(say.resolve_audio(), kind)
        chunk_bytes = max(bpm, round(self._server.chunk_ms * bpm))
        words = _WORDS.findall(say.text)
        chunk_count = max(1, math.ceil(len(audio) / chunk_bytes))
        words_sent = 0
        for index in range(chunk_count):
            # The transcript runs slightly ahead of the audio, as with the real model.
            upto = math.ceil((index + 1) * len(words) / chunk_count)
            if upto > words_sent:
                delta = "".join(words[words_sent:upto])
                words_sent = upto
                output.sent += delta
                await self._emit(
                    "response.output_audio_transcript.delta",
                    **where,
                    delta=delta,
                    obfuscation=new_id("o", 8)[2:],
                )
            chunk = audio[index * chunk_bytes : (index + 1) * chunk_bytes]
            if not chunk:
                continue
            if response.token_limit is not None:
                self._chars_left(response)
            await self._pace(response)
            taps = self._server.taps
            if taps.on_audio_out is not None:
                chunk = taps.on_audio_out(chunk)
            output.item.audio += chunk
            response.audio_ms += len(chunk) / bpm
            self._audio_produced = True
            if taps.keep_history:
                self.audio_out.setdefault(item_id, bytearray()).extend(chunk)
                self.audio_out_order.append((item_id, chunk))
            await self._emit("response.output_audio.delta", **where, delta=base64.b64encode(chunk).decode())
        output.content_complete = True
        await self._close_output(response, output)

    async def _stream_text_message(self, response: _Response, text: str) -> None:
        output = self._new_assistant_message(response, "text", text)
        where = {
            "response_id": response.id,
            "item_id": output.item.data["id"],
            "output_index": output.index,
            "content_index": 0,
        }
        await self._open_output(response, output)
        output.part_open = True
        await self._emit("response.content_part.added", **where, part={"type": "text", "text": ""})
        for index, piece in enumerate(_text_chunks(text, _TEXT_WORDS_PER_DELTA)):
            if index:
                # ~5 tokens per delta at ~100 tokens/s: text streams faster than speech.
                await asyncio.sleep(_TEXT_DELTA_SECONDS / self._server.speed)
            whole = piece
            if response.token_limit is not None:
                piece = piece[: self._chars_left(response)]
            output.sent += piece
            await self._emit("response.output_text.delta", **where, delta=piece)
            if piece != whole:
                raise _OutOfTokens
        output.content_complete = True
        await self._close_output(response, output)

    def _chars_left(self, response: _Response) -> int:
        """Characters of text the response may still produce (4 per token, as _usage counts);
        raises _OutOfTokens when none are left."""
        assert response.token_limit is not None
        text_tokens, audio_tokens = self._output_token_counts(response)
        left = response.token_limit - text_tokens - audio_tokens
        if left <= 0:
            raise _OutOfTokens
        return left * 4

    async def _stream_function_call(self, response: _Response, call: _PlannedCall) -> None:
        arguments = call.arguments
        call_id = call.call_id or new_id("call", 16)
        item = _Item(
            {
                "id": new_id("item"),
                "type": "function_call",
                "status": "in_progress",
                "name": call.name,
                "call_id": call_id,
                "arguments": "",
            }
        )
        output = _Output(item=item, index=len(response.outputs), kind="function_call", text=arguments)
        await self._open_output(response, output)
        where = {
            "response_id": response.id,
            "item_id": item.data["id"],
            "output_index": output.index,
            "call_id": call_id,
        }
        for start in range(0, len(arguments), 32):
            if call.delta_s > 0:
                # Slow on purpose (Script.argument_delta_s): a barge-in can land mid-arguments.
                await asyncio.sleep(call.delta_s)
            piece = whole = arguments[start : start + 32]
            if response.token_limit is not None:
                piece = piece[: self._chars_left(response)]
            output.sent += piece
            await self._emit("response.function_call_arguments.delta", **where, delta=piece)
            if piece != whole:
                raise _OutOfTokens
        output.content_complete = True
        await self._close_output(response, output)

    async def _close_output(self, response: _Response, output: _Output) -> None:
        """Send whichever closing events of an output item are still missing, in GA order."""
        data = output.item.data
        where = {"response_id": response.id, "item_id": data["id"], "output_index": output.index}
        if output.kind == "audio" and output.part_open:
            data["content"] = [{"type": "output_audio", "transcript": output.sent}]
            if output.mark("audio_done"):
                await self._emit("response.output_audio.done", **where, content_index=0)
            if output.mark("transcript_done"):
                await self._emit(
                    "response.output_audio_transcript.done", **where, content_index=0, transcript=output.sent
                )
            if output.mark("part_done"):
                await self._emit(
                    "response.content_part.done",
                    **where,
                    content_index=0,
                    part={"type": "audio", "transcript": output.sent},
                )
        elif output.kind == "text" and output.part_open:
            data["content"] = [{"type": "output_text", "text": output.sent}]
            if output.mark("text_done"):
                await self._emit("response.output_text.done", **where, content_index=0, text=output.sent)
            if output.mark("part_done"):
                await self._emit(
                    "response.content_part.done",
                    **where,
                    content_index=0,
                    part={"type": "text", "text": output.sent},
                )
        elif output.kind == "function_call":
            data["arguments"] = output.sent
            # Sent for an unfinished call too, with the arguments so far: "Also emitted when a
            # Response is interrupted, incomplete, or cancelled." (SDK docstring of
            # response.function_call_arguments.done); the item then ends "incomplete".
            if output.mark("arguments_done"):
                await self._emit(
                    "response.function_call_arguments.done",
                    **where,
                    call_id=data["call_id"],
                    name=data["name"],
                    arguments=output.sent,
                )
        data["status"] = "completed" if output.content_complete else "incomplete"
        if output.mark("item_done"):
            await self._emit(
                "response.output_item.done",
                response_id=response.id,
                output_index=output.index,
                item=copy.deepcopy(data),
            )
        if response.conversation == "auto" and output.mark("conversation_done"):
            await self._emit(
                "conversation.item.done",
                previous_item_id=self._previous_id(output.item),
                item=copy.deepcopy(data),
            )

    async def _cancel_response(self, response: _Response, reason: str) -> None:
        """Stop a response like the service: close the open output, then response.done."""
        if response.status != "in_progress" or response.cancelling:
            return
        response.cancelling = True
        if response.task is not None:
            # The task is parked at an await and can't send again; its closing events are
            # sent from here so they follow the triggering event directly.
            response.task.cancel()
        for output in response.outputs:
            await self._close_output(response, output)
        await self._finish_response(response, "cancelled", {"type": "cancelled", "reason": reason})

    async def _finish_response(
        self, response: _Response, status: str, status_details: dict[str, Any] | None
    ) -> None:
        if response.status != "in_progress":
            return
        response.status = status
        response.status_details = status_details
        self._active.pop(response.id, None)
        if self._active_default is response:
            self._active_default = None
        usage = self._usage(response)
        if response.conversation == "auto":
            self._last_input_tokens = usage["input_tokens"]
        final = self._response_object(response, usage)
        self.responses.append(
            {
                **copy.deepcopy(final),
                "conversation": response.conversation,
                "request": copy.deepcopy(response.request),
            }
        )
        await self._emit("response.done", response=final)
        # Observed on the GA wire after the response rather than at its start, tokens only.
        await self._emit(
            "rate_limits.updated",
            rate_limits=[
                {
                    "name": "tokens",
                    "limit": _TOKENS_PER_MINUTE_LIMIT,
                    "remaining": max(0, _TOKENS_PER_MINUTE_LIMIT - usage["total_tokens"]),
                    "reset_seconds": round(60 * usage["total_tokens"] / _TOKENS_PER_MINUTE_LIMIT, 3),
                }
            ],
        )
        if response.conversation == "auto":
            self._arm_idle_timer(response)

    def _response_object(self, response: _Response, usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": response.id,
            "status": response.status,
            "status_details": response.status_details,
            "output": [copy.deepcopy(output.item.data) for output in response.outputs] if usage else [],
            "conversation_id": self.conversation_id if response.conversation == "auto" else None,
            "output_modalities": response.modalities,
            "max_output_tokens": response.max_output_tokens,
            "audio": {"output": {"format": response.audio_format, "voice": response.voice}},
            "usage": usage,
            "metadata": response.metadata,
        }

    def _input_usage(
        self, context: list[_Item], instructions: str, tools: Any, *, shares_prefix: bool
    ) -> dict[str, int]:
        """Input tokens of a response: text at ~4 chars/token, audio at the documented rates."""
        text_chars = len(instructions) + (len(json.dumps(tools)) if tools else 0)
        audio_tokens = 0
        for item in context:
            data = item.data
            if data.get("type") == "function_call":
                text_chars += len(str(data.get("name", ""))) + len(str(data.get("arguments", "")))
            elif data.get("type") == "function_call_output":
                text_chars += len(str(data.get("output", "")))
            elif data.get("type") == "message":
                for part in data.get("content") or []:
                    if part.get("type") == "input_audio" and item.audio:
                        audio_tokens += _ceil_div(item.audio_ms, 100)  # user audio: 1 token / 100 ms
                    elif part.get("type") == "output_audio" and item.audio:
                        audio_tokens += _ceil_div(item.audio_ms, 50)  # assistant audio: 1 token / 50 ms
                    else:
                        text_chars += len(str(part.get("text") or part.get("transcript") or ""))
        text_tokens = _ceil_div(text_chars, 4)
        total = text_tokens + audio_tokens
        # Prompt caching: the previous response's input is a cached prefix, in 64-token steps
        # from 1024 tokens on. Text (instructions, tools) comes first in the prefix.
        cached = 0
        if shares_prefix and self._last_input_tokens >= 1024:
            cached = min(self._last_input_tokens // 64 * 64, total // 64 * 64)
        cached_text = min(cached, text_tokens)
        return {
            "text_tokens": text_tokens,
            "audio_tokens": audio_tokens,
            "cached_tokens": cached,
            "cached_text_tokens": cached_text,
            "cached_audio_tokens": cached - cached_text,
        }

    @staticmethod
    def _output_token_counts(response: _Response) -> tuple[int, int]:
        """(text, audio) output tokens so far: text at ~4 chars/token, audio 1 token / 50 ms."""
        output_text = sum(len(output.sent) for output in response.outputs)
        output_text += sum(
            len(str(o.item.data.get("name", ""))) for o in response.outputs if o.kind == "function_call"
        )
        return _ceil_div(output_text, 4), _ceil_div(response.audio_ms, 50)

    def _usage(self, response: _Response) -> dict[str, Any]:
        inputs = response.input_usage
        input_tokens = inputs["text_tokens"] + inputs["audio_tokens"]
        text_tokens, audio_tokens = self._output_token_counts(response)
        output_tokens = text_tokens + audio_tokens
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": inputs["text_tokens"],
                "audio_tokens": inputs["audio_tokens"],
                "image_tokens": 0,
                "cached_tokens": inputs["cached_tokens"],
                "cached_tokens_details": {
                    "text_tokens": inputs["cached_text_tokens"],
                    "audio_tokens": inputs["cached_audio_tokens"],
                    "image_tokens": 0,
                },
            },
            "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
        }


def _summarize(event_type: str, event: dict[str, Any]) -> str:
    """One human-readable line per event for the CLI log."""
    if event_type == "error":
        return f"error {event['error'].get('code')}: {event['error'].get('message')}"
    if event_type in ("response.created", "response.done"):
        response = event["response"]
        return f"{event_type} {response.get('id')} status={response.get('status')}"
    if event_type == "input_audio_buffer.speech_started":
        return f"{event_type} at {event.get('audio_start_ms')} ms"
    if event_type == "input_audio_buffer.speech_stopped":
        return f"{event_type} at {event.get('audio_end_ms')} ms"
    if event_type == "response.output_audio_transcript.done":
        return f"{event_type} {event.get('transcript')!r}"
    if event_type == "conversation.item.input_audio_transcription.completed":
        return f"{event_type} {event.get('transcript')!r}"
    if event_type == "response.function_call_arguments.done":
        return f"{event_type} {event.get('name')}({event.get('arguments')})"
    return event_type


class FakeRealtimeServer:
    """A local stand-in for wss://api.openai.com/v1/realtime, one FakeSession per connection."""

    def __init__(
        self,
        script: Script | Callable[[], Script] | None = None,
        chunk_ms: int = 100,
        speed: float = 8.0,
        first_delta_ms: int = 60,
        max_session_seconds: float | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        validate_outgoing: bool = True,
        log: Callable[[str], None] | None = None,
        taps: AudioTaps | None = None,
    ) -> None:
        """
        script: a Script shared by all connections (a reconnect continues where it was), or a
            factory giving each connection a fresh one. None: a fresh default Script per server.
        chunk_ms / speed / first_delta_ms: audio per delta, pacing factor vs real time, latency
            before the first delta.
        max_session_seconds: close with 1001 like the service's 60-minute cap.
        api_key: if set, any other bearer token gets HTTP 401 (any non-empty one otherwise).
        validate_outgoing: check every sent event against RealtimeServerEvent (deltas: the first
            of each type per session); failures land in validation_failures.
        log: receives one line per session event (the CLI prints them).
        """
        if speed <= 0 or chunk_ms <= 0:
            raise ValueError("speed and chunk_ms must be positive")
        self._script_source: Script | Callable[[], Script] = script if script is not None else Script()
        self.chunk_ms = chunk_ms
        self.speed = speed
        self.first_delta_ms = first_delta_ms
        self.max_session_seconds = max_session_seconds
        # Set to an HTTP status (e.g. 503) to turn new connections away as an overloaded service
        # would; `refused` counts them.
        self.refuse_new_sessions: HTTPStatus | None = None
        self.refused = 0
        # Set to accept new connections' TCP and never answer their WebSocket handshake (a service
        # that hangs); `hung` counts them. They are released (404) when the server stops.
        self.hang_new_sessions = False
        self.hung = 0
        self._release_hung = asyncio.Event()
        # Indices of sessions that fail (close 1011) on their first session.update.
        self.fail_during_setup: set[int] = set()
        self.host = host
        self.requested_port = port
        self.api_key = api_key
        self.validate_outgoing = validate_outgoing
        self.taps = taps or AudioTaps()
        self._log = log
        self.sessions: list[FakeSession] = []
        self.validation_failures: list[str] = []
        self._server: Server | None = None
        self._notifier = _ChangeNotifier()
        self._handlers_running: set[asyncio.Task[Any]] = set()

    async def start(self) -> Self:
        self._server = await serve(
            self._handle,
            self.host,
            self.requested_port,
            process_request=self._process_request,
            # The service accepts up to 15 MiB of audio per append; base64 adds a third.
            max_size=24 * 2**20,
            compression=None,
            ping_interval=None,
        )
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeRealtimeServer is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def base_url(self) -> str:
        """What to give the SDK as base_url / OPENAI_BASE_URL."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/realtime"

    async def stop(self) -> None:
        """Close every connection (1001, like a server going away) and stop listening."""
        if self._server is None:
            return
        self._release_hung.set()
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None
        # Let cancelled response tasks and timers unwind before the caller's loop goes away.
        leftovers = [task for session in self.sessions for task in session.pending_tasks()]
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def wait_for_session(self, index: int, timeout: float = 5) -> FakeSession:  # noqa: ASYNC109
        await self.wait_until(
            lambda: len(self.sessions) > index, timeout, description=f"session #{index} to connect"
        )
        return self.sessions[index]

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5,  # noqa: ASYNC109 - part of the fixed test API
        description: str | None = None,
    ) -> None:
        """Re-check `predicate` whenever any session sends or receives anything."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                what = description or getattr(predicate, "__qualname__", repr(predicate))
                summary = "; ".join(
                    f"session {s.index}: {len(s.client_events)} in / {len(s.server_events)} out, "
                    f"last out {s.server_events[-1].type if s.server_events else 'none'}, "
                    f"{'closed' if s.closed else 'open'}"
                    for s in self.sessions
                )
                raise TimeoutError(
                    f"timed out after {timeout}s waiting for {what}; "
                    f"{len(self.sessions)} session(s): {summary or 'none'}; "
                    f"validation failures: {self.validation_failures or 'none'}"
                )
            await self._notifier.wait(deadline)

    # -- internals used by sessions -----------------------------------------------------------

    def notify(self) -> None:
        self._notifier.notify()

    def fail(self, session: FakeSession | None, text: str) -> None:
        where = f"session {session.index} ({session.id})" if session is not None else "handshake"
        self.validation_failures.append(f"{where}: {text}")
        self.log(f"VALIDATION FAILURE {where}: {text}")
        self.notify()

    def log(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

    def _new_script(self) -> Script:
        source = self._script_source
        return source if isinstance(source, Script) else source()

    def _http_error(
        self, connection: ServerConnection, status: HTTPStatus, message: str, code: str | None
    ) -> Response:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        response = connection.respond(status, json.dumps(body) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | Awaitable[Response | None] | None:
        if self.hang_new_sessions:
            self.hung += 1
            self.notify()
            return self._hang(connection)
        url = urlsplit(request.path)
        if url.path.rstrip("/") != "/v1/realtime":
            self.fail(None, f"unknown path {request.path!r}")
            return self._http_error(connection, HTTPStatus.NOT_FOUND, f"Invalid URL (GET {url.path})", None)
        authorization = request.headers.get("Authorization", "")
        token = authorization[len("Bearer ") :].strip() if authorization.startswith("Bearer ") else ""
        if not token:
            self.fail(None, "no 'Authorization: Bearer ...' header")
            return self._http_error(
                connection,
                HTTPStatus.UNAUTHORIZED,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                None,
            )
        if self.api_key is not None and token != self.api_key:
            self.fail(None, "wrong API key")
            return self._http_error(
                connection, HTTPStatus.UNAUTHORIZED, "Incorrect API key provided.", "invalid_api_key"
            )
        if self.refuse_new_sessions is not None:
            self.refused += 1
            self.notify()
            return self._http_error(
                connection, self.refuse_new_sessions, "The server is overloaded. Please try again.", None
            )
        query = parse_qs(url.query)
        if not query.get("model") and not query.get("call_id"):
            self.fail(None, f"no model in the URL {request.path!r}")
            return self._http_error(
                connection,
                HTTPStatus.BAD_REQUEST,
                "Missing required parameter: 'model'.",
                "missing_required_parameter",
            )
        return None

    async def _hang(self, connection: ServerConnection) -> Response:
        """Never answer the handshake (until the server stops: then a 404 lets the handler end)."""
        await self._release_hung.wait()
        return self._http_error(connection, HTTPStatus.NOT_FOUND, "gone", None)

    async def _handle(self, ws: ServerConnection) -> None:
        session = FakeSession(self, ws, len(self.sessions), self._new_script())
        self.sessions.append(session)
        self.notify()
        await session.run()


# ---------------------------------------------------------------------------------------------
# Command line: a standalone fake for local trials
# ---------------------------------------------------------------------------------------------


async def _serve_until_interrupted(host: str, port: int) -> None:
    server = FakeRealtimeServer(demo_script, host=host, port=port, log=lambda line: print(line, flush=True))
    await server.start()
    print(f"fake OpenAI Realtime (GA) on {server.ws_url}; use OPENAI_BASE_URL={server.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
        print(f"stopped after {len(server.sessions)} session(s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI Realtime (GA) server for local trials.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_interrupted(args.host, args.port))


if __name__ == "__main__":
    main()
