"""A call placed through the REST API (`POST .../Calls.json`), as the simulated Twilio plays it: in
callassist, the owner's leg of a warm transfer, answered (or not) by a simulated owner (`Owner`).

What Twilio documents, and the simulator does:
- the call is created `queued`, then rings the `To` number; the phone answers, rings out
  (`no-answer`), or is `busy` (https://www.twilio.com/docs/voice/api/call-resource#call-status-values).
  Ringing is time-compressed: `Timing.ring_s`, not `Timeout` (+ the 5 s buffer Twilio adds);
- once answered, the TwiML (`Twiml`, or fetched from `Url` with `Method`) runs on the call; its
  webhooks are signed like any (https://www.twilio.com/docs/usage/webhooks/webhooks-security) and
  carry the call's own parameters: CallSid, AccountSid, From, To, Caller, Called, CallStatus
  `in-progress`, Direction `outbound-api`, ApiVersion
  (https://www.twilio.com/docs/voice/twiml#request-parameters);
- `<Gather>` is the owner's (`owner.owner_gather`, shared with the screened `<Number url>` leg);
  `<Dial><Conference>` joins the account's room (`conference.py`); `<Hangup>` ends the call; the
  TwiML running out ends it too;
- `StatusCallback` gets one request per `StatusCallbackEvent` asked for (initiated, ringing,
  answered, completed; `completed` only when none is named), with the voice request parameters plus
  CallStatus (`initiated`, `ringing`, `in-progress` for answered, then the final status: completed,
  busy, no-answer, canceled, failed), CallbackSource `call-progress-events`, Timestamp (RFC 2822),
  SequenceNumber (from 0) and, on the final event only, CallDuration
  (https://www.twilio.com/docs/voice/api/call-resource#statuscallbackevent,
  https://www.twilio.com/docs/voice/twiml/client#statuscallback). Twilio doesn't promise their
  order of arrival; the simulator sends them one at a time, in order;
- a REST update with Status=canceled hangs up a queued or ringing call (final status `canceled`) and
  leaves one in progress alone; Status=completed hangs it up whatever its state (`canceled` if it was
  not answered yet, as "canceled" is the status of a call hung up while queued or ringing)
  (https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource).

The simulated owner: answers after `ring_s` (unless `no_answer` / `busy`), hears the `<Say>`s, and at a
`<Gather>` presses 1 or 2 after `press_s`, presses nothing (`no_key`, `voicemail`: the Gather times
out at once, time-compressed), or hangs up (`hang_up`). Once bridged in a conference the owner talks
for `talk_s`, then hangs up; alone in a conference that never starts, the owner hangs up after `alone_s`.

One reason it is a little over 400 lines: an outbound leg's life (ring, answer, TwiML, status
callbacks in order, hang-up by REST) is one state machine, read best in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urljoin

from callassist.simulator import twiml as tw
from callassist.simulator.conference import Conferences
from callassist.simulator.errors import SimulatorError
from callassist.simulator.owner import Owner, owner_gather
from callassist.simulator.record import CallRecord

__all__ = ["OutboundCall", "PostedCallback", "Timing"]

MAX_DOCUMENTS = 20  # Gather actions, redirects and Dial actions on one call
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "canceled", "failed"})
EVENTS = ("initiated", "ringing", "answered", "completed")

Request = Callable[..., Awaitable[tuple[int, str]]]
Fetch = Callable[..., Awaitable[list[tw.Verb]]]


@dataclass(frozen=True, slots=True)
class Timing:
    """How long the simulated owner takes (seconds of real time; Twilio's own waits are compressed)."""

    ring_s: float = 0.05  # the phone rings, then is answered (or rings out, or is busy)
    press_s: float = 0.0  # listening to the whisper before pressing a key
    talk_s: float = 1.0  # talking once the conference runs with the caller, then hanging up
    alone_s: float = 5.0  # waiting alone in a conference that doesn't start, then hanging up


@dataclass(frozen=True, slots=True)
class PostedCallback:
    """One StatusCallback request as posted, and the server's HTTP answer (None: not reached)."""

    event: str
    params: dict[str, str]
    answered: int | None


@dataclass(slots=True)
class _Context:
    request: Request  # CallerSimulator._request: signed, sent to the server under test
    fetch: Fetch  # CallerSimulator._fetch: request TwiML, record it on the leg and parse it
    conferences: Conferences
    timing: Timing


@dataclass(slots=True)
class _Replace:
    verbs: list[tw.Verb] | None
    url: str | None
    method: str


class OutboundCall(CallRecord):
    """One call created through the REST stand-in: its parameters, status, events and callbacks."""

    def __init__(
        self,
        *,
        call_sid: str,
        account_sid: str,
        from_number: str,
        to_number: str,
        owner: Owner,
        form: dict[str, str],
        events: tuple[str, ...],
        verbs: list[tw.Verb] | None,
    ) -> None:
        super().__init__(
            call_sid=call_sid, account_sid=account_sid, from_number=from_number, to_number=to_number
        )
        self.owner = owner
        self.form = form  # the create request's fields (StatusCallbackEvent joined by spaces)
        self.status_callback_events = events
        self.status = "queued"
        self.created_at = time.monotonic()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.duration_s = 0
        self.callbacks: list[PostedCallback] = []
        self._verbs = verbs
        self._sequence = 0
        self._outbox: asyncio.Queue[tuple[str, dict[str, str]] | None] = asyncio.Queue()
        self._rest_hangup = asyncio.Event()
        self._twiml: asyncio.Task[str] | None = None
        self._replacement: _Replace | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"<OutboundCall {self.call_sid} to {self.to_number} {self.owner} {self.status}>"

    # ----- public API ---------------------------------------------------------------------------------------

    @property
    def final(self) -> bool:
        """The call has ended (its status is final); `ended` once its status callbacks are delivered."""
        return self.status in FINAL_STATUSES

    def callback_statuses(self) -> list[str]:
        """The CallStatus of each StatusCallback posted so far, in order."""
        return [callback.params["CallStatus"] for callback in self.callbacks]

    async def wait_ended(self, timeout: float = 5.0) -> str:  # noqa: ASYNC109
        """Until the call is over and its status callbacks were delivered; returns the final status."""
        try:
            async with asyncio.timeout(timeout):
                await self._call_done.wait()
                await self._outbox.join()
        except TimeoutError:
            raise TimeoutError(f"{self.call_sid}: still {self.status} after {timeout:g}s") from None
        return self.status

    def leg_params(self, status: str | None = None) -> dict[str, str]:
        """The parameters Twilio sends with each request about this call."""
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": status or self.status,
            "Called": self.to_number,
            "Caller": self.from_number,
            "Direction": "outbound-api",
            "From": self.from_number,
            "To": self.to_number,
        }

    # ----- driven by the REST stand-in ----------------------------------------------------------------------

    def start(self, context: _Context) -> None:
        name = self.call_sid[-6:]
        self._tasks = [
            asyncio.create_task(self._run(context), name=f"sim-outbound-{name}"),
            asyncio.create_task(self._post_callbacks(context), name=f"sim-outbound-cb-{name}"),
        ]

    def hang_up_by_rest(self, status: str) -> bool:
        """REST Status=canceled / completed. Returns False when it has no effect (canceled, answered)."""
        if self.final:
            return False
        if status == "canceled" and self.status not in ("queued", "ringing"):
            self._emit("rest_cancel_ignored", status=self.status)
            return False
        self._emit("rest_hangup", requested=status, status=self.status)
        self._rest_hangup.set()
        if self._twiml is not None:
            self._twiml.cancel()
        return True

    def redirect(self, verbs: list[tw.Verb] | None, url: str | None, method: str) -> None:
        """REST update with new TwiML on the answered call: the running TwiML is replaced at once."""
        self._emit("redirected", url=url, verbs=[verb.describe() for verb in verbs or ()])
        self._replacement = _Replace(verbs, url, method)
        if self._twiml is not None:
            self._twiml.cancel()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._over()

    # ----- the call -----------------------------------------------------------------------------------------

    async def _run(self, context: _Context) -> None:
        final = "failed"
        try:
            final = await self._progress(context)
        except asyncio.CancelledError:
            final = "canceled" if self.answered_at is None else "completed"
            raise
        except Exception as exc:  # a simulator bug: visible on the leg, and the call ends
            self.errors.append(f"simulator bug on the outbound call: {exc!r}")
            self._emit("error", message=self.errors[-1])
            final = "completed" if self.answered_at is not None else "failed"
        finally:
            self._finish(final)

    async def _progress(self, context: _Context) -> str:
        timing = context.timing
        self._report("initiated", "initiated")
        if self.owner is Owner.failed:
            return "failed"  # never rang: the number can't be reached
        self.status = "ringing"
        self._emit("ringing")
        self._report("ringing", "ringing")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._rest_hangup.wait(), timing.ring_s)
        if self._rest_hangup.is_set():
            return "canceled"
        if self.owner is Owner.busy:
            return "busy"
        if self.owner is Owner.no_answer:
            return "no-answer"
        self.status = "in-progress"
        self.answered_at = time.monotonic()
        self._emit("answered", by=str(self.owner))
        self._report("answered", "in-progress")
        replacement: _Replace | None = _Replace(
            self._verbs, self.form.get("Url") or None, self.form.get("Method") or "POST"
        )
        while replacement is not None:
            self._replacement = None
            self._twiml = asyncio.create_task(self._follow(context, replacement), name="sim-outbound-twiml")
            await asyncio.wait({self._twiml})
            if self._rest_hangup.is_set():
                return "completed"
            replacement = self._replacement
            if replacement is None and not self._twiml.cancelled():
                self._emit("hung_up", why=self._twiml.result())
        return "completed"

    async def _follow(self, context: _Context, start: _Replace) -> str:
        """Run the call's TwiML to its end; returns why the call ended."""
        url = start.url or ""
        try:
            if start.verbs is not None:
                verbs = start.verbs
            else:
                assert start.url is not None
                verbs = await context.fetch(
                    self, start.url, start.method, self.leg_params(), what="TwiML (Url)"
                )
            for _ in range(MAX_DOCUMENTS):
                next_request: tuple[str, str, dict[str, str]] | None = None
                for verb in verbs:
                    self._record_verb(verb)
                    self._emit("owner_verb", verb=verb.describe())
                    if isinstance(verb, tw.Say):
                        self._emit("owner_heard", text=verb.text)
                        if self.owner is Owner.hang_up:
                            self._emit("owner_leg", outcome="the owner hung up during the whisper")
                            return "the owner hung up"
                    elif isinstance(verb, tw.Gather):
                        if self.owner.digit is not None and context.timing.press_s > 0:
                            await asyncio.sleep(context.timing.press_s)
                        gathered = owner_gather(self, verb, url, self.leg_params(), self.owner)
                        if gathered.hung_up:
                            return "the owner hung up"
                        if gathered.next_request is not None:
                            next_request = gathered.next_request
                            break
                        self._emit("gather_timeout", timeout=verb.timeout)  # time-compressed
                    elif isinstance(verb, tw.Hangup | tw.Reject):
                        return f"<{type(verb).__name__}>"
                    elif isinstance(verb, tw.Redirect):
                        next_request = (urljoin(url, verb.url), verb.method, self.leg_params())
                        break
                    elif isinstance(verb, tw.Dial) and verb.conference is not None:
                        hung_up, bridged = await self._conference(context, verb.conference)
                        if hung_up:
                            return "the owner hung up"
                        if verb.action:
                            # As on any leg (https://www.twilio.com/docs/voice/twiml/dial#action).
                            params = {
                                **self.leg_params(),
                                "DialCallStatus": "answered",
                                "DialBridged": "true" if bridged else "false",
                            }
                            next_request = (urljoin(url, verb.action), verb.method, params)
                            break
                    elif isinstance(verb, tw.Pause):
                        continue
                    else:
                        self._warn(f"{verb.describe()} on the owner's call is not simulated; skipped")
                if next_request is None:
                    return "the TwiML ran out"
                url, method, params = next_request
                verbs = await context.fetch(self, url, method, params, what="TwiML request")
            raise SimulatorError(f"the call fetched more than {MAX_DOCUMENTS} TwiML documents")
        except SimulatorError as exc:
            # Twilio: the request failed (11200) or its answer was no TwiML (12100): the call ends.
            exc.call = self
            self.errors.append(str(exc))
            self._emit("error", message=str(exc))
            return "application error"

    async def _conference(self, context: _Context, conference: tw.Conference) -> tuple[bool, bool]:
        """In the room until the owner hangs up or the conference ends under them: (hung up, bridged)."""
        timing = context.timing
        participant = context.conferences.join(self, conference, role="owner")
        try:
            started = asyncio.ensure_future(participant.started.wait())
            done = asyncio.ensure_future(participant.done.wait())
            try:
                await asyncio.wait(
                    {started, done}, timeout=timing.alone_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                started.cancel()
                done.cancel()
            if participant.done.is_set():
                return False, participant.bridged
            if not participant.started.is_set():
                self._emit("owner_leg", outcome=f"alone in the conference for {timing.alone_s:g}s; hung up")
                return True, False
            try:
                await asyncio.wait_for(participant.done.wait(), timing.talk_s)
            except TimeoutError:
                self._emit("owner_leg", outcome=f"talked {timing.talk_s:g}s and hung up")
                return True, True
            return False, True
        finally:
            context.conferences.leave(participant, "the owner's leg left the conference")

    def _finish(self, status: str) -> None:
        if self._call_done.is_set():
            return
        self.status = status
        self.ended_at = time.monotonic()
        if self.answered_at is not None:
            self.duration_s = math.ceil(self.ended_at - self.answered_at)
        self.end_reason = status
        self._emit("call_ended", reason=status, duration=self.duration_s)
        self._report("completed", status, final=True)
        self._outbox.put_nowait(None)  # the call counts as over once its callbacks are delivered

    def _over(self) -> None:
        self._stream_done.set()
        self._call_done.set()
        self._release_waiters(None)

    # ----- status callbacks ---------------------------------------------------------------------------------

    def _report(self, event: str, status: str, *, final: bool = False) -> None:
        if not self.form.get("StatusCallback") or event not in self.status_callback_events:
            return
        params = {
            **self.leg_params(status),
            "CallbackSource": "call-progress-events",
            "Timestamp": datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"),
            "SequenceNumber": str(self._sequence),
        }
        if final:
            params["CallDuration"] = str(self.duration_s)
        self._sequence += 1
        self._outbox.put_nowait((event, params))

    async def _post_callbacks(self, context: _Context) -> None:
        url = self.form.get("StatusCallback", "")
        method = (self.form.get("StatusCallbackMethod") or "POST").upper()
        while True:
            item = await self._outbox.get()
            try:
                if item is None:
                    self._over()
                    return
                event, params = item
                answered: int | None = None
                try:
                    answered, _ = await context.request(url, method, params, what="call StatusCallback")
                except SimulatorError as exc:
                    self._warn(f"StatusCallback ({event}) failed: {exc}")
                else:
                    if not 200 <= answered < 300:
                        self._warn(f"StatusCallback ({event}) {url} answered HTTP {answered}")
                self.callbacks.append(PostedCallback(event, params, answered))
                self._emit("status_callback", event=event, status=params["CallStatus"], answered=answered)
            finally:
                self._outbox.task_done()


def callback_events(values: list[str]) -> tuple[str, ...]:
    """StatusCallbackEvent as sent (repeated fields, or space-separated); `completed` by default."""
    named = tuple(part for value in values for part in value.replace(",", " ").split())
    return named or ("completed",)
