"""ResponseSequencer: who may ask the model to speak, and when.

Only one response may write to the conversation at a time, and the caller comes first. The rules
(from real calls; each has an in-process test in tests/call/test_call_core.py):
- nothing is asked for while the caller speaks: what was added meanwhile (tool outputs, notes) is
  answered by the response the service's voice detection starts when they stop; if none comes
  within VAD_RESPONSE_GRACE_S, we ask;
- a request while a response is active or one of ours is in flight waits (`wanted`) and is asked
  for when that response is over, unless a response created after the outputs answers them;
- notes (a time warning, a goodbye) join the conversation as system messages just before the
  request, never as response instructions (those would replace the session's persona and rules);
- our request that reaches the service after the caller began speaking is cancelled (by the call)
  and asked again later; one refused because a response was already active is asked again when it
  is over; one with no answer within REQUEST_EXPIRY_S is taken as lost;
- after a session is replaced, what was in flight is forgotten; pending notes are asked for again.

State: `free` (nothing active), `asked` (our request in flight), `active` (a response is being
generated); `wanted` is what to ask for once the floor is free again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from enum import StrEnum

from callassist.engine.base import Engine
from callassist.engine.events import SUMMARY_REQUEST, EngineError, ResponseFinished, ResponseStarted

REQUEST_EXPIRY_S = 5.0  # a request with neither a response nor an error by then is lost
VAD_RESPONSE_GRACE_S = 1.0  # after the caller stops, how long the service's own response may take
SWITCH_WAIT_S = 2.0  # how long a request waits for a session being replaced
SPEAK_AGAIN = "speak-again"  # the purpose of re-asking a text-only answer as audio
GREETING = "greeting"
TURN = "turn"


class Floor(StrEnum):
    free = "free"
    asked = "asked"
    active = "active"


class Started(StrEnum):
    """What the call must do about a response that just started."""

    carry_on = "carry-on"
    cancel = "cancel"  # ours, started after the caller began speaking (or the call is over)
    out_of_band = "out-of-band"  # the summary: it doesn't occupy the conversation


class ResponseSequencer:
    def __init__(
        self,
        engine: Engine,
        *,
        caller_speaking: Callable[[], bool],
        call_over: Callable[[], bool],
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._engine = engine
        self._caller_speaking = caller_speaking
        self._call_over = call_over
        self._log = logger
        self.active: str | None = None  # the response being generated
        self.requested: str | None = None  # our request in flight (its tag)
        self._requested_at = 0.0
        self.wanted: str | None = None  # purpose to ask for once the floor is free
        self.pending_notes: list[str] = []  # system notes to add with the next request
        self._outputs_unanswered = False  # outputs or notes added that no response has seen yet
        self._count = 0
        self.created = 0  # conversation responses started, in order (see wait_for_answer)
        self._purposes: dict[str, str] = {}  # our tag -> why we asked (for the usage record)
        self._settled = asyncio.Event()  # set whenever no response is active any more
        self._timers: set[asyncio.Task[None]] = set()

    @property
    def floor(self) -> Floor:
        if self.active is not None:
            return Floor.active
        return Floor.asked if self.requested else Floor.free

    @property
    def idle(self) -> bool:
        """Nothing active, asked for (unless lost) or wanted: a quiet moment as far as we know."""
        lost = time.monotonic() - self._requested_at > REQUEST_EXPIRY_S
        return self.active is None and (self.requested is None or lost) and self.wanted is None

    def tag(self, purpose: str) -> str:
        """A new request tag for `purpose`, now in flight (the greeting is sent with the setup)."""
        self._count += 1
        request = str(self._count)
        self.requested = request
        self._requested_at = time.monotonic()
        self._purposes[request] = purpose
        return request

    # Asking ---------------------------------------------------------------------------------------

    async def request(self, purpose: str, note: str | None = None) -> None:
        """Ask for a response now, or right after the one that is active or in flight."""
        if note is not None:
            self.pending_notes.append(note)
        if self._call_over():
            return
        if self.requested and time.monotonic() - self._requested_at > REQUEST_EXPIRY_S:
            self._log.warning("response request %s got no answer; asking again", self.requested)
            self.requested = None
        if self.active is not None or self.requested:
            if self.wanted is None or note:
                self.wanted = purpose
            return
        engine = self._engine
        if not engine.ready and engine.switching:
            # A new session is being set up (a rotation takes milliseconds): ask it, not the void.
            await engine.settled(SWITCH_WAIT_S)
        await self.add_pending_notes()
        if self._caller_speaking():
            self.wanted = purpose
            return
        request = self.tag(purpose)
        if not await engine.request_response(request, audio_only=purpose == SPEAK_AGAIN):
            self.requested = None

    async def add_pending_notes(self) -> None:
        while self.pending_notes:
            if not await self._engine.add_note(self.pending_notes[0]):
                return  # the session is down: kept for the next one
            self.pending_notes.pop(0)
            self._outputs_unanswered = True

    def outputs_added(self) -> None:
        """Tool outputs joined the conversation: a response created from now on answers them."""
        self._outputs_unanswered = True

    async def ask_wanted(self) -> None:
        """The floor is free: ask for what was waiting, if anything."""
        if self.wanted is not None and self.active is None:
            purpose, self.wanted = self.wanted, None
            await self.request(purpose)

    def caller_stopped(self) -> None:
        """The caller's turn ended: if something waits, the service's own response normally answers
        it; if none comes within VAD_RESPONSE_GRACE_S, ask."""
        if self.wanted is not None:
            task = asyncio.create_task(self._answer_unless_the_vad_does())
            self._timers.add(task)
            task.add_done_callback(self._timers.discard)

    async def _answer_unless_the_vad_does(self) -> None:
        created = self.created
        await asyncio.sleep(VAD_RESPONSE_GRACE_S)
        if self.wanted is None or self.created != created or self._caller_speaking():
            return
        if self.active is None and not self.requested:
            await self.ask_wanted()

    # What the service says ------------------------------------------------------------------------

    def started(self, event: ResponseStarted) -> Started:
        if event.request == SUMMARY_REQUEST:
            return Started.out_of_band
        self.active = event.response_id
        request = event.request
        if self.requested and request == self.requested:
            self.requested = None
        if self._call_over() or (request and self._caller_speaking()):
            # Ours, reaching the service after the caller began speaking: it would play over them
            # and take the place of the answer to what they are saying (openai SDK docstrings:
            # `interrupt_response` cancels only a response ongoing at speech start, and only one
            # response at a time writes to the default conversation, ResponseCreateEvent).
            if not self._call_over():
                self.wanted = self.wanted or self._purposes.get(request or "", TURN)
            return Started.cancel
        self.created += 1
        if self.wanted is not None and not self.pending_notes and self._outputs_unanswered:
            # Created after the outputs or notes were added (the service's own response to the
            # caller, typically), so it answers them too: no second response.
            self.wanted = None
        self._outputs_unanswered = False
        return Started.carry_on

    def finished(self, event: ResponseFinished) -> str:
        """A conversation response is over; returns why it was asked for (TURN if not by us)."""
        purpose = self._purposes.pop(event.request, TURN) if event.request else TURN
        if event.response_id == self.active:
            self.active = None
            self._settled.set()
        return purpose

    def refused(self, error: EngineError) -> None:
        """Our request was refused (typically it lost a race with a response the service started):
        ask again when that one is over, unless it answers what we wanted answered."""
        if error.request is None or error.request != self.requested:
            return
        purpose = self._purposes.pop(error.request, TURN)
        self.requested = None
        if error.code == "conversation_already_has_active_response" and purpose not in (TURN, GREETING):
            self.wanted = self.wanted or purpose  # what it answers is in the conversation already

    def session_replaced(self) -> None:
        """The old session's response and requests are gone with it."""
        self.active = None
        self.requested = None
        if not self.pending_notes:
            self.wanted = None  # a pending note (a goodbye, a warning) is asked for once reconnected
        self._settled.set()

    async def after_replacement(self) -> None:
        if self.pending_notes and self.wanted is not None:
            await self.ask_wanted()

    # Waiting ----------------------------------------------------------------------------------------

    async def wait_for_answer(self, asked: int, within_s: float) -> None:
        """Until a response created after `asked` responses (the one answering our request, or the
        service's that took it over) is over."""
        end = time.monotonic() + max(0.0, within_s)
        while time.monotonic() < end and (self.created <= asked or self.active):
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), min(0.25, end - time.monotonic()))

    async def wait_for_no_response(self, within_s: float) -> None:
        end = time.monotonic() + max(0.0, within_s)
        while (self.active or self.requested) and time.monotonic() < end:
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), end - time.monotonic())

    def close(self) -> None:
        for task in list(self._timers):
            task.cancel()
