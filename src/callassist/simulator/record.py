"""What a simulated call records: who calls whom, everything observed as timestamped events, and the
figures tests and reports read (audio both ways, latencies, violations, warnings, errors).

`CallRecord` is the first layer of `SimulatedCall`: `stream.MediaStream` adds Twilio's side of the media
stream on top of it, and `call.SimulatedCall` the caller's actions and the call's lifecycle. Waiting on
events lives here too: `wait_for()` answers at once from the events so far, and fails at once when the
stream or the call that could still produce the event is over. All times are `time.monotonic()` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from callassist.simulator.ids import new_sid

if TYPE_CHECKING:
    from callassist.simulator import twiml as tw

# Events that only a live media stream produces: waiting for one after the stream closed is futile.
STREAM_KINDS = frozenset(
    {
        "stream_open",
        "start_sent",
        "media_in",
        "mark_in",
        "mark_echo",
        "clear_in",
        "speech_start",
        "speech_end",
        "utterance_end",
        "dtmf_sent",
        "stop_sent",
        "violation",
    }
)
ACTIVITY_KINDS = frozenset({"media_in", "clear_in", "stream_closed", "call_ended"})


@dataclass(frozen=True, slots=True)
class CallEvent:
    t: float  # time.monotonic()
    kind: str
    detail: dict[str, Any]


@dataclass(slots=True)
class _Waiter:
    kinds: frozenset[str]
    after: float
    predicate: Callable[[CallEvent], bool] | None
    future: asyncio.Future[CallEvent]


class CallRecord:
    """One simulated call's identity, observations and events; `SimulatedCall` is the whole call."""

    def __init__(self, *, call_sid: str, account_sid: str, from_number: str, to_number: str) -> None:
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.stream_sid = new_sid("MZ")
        self.from_number = from_number
        self.to_number = to_number
        self.twiml_log: list[str] = []  # every TwiML document received, verbatim
        self.verbs: list[str] = []  # every verb followed, described in one line
        self.stream_url: str | None = None  # the <Stream url> exactly as in the TwiML
        self.previous_stream_sids: list[str] = []  # earlier streams of the call (after a REST redirect)
        self.stream_opened = False
        self.custom_parameters: dict[str, str] = {}
        self.dial_status: str | None = None
        self.audio_sent = bytearray()
        self.audio_received = bytearray()
        self.events: list[CallEvent] = []
        self.violations: list[str] = []  # server protocol mistakes (Twilio would log 31950/31951)
        self.warnings: list[str] = []  # things real Twilio would refuse or treat differently
        self.errors: list[str] = []
        self.greeting_latency_ms: float | None = None
        self.turn_latencies_ms: list[float] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.end_reason: str | None = None
        self.stream_statuses: list[tuple[str, int | None]] = []  # statusCallback events posted, answers

        self._waiters: list[_Waiter] = []
        self._stream_epoch = 0  # index in `events` where the current media stream's events begin
        self._loop = asyncio.get_running_loop()
        self._stream_done = asyncio.Event()
        self._call_done = asyncio.Event()

    @property
    def stream_ended(self) -> bool:
        """The media stream has closed (or the call ended without one)."""
        return self._stream_done.is_set()

    @property
    def ended(self) -> bool:
        """The whole call is over (stream closed and the remaining TwiML followed)."""
        return self._call_done.is_set()

    @property
    def stream_closed_by(self) -> Literal["caller", "server", "redirect"] | None:
        """Who closed the media stream: the caller hanging up, the server, or Twilio itself because
        the call was given new TwiML through the REST API ("redirect"); None while it is open (or if
        it never opened). With several streams on the call (a REST redirect back to a
        `<Connect><Stream>`), the current one."""
        for event in self.events[self._stream_epoch :]:
            if event.kind == "stream_closed":
                by = event.detail["by"]
                return "caller" if by == "caller" else "redirect" if by == "redirect" else "server"
        return None

    def count(self, kind: str) -> int:
        return sum(1 for event in self.events if event.kind == kind)

    async def wait_for(
        self,
        kind: str,
        *,
        after: float = 0.0,
        predicate: Callable[[CallEvent], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (public API asked for a timeout argument)
    ) -> CallEvent:
        """The first event of `kind` at or after time `after` (matching `predicate`), waiting if need be.

        Raises TimeoutError naming what was awaited, at once if the stream (or call) ended without it.
        """
        for event in self.events:
            if event.kind == kind and event.t >= after and (predicate is None or predicate(event)):
                return event
        what = f"{kind!r} event" + (" matching the predicate" if predicate else "")
        if self._impossible(frozenset({kind})):
            raise TimeoutError(f"{self.call_sid}: no {what}; the {self._gone()} ended first ({self._why()})")
        waiter = self._add_waiter(frozenset({kind}), after, predicate)
        found = await self._await_waiter(waiter, timeout)
        if found is None:
            raise TimeoutError(f"{self.call_sid}: no {what} within {timeout:g}s")
        return found

    # ----- events -------------------------------------------------------------------------------------------

    def _emit(self, kind: str, *, t: float | None = None, **detail: Any) -> CallEvent:
        event = CallEvent(time.monotonic() if t is None else t, kind, detail)
        self.events.append(event)
        if self._waiters:
            for waiter in list(self._waiters):
                if kind not in waiter.kinds or event.t < waiter.after:
                    continue
                try:
                    matched = waiter.predicate is None or waiter.predicate(event)
                except Exception as exc:  # a test's predicate bug must surface in the test, not here
                    self._waiters.remove(waiter)
                    if not waiter.future.done():
                        waiter.future.set_exception(exc)
                    continue
                if matched:
                    self._waiters.remove(waiter)
                    if not waiter.future.done():
                        waiter.future.set_result(event)
        return event

    def _add_waiter(
        self, kinds: frozenset[str], after: float, predicate: Callable[[CallEvent], bool] | None
    ) -> _Waiter:
        waiter = _Waiter(kinds, after, predicate, self._loop.create_future())
        self._waiters.append(waiter)
        return waiter

    async def _await_waiter(self, waiter: _Waiter, timeout: float) -> CallEvent | None:  # noqa: ASYNC109
        try:
            done, _ = await asyncio.wait({waiter.future}, timeout=timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if not waiter.future.done():
                waiter.future.cancel()
        return waiter.future.result() if done else None

    def _impossible(self, kinds: frozenset[str]) -> bool:
        if self._call_done.is_set():
            return True
        return self._stream_done.is_set() and kinds <= STREAM_KINDS

    def _gone(self) -> str:
        return "call" if self._call_done.is_set() else "media stream"

    def _why(self) -> str:
        if self.close_code is not None:
            return f"close code {self.close_code}"
        return self.end_reason or "stream closed"

    def _release_waiters(self, kinds: Iterable[str] | None) -> None:
        """Fail waiters that can no longer be satisfied (all of them if `kinds` is None)."""
        for waiter in list(self._waiters):
            if kinds is None or waiter.kinds <= frozenset(kinds):
                self._waiters.remove(waiter)
                if not waiter.future.done():
                    waiter.future.set_exception(
                        TimeoutError(f"{self.call_sid}: the {self._gone()} ended ({self._why()})")
                    )

    def _record_verb(self, verb: tw.Verb) -> None:
        self.verbs.append(verb.describe())
        self._emit("verb", verb=type(verb).__name__, description=verb.describe())

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        self._emit("warning", message=message)

    def _violation(self, message: str, now: float) -> None:
        self.violations.append(message)
        self._emit("violation", t=now, message=message)
