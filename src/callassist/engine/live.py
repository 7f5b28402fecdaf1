"""LiveEngine: OpenAI GPT-Live (full duplex, `/v1/live/sessions`) as a model engine.

`live/socket.py` carries the socket, `live/config.py` the session.start, `live/billing.py` the
cost; this module is the only place that knows the Live event shapes. `Call` does not change: the
Live events are mapped onto the call's vocabulary (engine/events.py), and what GPT-Live does not have
is done the honest way, below.

What maps one to one (Realtime -> Live):
- caller audio: input_audio_buffer.append -> session.input_audio.append (same base64 μ-law, one write);
- assistant audio and words: response.output_audio(_transcript).delta -> session.output_audio.delta
  and session.output_transcript.delta (no item ids: ours, one per stretch of speech);
- tools: a completed function_call of response.done -> a function_call item of a backend
  `response.event` (from its response.output_item.done: lifecycle snapshots carry no output);
  the output goes back as response.item.create (function_call_output), then response.create;
- notes: a system item -> session.instructions.append (developer instructions that stay in the
  conversation and reach later delegations);
- reconnect: the conversation replayed as items -> `input` items of the new session.start (text
  only: a caller turn a lost session never transcribed is a note, not its audio);
- cost: the session's cumulative seconds (session.usage.updated, never summed) at the per-second
  price, plus each backend response's tokens; errors: `error` events by code.

What doesn't (and what this engine does instead):
- no client-created responses: the model speaks when it decides to. A request (`request_response`)
  becomes, after tool outputs, the backend's response.create (the model says its result), else a
  session.commentary.append cue ("context the Live model can communicate"); our request tag is put
  on the model's next stretch of speech. The greeting is such a cue, sent once the session started.
- no responses at all on the wire, and no voice-activity events: `live/turns.py` makes a response
  of each stretch of the model's speech and a caller turn (SpeechStarted, SpeechStopped,
  CallerTranscribed) of the caller's transcript deltas; the caller's first words stop what is
  queued at Twilio, as on Realtime. A backend response is a ResponseFinished without speech
  (`live/backend.py` assembles it from its streamed events).
- no truncate (context is append-only: the model knows it was interrupted), no cancel, no input
  commit: `truncate` and `cancel_response` send nothing and return False; `commit_input` closes
  the caller's open turn locally. An interruption costs at most the audio queued at Twilio
  (media/pacing.py keeps that short).
- no out-of-band response with tool_choice "none": the summary is a backend response.create after a
  developer message asking for it (and not to call tools); a tool call in it is never run.

One reason it is a little over 400 lines: with this docstring, it is the whole translation between
the Live protocol and the call's, both ways (the turns and the backend's stream are in live/).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

from callassist.engine.base import EngineUnavailable, SetupHook
from callassist.engine.events import (
    SUMMARY_REQUEST,
    EngineError,
    EngineEvent,
    EngineLost,
    ErrorKind,
    ResponseFinished,
    ResponseStarted,
    SessionReplaced,
)
from callassist.live.backend import BackendStream
from callassist.live.billing import LiveBilling
from callassist.live.config import session_start
from callassist.live.socket import LiveSocket, LiveUnavailable
from callassist.live.turns import Turns
from callassist.settings import Settings

log = logging.getLogger(__name__)

_TICK = object()  # a deadline may have passed
_Item = bytes | ConnectionClosed | list[EngineEvent] | object  # what the reader and timers queue

_TAG = "callassist_"  # our event_ids: an error's client_event_id gives our request back
# Our request (a cue) that the model hasn't taken up by speaking within this long is answered by an
# empty response, so the call never waits on it (the service never refuses or confirms a cue).
REQUEST_ANSWER_S = 3.0
TICK_S = 0.1  # how often open deadlines are checked while no frame comes
# A backend result said in a speech that went on from before it: the call's request for it comes
# right after that speech is over (its sequencer waits for the floor), within this long.
RESULT_SAID_S = 2.0
# session.instructions.append takes at most 500 tokens (its SDK docstring): at about 4 characters a
# token, and fewer for digits and names, parts of 1,200 characters stay well inside it.
NOTE_CHARS = 1200
# Live sessions were observed to expire after about two hours: move to a fresh one well before.
ROTATE_AFTER_S = 100 * 60
RECOVERABLE_ERRORS = frozenset({"rate_limit_exceeded", "invalid_value", "invalid_request"})
GREETING_CUE = "The call has just connected: greet the caller now, once, as your instructions say."
ANSWER_CUE = "The caller is waiting for your answer to what they said last: answer them now."
SPEAK_CUE = "Say to the caller now what your latest instructions ask for, in your own short words."
SUMMARY_PREFIX = "Do not call any tool for this request. "
DELEGATION_FAILED = (
    "Your backend could not finish the last task because of a technical problem. Apologise briefly "
    "to the caller, say it didn't go through, and offer to take a message instead."
)
_IGNORED = frozenset(
    {
        "session.started",
        "session.updated",
        "session.instructions.appended",
        "session.thinking.appended",
        "session.commentary.appended",
        "session.input_audio.muted",
        "session.input_audio.unmuted",
        "info",
    }
)


class LiveEngine:
    """One call's assistant on GPT-Live. See `engine.base.Engine` for the contract."""

    def __init__(
        self,
        client: AsyncOpenAI,
        settings: Settings,
        *,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
        ends_call: Callable[[str], bool] = lambda name: name == "end_call",
        billing: LiveBilling | None = None,
    ) -> None:
        """ends_call: whether a tool ends the call (its result is not sent on to the backend: the
        goodbye was said with the call to it). billing: where the cost goes (set by the opening,
        once the call's record exists; None: not recorded)."""
        self._settings = settings
        self._log = logger
        self._ends_call = ends_call
        self.billing = billing
        self._setup: SetupHook | None = None
        self._socket = LiveSocket(client, start=self._start_events, logger=logger)
        self.send_audio = self._socket.send_audio  # the hot path: straight to the socket
        self.wait_ready = self._socket.wait_ready
        self.settled = self._socket.settled
        self._count = 0
        self._turns = Turns(self._take_request, self._new_id)
        self._request: str | None = None  # ours, put on the model's next speech
        self._requested_at = 0.0
        self._queue: asyncio.Queue[_Item] | None = None  # events()'s, while it runs
        self._tick: asyncio.TimerHandle | None = None
        self._unanswered_requests: list[str] = []  # to answer empty once the model's speech is over
        self._unanswered: dict[str, set[str]] = {}  # backend response -> call ids without output
        self._outputs_waiting = False  # outputs sent, no response.create after them yet
        # response.create sent for outputs: the backend's answer comes and the model says it; our
        # requests meanwhile wait for that speech instead of cueing another (until a speech begins
        # after the backend's final response: `_result_due`).
        self._continuing = False
        self._result_due = False
        self._result_merged = False  # the result came while the model was speaking
        self._result_answered = False  # ... and a request of ours is answered by that speech
        self._result_said_at: float | None = None  # that speech ended, no request answered by it
        self._noted = False  # a note was added since our last request
        self._tasks: set[asyncio.Task[bool]] = set()
        self._backend = BackendStream()
        self._closed = asyncio.Event()
        self._closing = False
        self._summary_asked = False
        self._muted = False  # the caller's line is closed: what the model says is not played
        self._held = False  # the caller is on hold (a warm transfer): the model is muted and not played
        self._unknown: set[str] = set()

    # Connection ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        try:
            await self._socket.connect()
        except LiveUnavailable as exc:  # LiveRefused too: the fallback engine tells them apart
            raise EngineUnavailable(str(exc)) from exc

    async def configure(self, setup: SetupHook) -> None:
        self._setup = setup
        try:
            await self._socket.start()
        except LiveUnavailable as exc:
            raise EngineUnavailable(str(exc)) from exc
        except (TimeoutError, OSError, ValueError) as exc:
            raise EngineUnavailable(f"GPT-Live did not start the session: {exc!r}") from exc

    async def close(self) -> None:
        """session.close, then the socket: `session.closed` carries the final usage (its docstring),
        which events() records if it is still reading (bounded wait)."""
        self._closing = True
        ready = self._socket.ready
        self._socket.closing()
        if ready and await self._socket.send({"type": "session.close"}):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), 1.0)
        await self._socket.close()
        if self.billing is not None:
            self.billing.flush()  # no session.closed came: what was reported is what is billed

    async def rotate(self, quiet: Callable[[], bool]) -> bool:
        if self._socket.session_age < ROTATE_AFTER_S or not quiet() or self._socket.switching:
            return False
        await self._socket.rotate()
        return True

    @property
    def ready(self) -> bool:
        return self._socket.ready

    @property
    def switching(self) -> bool:
        return self._socket.switching

    @property
    def buffered_frames(self) -> int:
        return self._socket.buffered_frames

    @property
    def session_age(self) -> float:
        return self._socket.session_age

    def take_buffered_audio(self) -> list[str]:
        """Caller frames not sent yet (the session never started), for another engine."""
        return self._socket.take_buffered()

    @property
    def reconnects(self) -> int:
        return self._socket.reconnects

    @property
    def rotations(self) -> int:
        return self._socket.rotations

    async def _start_events(self, replacing: bool) -> tuple[dict[str, Any], Sequence[dict[str, Any]]]:
        """session.start, then (once started) the greeting cue on a first session, or the caller's
        unfinished speech and the answer they are owed on a replacement."""
        if self._setup is None:
            raise LiveUnavailable("configured without a setup")
        setup = await self._setup(replacing)
        self._turns.reset()  # the old session's speech and turn are gone with it
        if self.billing is not None:
            self.billing.flush()  # the old session's time, as far as it was reported
        self._unanswered_requests.clear()  # the call forgets what it asked of the old session
        self._unanswered.clear()
        self._backend.clear()
        self._outputs_waiting = self._continuing = self._result_due = self._result_merged = False
        self._result_answered, self._result_said_at = False, None
        after: list[dict[str, Any]] = []
        if setup.greeting is not None:
            self._want(setup.greeting)
            after.append(_cue(GREETING_CUE))
        else:
            if setup.unfinished_speech:
                audio = base64.b64encode(setup.unfinished_speech).decode("ascii")
                after.append({"type": "session.input_audio.append", "audio": audio})
            if setup.answer is not None:
                self._want(setup.answer)
                after.append(_cue(ANSWER_CUE))
        return dict(session_start(self._settings, setup, replacing=replacing)), after

    # Requests -------------------------------------------------------------------------------------

    async def commit_input(self) -> bool:
        """No input buffer to commit: the caller's open turn is closed at once (events() reports it
        with its words so far at its next deadline, well within the call's wait for transcripts)."""
        if self._turns.caller is None:
            return False
        self._turns.caller.last_at = 0.0
        self._wake_up()
        return True

    async def request_response(self, request: str, *, audio_only: bool = False) -> bool:
        said_at, self._result_said_at = self._result_said_at, None
        noted, self._noted = self._noted, False
        if noted:
            # Notes came with it (a goodbye, a warning, a transfer that failed): the model must act
            # on them, whatever else it is saying.
            self._want(request)
            if self._outputs_waiting:
                await self._continue_backend()
            return await self._socket.send(_cue(SPEAK_CUE))
        if said_at is not None and time.monotonic() - said_at < RESULT_SAID_S:
            # The backend's result was said in the speech that just ended (the call asks after the
            # outputs once that speech is over): that speech was the answer.
            self._inject(*self._answered_now(request))
            return True
        if self._continuing:
            # The backend is answering the outputs and the model says its result: nothing more to
            # ask for. The speech that says it answers this request: the next one, or, if the
            # result came while the model was speaking (it goes on with it), that one, once over.
            if self._result_due and (self._turns.speech is not None or self._result_merged):
                self._result_answered = True
                out: list[EngineEvent] = []
                self._answered_without_speech(request, out)
                if out:
                    self._inject(*out)
            else:
                self._want(request)
            return True
        self._want(request)
        if self._outputs_waiting:
            return await self._continue_backend()
        return await self._socket.send(_cue(SPEAK_CUE))

    def _want(self, request: str) -> None:
        self._request, self._requested_at = request, time.monotonic()
        self._wake_up()  # its deadline counts from now

    async def request_summary(self, instructions: str) -> bool:
        # At the end of a call (the caller's line is closed): the next backend response is the
        # summary, whether it answers our response.create or continues a delegation left waiting
        # (end_call's: response.create does either, its docstring); nothing said is played.
        self._summary_asked = self._muted = True
        item = {"type": "message", "role": "developer", "content": SUMMARY_PREFIX + instructions}
        if not await self._socket.send({"type": "response.item.create", "item": item}):
            return False
        return await self._socket.send({"type": "response.create", "event_id": _TAG + SUMMARY_REQUEST})

    async def cancel_response(self, response_id: str | None = None) -> bool:
        """Nothing cancels the model's speech (full duplex, server-driven). But the call asks this,
        without a response id, when it ends: a stretch of speech still open then (its end is only
        known UTTERANCE_GAP_S after its last audio) is finished now, so what the caller heard of it
        is recorded."""
        if response_id is None and self._turns.speech is not None and self._queue is not None:
            out: list[EngineEvent] = []
            self._turns.speech_over("cancelled", out)
            self._queue.put_nowait(out)
        return False

    async def truncate(self, item_id: str, heard_ms: int) -> bool:
        return False  # append-only context: the model heard the caller interrupt it

    async def hold(self, on: bool) -> None:
        """Full duplex, the model could speak over the hold audio: its input is muted
        (`session.input_audio.mute`: "sends silence to the model", acknowledged by
        `session.input_audio.muted`) and what it says meanwhile is not played."""
        self._held = on
        await self._socket.send({"type": "session.input_audio.mute" if on else "session.input_audio.unmute"})

    async def add_note(self, text: str) -> bool:
        """Developer instructions, in parts within the service's 500-token limit (a tool result for
        a replaced session can be longer): all sent, or False."""
        for part in note_parts(text):
            event = {"type": "session.instructions.append", "content": part, "delegation_id": None}
            if not await self._socket.send(event):
                return False
        self._noted = True
        return True

    async def add_tool_output(self, call_id: str, output_json: str) -> bool:
        item = {"type": "function_call_output", "call_id": call_id, "output": output_json}
        if not await self._socket.send({"type": "response.item.create", "item": item}):
            return False
        self._outputs_waiting = True
        for response_id, calls in list(self._unanswered.items()):
            if call_id not in calls:
                continue
            calls.discard(call_id)
            if not calls:
                del self._unanswered[response_id]
                # Every call of that backend response is answered: let it carry on now, whatever
                # the call's sequencer decides about speaking (the backend waits for this).
                await self._continue_backend()
        return True

    async def _continue_backend(self) -> bool:
        self._outputs_waiting = False
        self._continuing = await self._socket.send({"type": "response.create", "event_id": _TAG + "outputs"})
        return self._continuing

    # Events ---------------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[EngineEvent]:
        """One reader task puts the socket's frames in a queue, in order; the deadlines of an open
        speech, caller turn or request are checked on a tick (TICK_S, only while one is open) and on
        every frame. A drop reaches this loop after everything before it was handled: only then is
        the session replaced (its setup reads the call's state as of the drop), then read again."""
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._queue = queue
        reader = self._read(queue)
        out: list[EngineEvent] = []
        try:
            while True:
                item = await queue.get()
                kind = type(item)
                if kind is bytes:
                    if self._turns.open or self._request is not None:
                        self._expire(time.monotonic(), out)  # a frame after a gap starts anew
                    self._translate(item, out)  # type: ignore[arg-type]
                elif item is _TICK:
                    self._expire(time.monotonic(), out)
                elif kind is list:
                    out += item  # type: ignore[arg-type]
                else:
                    assert isinstance(item, ConnectionClosed)
                    restarted = await self._socket.replace(item)
                    if restarted is None:
                        return
                    out.append(SessionReplaced(restarted.downtime_s, restarted.close_code, restarted.rotated))
                    reader = self._read(queue)
                if self._result_merged and self._turns.speech is None:
                    # The speech that said the backend's result is over: that result is said, and
                    # the request the call makes now for it is answered by that speech.
                    if not self._result_answered:
                        self._result_said_at = time.monotonic()
                    self._continuing = self._result_due = self._result_merged = False
                    self._result_answered = False
                if self._unanswered_requests:
                    self._answer_requests(out)
                if self._tick is None and self._next_deadline() is not None:
                    self._tick = asyncio.get_running_loop().call_later(TICK_S, self._on_tick)
                for event in out:
                    yield event
                out.clear()
        except LiveUnavailable as exc:
            yield EngineLost(str(exc))
        finally:
            reader.cancel()
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None
            self._queue = None

    def _read(self, queue: asyncio.Queue[_Item]) -> asyncio.Task[None]:
        async def read() -> None:
            recv, put = self._socket.recv, queue.put_nowait
            while True:
                try:
                    put(await recv())
                except ConnectionClosed as exc:
                    put(exc)
                    return

        return asyncio.create_task(read(), name="live-reader")

    def _on_tick(self) -> None:
        self._tick = None
        if self._queue is not None:
            self._queue.put_nowait(_TICK)

    def _inject(self, *events: EngineEvent) -> None:
        """Events of our own making, reported by events() in turn."""
        if self._queue is not None:
            self._queue.put_nowait(list(events))

    def _wake_up(self) -> None:
        """A deadline moved: check it now rather than at the next tick."""
        if self._queue is not None:
            self._queue.put_nowait(_TICK)

    def _next_deadline(self) -> float | None:
        """Seconds until an open speech or caller turn is taken as over, or our request as not
        taken up, if any of them is open."""
        now = time.monotonic()
        deadline = self._turns.deadline(now)
        if self._request is not None:
            asked = self._requested_at + REQUEST_ANSWER_S - now
            deadline = asked if deadline is None else min(deadline, asked)
        return None if deadline is None else max(0.0, deadline)

    def _expire(self, now: float, out: list[EngineEvent]) -> None:
        self._turns.expire(now, out)
        if self._request is not None and now - self._requested_at >= REQUEST_ANSWER_S:
            self._log.info("GPT-Live did not speak after request %s", self._request)
            self._answered_without_speech(self._request, out)

    def _answered_without_speech(self, request: str, out: list[EngineEvent]) -> None:
        """Our request, answered by an empty response: the model said nothing new (it was saying it
        already, or chose not to), so the call's sequencer doesn't wait for it. While the model is
        speaking, only once that speech is over: one response at a time, as the sequencer knows."""
        if self._request == request:
            self._request = None
        self._unanswered_requests.append(request)
        self._answer_requests(out)

    def _answered_now(self, request: str) -> list[EngineEvent]:
        if self._request == request:
            self._request = None
        response_id = self._new_id("live_none")
        return [ResponseStarted(response_id, request), ResponseFinished(response_id, request, "completed")]

    def _answer_requests(self, out: list[EngineEvent]) -> None:
        if self._turns.speech is not None:
            return
        for request in self._unanswered_requests:
            out += self._answered_now(request)
        self._unanswered_requests.clear()

    def _new_id(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def _translate(self, raw: bytes, out: list[EngineEvent]) -> None:
        try:
            data = orjson.loads(raw)
            kind = data["type"]
            if (self._muted or self._held) and kind in (
                "session.output_audio.delta",
                "session.output_transcript.delta",
            ):
                return
            if kind == "session.output_audio.delta":
                self._turns.audio(data["delta"], out)
                return
            if kind == "session.output_transcript.delta":
                self._turns.assistant_words(data["delta"], out)
            elif kind == "session.input_transcript.delta":
                self._turns.caller_words(data, out)
            elif kind == "response.event":
                self._backend_event(data, out)
            elif kind == "session.usage.updated":
                if self.billing is not None and self._socket.session_id:
                    self.billing.session_seconds(self._socket.session_id, float(data["usage"]["seconds"]))
            elif kind == "session.closed":
                self._session_closed(data)
            elif kind == "session.delegation.created":
                self._log.info("GPT-Live delegated a task to the backend")
            elif kind == "error":
                out.append(self._error(data.get("error") or {}))
            elif kind not in _IGNORED and kind not in self._unknown:
                self._unknown.add(kind)
                self._log.info("ignoring GPT-Live event type %r", kind)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # orjson's errors too
            self._log.warning("ignored an unreadable GPT-Live event: %s", type(exc).__name__)

    def _take_request(self) -> str | None:
        """The model begins to speak: it answers our request, if one waits."""
        request, self._request = self._request, None
        if self._result_due:  # the backend's answer is being said
            self._continuing = self._result_due = self._result_merged = self._result_answered = False
        self._result_said_at = None
        return request

    # The backend (delegations and our requests) ---------------------------------------------------

    def _backend_event(self, data: dict[str, Any], out: list[EngineEvent]) -> None:
        response = self._backend.feed(data)
        if response is None:
            return
        client_event = response.client_event_id or ""
        request = client_event[len(_TAG) :] if client_event.startswith(_TAG) else None
        if request == "outputs":
            request = None
        if self._summary_asked and request is None:
            request, self._summary_asked = SUMMARY_REQUEST, False
        purpose = SUMMARY_REQUEST if request == SUMMARY_REQUEST else "delegation"
        status = response.status
        if self.billing is not None and response.usage is not None:
            self.billing.backend_usage(response.response_id, purpose, status, response.usage)
        if status == "failed" and request != SUMMARY_REQUEST:
            self._continuing = self._result_due = self._result_merged = False
            apology = asyncio.ensure_future(self._socket.send(_cue(DELEGATION_FAILED)))  # never silence
            self._tasks.add(apology)
            apology.add_done_callback(self._tasks.discard)
        completed = [call for call in response.calls if call.completed]
        if completed and status == "completed":
            if not any(self._ends_call(call.name) for call in completed):
                self._unanswered[response.response_id] = {call.call_id for call in completed}
        elif not response.calls and self._continuing:
            self._result_due = True  # its text is the result the model says next
            if self._turns.speech is not None:
                # It says it in the speech under way: that speech answers what we asked meanwhile.
                self._result_merged = True
                if self._request is not None:
                    self._result_answered = True
                    self._answered_without_speech(self._request, out)
        spoken = tuple(response.texts) if request == SUMMARY_REQUEST else ()
        calls = tuple(response.calls)
        finished = ResponseFinished(
            response.response_id, request, status, spoken=spoken, tool_calls=calls, failure=response.failure
        )
        out.append(finished)

    def _session_closed(self, data: dict[str, Any]) -> None:
        usage = data.get("usage") or {}
        if self.billing is not None and self._socket.session_id and "seconds" in usage:
            self.billing.session_seconds(self._socket.session_id, float(usage["seconds"]))
        if self.billing is not None:
            self.billing.flush()
        reason = data.get("reason")
        if not self._closing:
            self._log.warning("GPT-Live closed the session (%s)", reason)
        self._closed.set()

    def _error(self, error: dict[str, Any]) -> EngineError:
        code = str(error.get("code") or error.get("type") or "unknown")
        message = str(error.get("message") or "")
        event_id = str(error.get("client_event_id") or "")
        request = event_id[len(_TAG) :] if event_id.startswith(_TAG) else None
        level = logging.INFO if code in RECOVERABLE_ERRORS else logging.WARNING
        self._log.log(level, "GPT-Live error %s: %s", code, message)
        if request == "outputs":
            self._continuing = False
            request = None
        kind = ErrorKind.refused if request else ErrorKind.recoverable
        return EngineError(kind, code, message, request)


def note_parts(text: str, limit: int = NOTE_CHARS) -> list[str]:
    """`text` cut at spaces into parts of at most `limit` characters (a word longer than that, cut)."""
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = rest.rfind(" ", 0, limit + 1)
        cut = cut if cut > 0 else limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return [*parts, rest] if rest or not parts else parts


def _cue(text: str) -> dict[str, Any]:
    """Speakable context for the model (SDK: "Provide context the Live model can communicate to the
    user"); `delegation_id` is "Required, nullable"."""
    return {"type": "session.commentary.append", "content": text, "delegation_id": None}
