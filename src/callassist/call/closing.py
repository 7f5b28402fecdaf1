"""Closing: how a call ends, and what keeps a long one going.

- The assistant's goodbye (end_call): the line closes once the goodbye has been heard, unless the
  caller talks over it ("oh wait, one more thing"): then the goodbye is taken back.
- The server stopping, or CALLASSIST_MAX_CALL_MINUTES: a short spoken goodbye, then the end.
- Rotation: before the service's session cap, the call moves to a fresh session at a quiet moment.
- The summary, asked for out of band once the caller's line is closed.
Timers started here are the call's: cancelled when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from callassist.call.conversation import Conversation
from callassist.call.deps import CallDeps, EndReason
from callassist.call.journal import CallJournal
from callassist.call.phase import Phase
from callassist.call.recorder import CallSummaryFields, parse_summary
from callassist.engine.base import Engine
from callassist.media.leg import MediaLeg

GOODBYE_PLAYBACK_S = 20.0  # the longest an end_call waits for its goodbye to be heard
SWITCH_WAIT_S = 2.0
# Session rotation ahead of the service's cap: how often to look for a quiet moment, how long the
# caller's line must have been quiet, and how long to wait after a failed attempt.
QUIET_POLL_S = 0.25
QUIET_WINDOW_S = 1.0
ROTATE_RETRY_S = 5.0
GOES_ON_NOTE = (
    "The caller spoke again after your goodbye, so the call is not over: listen and answer them. "
    "Call end_call again only once they are done."
)


class TheCall(Protocol):
    """What Closing needs of its call (call.Call)."""

    deps: CallDeps
    leg: MediaLeg
    engine: Engine
    journal: CallJournal
    conversation: Conversation
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]

    @property
    def phase(self) -> Phase: ...

    @property
    def over(self) -> bool: ...

    def enter(self, phase: Phase) -> None: ...

    def end(self, reason: EndReason) -> None: ...


class Closing:
    def __init__(self, call: TheCall) -> None:
        self._call = call
        self._timers: set[asyncio.Task[Any]] = set()
        self._hang_up: asyncio.Task[None] | None = None  # end_call's, until its goodbye is heard
        self._summary: asyncio.Future[str] | None = None

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A timer of this call: cancelled when the call ends."""
        task = asyncio.create_task(coroutine)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)
        return task

    def start_timers(self) -> None:
        settings = self._call.deps.settings
        if settings.max_call_minutes:
            self.spawn(self._time_limit(settings.max_call_minutes * 60))
        if settings.session_rotate_minutes:
            self.spawn(self._rotate_sessions(settings.session_rotate_minutes * 60))

    def stop_timers(self) -> None:
        for timer in list(self._timers):
            timer.cancel()

    # The assistant's goodbye ---------------------------------------------------------------------------

    def hang_up_after_goodbye(self, reason: str) -> None:
        call = self._call
        if call.over:
            return  # a tool that finished during the cleanup: the call is ending anyway
        if call.conversation.turns.caller_speaking:
            # They are already saying something more: the goodbye is taken back before it starts.
            call.log.info("the assistant would end the call, but the caller is speaking: it goes on")
            self.spawn(self.tell_model_the_call_goes_on())
            return
        call.log.info("the assistant ends the call")
        call.enter(Phase.winding_down)
        self._hang_up = self.spawn(
            self._close_after_playback(EndReason.assistant_hung_up, GOODBYE_PLAYBACK_S)
        )

    @property
    def hanging_up(self) -> bool:
        """An end_call waits for its goodbye to be heard."""
        return self._hang_up is not None and not self._hang_up.done()

    def take_back_goodbye(self) -> bool:
        """The caller spoke before the goodbye was heard to its end: the line stays open."""
        hang_up, self._hang_up = self._hang_up, None
        if hang_up is None or hang_up.done() or self._call.over:
            return False
        hang_up.cancel()
        self._call.enter(Phase.live)
        self._call.log.info("the caller spoke over the goodbye: the call goes on")
        return True

    async def tell_model_the_call_goes_on(self) -> None:
        # The model's last act was end_call: tell it the call is not over. The detector's response
        # to what the caller is saying answers them.
        await self._call.engine.add_note(GOES_ON_NOTE)

    async def _close_after_playback(self, reason: EndReason, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        await self._call.conversation.sequencer.wait_for_no_response(deadline - time.monotonic() - 1.0)
        await self._call.leg.wait_drained(max(0.0, deadline - time.monotonic()))
        self._call.end(reason)

    # Goodbyes we ask for --------------------------------------------------------------------------------

    async def wind_down(self, grace_s: float) -> None:
        """The server is stopping: let the assistant say a short goodbye, then end the call."""
        owner = self._call.deps.settings.owner_name
        await self._say_goodbye_and_end(
            "The line has to close now for a technical restart. In one short sentence, apologise, "
            f"say {owner} will get back to them, and say goodbye. Ask nothing.",
            EndReason.server_shutdown,
            grace_s,
        )

    async def _say_goodbye_and_end(self, note: str, reason: EndReason, grace_s: float) -> None:
        call = self._call
        if call.over:
            return
        if call.phase is not Phase.connecting:
            call.enter(Phase.winding_down)
        deadline = time.monotonic() + grace_s
        sequencer = call.conversation.sequencer
        # A session being replaced (a rotation, a reconnect) is waited for briefly.
        if call.leg.lost is None and await call.engine.wait_ready(min(SWITCH_WAIT_S, grace_s / 2)):
            await sequencer.wait_for_no_response(deadline - time.monotonic() - 2.0)
            sequencer.wanted = None
            asked = sequencer.created
            await sequencer.request("goodbye", note=note)
            await sequencer.wait_for_answer(asked, deadline - time.monotonic() - 0.5)
            await call.leg.wait_drained(max(0.0, deadline - time.monotonic()))
        call.end(reason)

    async def _time_limit(self, limit_s: float) -> None:
        """A minute's warning, then a goodbye and the end."""
        warning_at = limit_s - 60
        if warning_at > 0:
            await asyncio.sleep(warning_at)
            await self._call.conversation.sequencer.request(
                "time-warning", note="At a natural pause, say briefly that you must wrap up within a minute."
            )
            await asyncio.sleep(limit_s - warning_at)
        else:
            await asyncio.sleep(limit_s)
        owner = self._call.deps.settings.owner_name
        await self._say_goodbye_and_end(
            f"The call has reached its time limit. In one short sentence, say {owner} will follow up, and "
            "say goodbye. Ask nothing.",
            EndReason.time_limit,
            10.0,
        )

    # A fresh session before the cap ------------------------------------------------------------------

    async def _rotate_sessions(self, rotate_after_s: float) -> None:
        """If no quiet moment comes in time, the cap's close is reconnected like any other drop."""
        engine = self._call.engine
        while True:
            wait_s = rotate_after_s - engine.session_age
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # a reconnect meanwhile starts the clock again
            elif not self.quiet_moment():
                await asyncio.sleep(QUIET_POLL_S)
            elif not await engine.rotate(self.quiet_moment):
                await asyncio.sleep(ROTATE_RETRY_S)

    def quiet_moment(self) -> bool:
        """Nothing in flight that a new session could not take over."""
        call = self._call
        turns = call.conversation.turns
        return (
            call.phase is Phase.live
            and call.engine.ready
            and call.conversation.sequencer.idle
            and not call.conversation.tools.busy
            and not turns.caller_speaking
            and not call.leg.audible
            and not call.journal.caller_turn_pending
            # The detector notices speech a little late: its first syllables must not go to the old
            # session.
            and turns.inbound.last_speech_at(before=time.monotonic(), window_s=QUIET_WINDOW_S) is None
        )

    # The summary ---------------------------------------------------------------------------------------

    async def summarize(self, within_s: float | None = None) -> CallSummaryFields | None:
        """Ask for a short summary out of band (text, not added to the conversation). The record is
        complete without it if it fails or takes too long. Asked whenever the caller spoke (their
        words may not be transcribed yet: the model has their audio)."""
        call = self._call
        if not call.journal.caller_spoke or not call.engine.ready:
            return None
        owner = call.deps.settings.owner_name
        self._summary = asyncio.get_running_loop().create_future()
        instructions = (
            f"The call is over. For {owner}, reply with one JSON object and nothing else: "
            '{"summary": "one or two sentences: what the caller wanted and what was done", '
            '"caller_name": "their name if they gave it, else null", '
            '"reason": "a few words on why they called", '
            f'"follow_up_needed": true if {owner} needs to do something, else false, '
            '"urgency": "low", "normal", "high" or "urgent"}'
        )
        if not await call.engine.request_summary(instructions):
            return None
        timeout = within_s or call.deps.settings.summary_timeout_seconds
        try:
            text = await asyncio.wait_for(self._summary, timeout)
        except TimeoutError:
            call.log.warning("no call summary within %.1fs", timeout)
            return None
        return parse_summary(text) if text else None

    def summary_arrived(self, text: str) -> None:
        if self._summary is not None and not self._summary.done():
            self._summary.set_result(text)
