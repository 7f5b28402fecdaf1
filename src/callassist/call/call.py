"""Call: one live call, from an admitted stream to its complete record.

Two pumps run side by side: the caller's audio from the media leg to the model engine, and the
engine's events to the conversation. The call owns its phase, its tasks and its cleanup; what it
orchestrates each own one job: the `Conversation` (what the model's events mean: turns, when the
model may speak, tools), the `CallJournal` (the record) and `Closing` (goodbyes, time limit,
rotation, the summary).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from callassist.call.aftercall import CallFacts
from callassist.call.closing import Closing
from callassist.call.conversation import Conversation
from callassist.call.deps import CallDeps, EndReason
from callassist.call.events import AssistantLost, CallEnded, CallStarted
from callassist.call.journal import CallJournal
from callassist.call.phase import Phase, move
from callassist.call.recorder import CallSummaryFields
from callassist.call.transfer import HOLD_ITEM, Transfer
from callassist.engine.base import Engine, EngineUnavailable
from callassist.engine.events import EngineLost
from callassist.media.leg import CallerAudio, Keypress, LegEnd, MediaLeg
from callassist.realtime.config import CallContext

# After the session is configured: a model whose greeting audio hasn't come by then is taken as down
# (a healthy session's greeting starts within about a second; a response that failed at the start,
# rate limits or quota, sends response.done "failed" and no audio).
ANSWER_DEADLINE_S = 3.0
TRANSFER_STOP_WAIT_S = 2.0  # a transferred call waits this long for Twilio to close its stream
_LEG_ENDS = {
    LegEnd.hung_up: EndReason.caller_hung_up,
    LegEnd.disconnected: EndReason.twilio_disconnected,
    LegEnd.unresponsive: EndReason.twilio_unresponsive,
}


class Call:
    def __init__(
        self,
        call_sid: str,
        leg: MediaLeg,
        engine: Engine,
        deps: CallDeps,
        context: CallContext,
        journal: CallJournal,
        *,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        accepted: tuple[datetime, float] | None = None,
    ) -> None:
        """`accepted`: when the stream was accepted (wall clock, monotonic), which the call's start,
        duration and greeting latency count from (the caller waits from then on)."""
        self.call_sid = call_sid
        self.leg = leg
        self.engine = engine
        self.deps = deps
        self.context = context
        self.journal = journal
        self.log = logger
        # For durations and latencies, clock_start; started_at is the same moment on the wall clock.
        self.started_at, self.clock_start = accepted or (datetime.now(UTC), time.monotonic())
        self.phase = Phase.connecting
        self.end_reason: EndReason | None = None
        self._ended = asyncio.Event()
        self.summary: CallSummaryFields | None = None
        self.conversation = Conversation(
            self,
            call_sid=call_sid,
            leg=leg,
            engine=engine,
            journal=journal,
            deps=deps,
            context=context,
            started_at=self.clock_start,
            logger=logger,
        )
        self.closing = Closing(self)
        self.transfer = Transfer(self, deps.owner_line)

    # Phase -------------------------------------------------------------------------------------------

    def enter(self, phase: Phase) -> None:
        self.phase = move(self.phase, phase)
        if phase is Phase.winding_down:
            self.transfer.abandon()  # a goodbye: no hold audio over it, no owner's phone ringing

    def end(self, reason: EndReason) -> None:
        """End the call (the first reason given is kept); cleanup follows in run()."""
        if self.end_reason is None:
            self.end_reason = reason
        self._ended.set()

    @property
    def over(self) -> bool:
        return self._ended.is_set()

    # CallControl (what tools can do to the call) ----------------------------------------------------

    def end_call(self, reason: str) -> None:
        self.closing.hang_up_after_goodbye(reason)

    def transfer_to_owner(self, summary: str) -> str | None:
        return self.transfer.start(summary)

    def owner_takes_call(self) -> str | None:
        """The owner asked for this call from the dashboard: ring them (the whisper says so) and
        have the assistant tell the caller; None once under way, else why not."""
        return self.conversation.put_through_for_owner()

    async def wind_down(self, grace_s: float) -> None:
        """The server is stopping: a short goodbye, then the end (within `grace_s`)."""
        await self.closing.wind_down(grace_s)

    # Running ---------------------------------------------------------------------------------------

    async def run(self, connecting: asyncio.Task[None]) -> EndReason:
        """Run the call to its end and complete its record. Never raises for problems of either side."""
        self.deps.events.publish(
            CallStarted(self.call_sid, self.context.caller_number, self.context.is_owner)
        )
        leg_pump = asyncio.create_task(self._pump_leg(), name="leg-pump")
        engine_pump: asyncio.Task[None] | None = None
        ended = asyncio.create_task(self._ended.wait(), name="call-ended")
        lost = asyncio.create_task(self.leg.wait_lost(), name="leg-lost")
        remembering = asyncio.create_task(self.conversation.remember_caller(), name="caller-memory")
        try:
            # The caller may hang up while the model is still connecting: don't wait for it then.
            await asyncio.wait({connecting, ended}, return_when=asyncio.FIRST_COMPLETED)
            try:
                if not connecting.done():
                    raise EngineUnavailable("the call ended before the model answered")
                connecting.result()
                await remembering
                await self.engine.configure(self.conversation.setup)
            except EngineUnavailable as exc:
                if not self.over:
                    self.log.error("assistant unavailable: %s", exc)
                    self.end(EndReason.openai_unavailable)
            else:
                self.enter(Phase.live)
                engine_pump = asyncio.create_task(self._pump_engine(), name="engine-pump")
                self.closing.start_timers()
                self.closing.spawn(self._expect_an_answer())
            waiting = {leg_pump, ended, lost} | ({engine_pump} if engine_pump else set())
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                self.end(await self.transfer.leg_end_reason(_LEG_ENDS[lost.result()]))
        finally:
            remembering.cancel()
            lost.cancel()
            try:
                await self._cleanup(leg_pump, engine_pump, ended)
            finally:  # counted as ended even if the cleanup failed or was cut short
                reason = self.end_reason or EndReason.twilio_disconnected
                duration = time.monotonic() - self.clock_start
                self.deps.events.publish(CallEnded(self.call_sid, reason.value, duration))
        return self.end_reason or EndReason.twilio_disconnected

    async def _expect_an_answer(self) -> None:
        """A session that opened but never speaks is no assistant: the call ends as if the model were
        unreachable, and the caller gets the voicemail instead of silence."""
        await asyncio.sleep(ANSWER_DEADLINE_S)
        if not self.conversation.answered and not self.over:
            self.log.error("the model's session is open but silent after %.0fs", ANSWER_DEADLINE_S)
            self.end(EndReason.openai_unavailable)

    async def _cleanup(
        self, leg_pump: asyncio.Task[None], engine_pump: asyncio.Task[None] | None, ended: asyncio.Task[Any]
    ) -> None:
        """In this order: stop the model talking, close the caller's line, let tools finish, ask for
        the summary, wait for the caller's last words, close the model, complete the record."""
        self.end(EndReason.twilio_disconnected)  # the reason given first stays
        self.enter(Phase.ended)
        ended.cancel()
        await self.transfer.call_ending()  # no hold audio, no owner's phone ringing for a gone caller
        await self.engine.settled(2.0)  # a switch to a new session under way finishes first
        for cut in self.leg.forget_queued():  # still queued at the end: never heard
            if cut.item_id != HOLD_ITEM:
                self.journal.interrupted(cut.item_id, cut.heard_ms)
        turns, tools = self.conversation.turns, self.conversation.tools
        if self.conversation.sequencer.active is not None and self.engine.ready:
            await self.engine.cancel_response()  # nobody is listening: stop generating (and paying)
        speaking = turns.caller_speaking and turns.speech_item and self.engine.ready
        # They hung up mid-sentence (before the detector closed their turn): commit it so it is
        # transcribed and kept; a commit creates no response (its SDK docstring).
        if speaking and turns.speech_item and await self.engine.commit_input():
            self.journal.speech_stopped(turns.speech_item, None)
        if self.end_reason is EndReason.openai_unavailable:
            self.deps.events.publish(AssistantLost(self.call_sid))  # before Twilio asks stream-ended
        if self.end_reason is EndReason.transferred and not leg_pump.done():
            # Twilio moved the caller: its `stop` closes the stream; ours could come first (bounded).
            await asyncio.wait({leg_pump}, timeout=TRANSFER_STOP_WAIT_S)
        await self.leg.close()  # the caller's line closes now, not after the summary
        shutting_down = self.end_reason is EndReason.server_shutdown
        await tools.finish(within_s=1.0 if shutting_down else None)
        if engine_pump is not None and not engine_pump.done():
            self.summary = await self.closing.summarize(within_s=1.5 if shutting_down else None)
            await tools.finish(within_s=1.0)
            await self.journal.transcripts_settled(within_s=0.5 if shutting_down else 3.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.engine.close(), 2.5)  # bounded; no more audio for a gone caller
        for task in (engine_pump, leg_pump):
            if task is not None and not task.done():
                task.cancel()
        for task in (engine_pump, leg_pump, ended):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.closing.stop_timers()
        self.conversation.sequencer.close()
        await self._close_record()
        reason = self.end_reason or EndReason.twilio_disconnected
        duration = time.monotonic() - self.clock_start
        counts = self.leg.counts
        self.log.info(
            "call ended: %s after %.1fs (frames in %d, chunks out %d, barge-ins %d, reconnects %d, "
            "rotations %d, bad frames %d)",
            reason,
            duration,
            counts.frames_in,
            counts.chunks_out,
            counts.barge_ins,
            self.engine.reconnects,
            self.engine.rotations,
            counts.bad_frames,
        )

    async def _close_record(self) -> None:
        after = None
        if self.deps.after_call is not None:
            try:
                after = self.deps.after_call(self.call_sid, self.context.called_number, self.facts())
            except Exception:
                self.log.exception("could not prepare the owner's notice")
        self.journal.ended(
            outcome=(self.end_reason or EndReason.twilio_disconnected).value,
            greeting_latency_s=self.conversation.turns.greeting_latency_s,
            reconnects=self.engine.reconnects,
            summary=self.summary,
            caller_name=self.caller_name,
            after=after,
        )
        await self.journal.recorder.close()
        if after is not None and self.deps.notices_queued is not None:
            self.deps.notices_queued()

    @property
    def caller_name(self) -> str | None:
        return self.conversation.caller_name

    def facts(self) -> CallFacts:
        """What the owner's notice is made from."""
        return CallFacts(
            caller_number=self.context.caller_number,
            caller_name=self.caller_name,
            started_at=self.started_at,
            duration_s=time.monotonic() - self.clock_start,
            summary=self.summary,
            tool_outcomes=list(self.journal.tool_outcomes),
        )

    # The caller's side -------------------------------------------------------------------------------

    async def _pump_leg(self) -> None:
        receive, send_audio = self.leg.receive, self.engine.send_audio
        turns, ended = self.conversation.turns, self._ended
        remember = turns.inbound.frames.append
        monotonic = time.monotonic
        transfer = self.transfer
        forward_failures = 0
        while True:
            event = await receive()
            if isinstance(event, CallerAudio):
                if ended.is_set() or transfer.holding:
                    continue  # the call is over, or on hold: nothing the caller says starts an answer
                turns.input_bytes += event.size
                turns.last_input_at = now = monotonic()
                remember((now, event.payload))
                try:
                    await send_audio(event.payload)
                except Exception as exc:  # never lose the caller over one frame
                    forward_failures += 1
                    if forward_failures <= 5 or forward_failures % 100 == 0:
                        self.log.warning("could not forward audio (%d so far): %s", forward_failures, exc)
            elif isinstance(event, Keypress):
                if not transfer.holding:
                    self.conversation.keypress(event.digit)
            else:
                self.end(await self.transfer.leg_end_reason(_LEG_ENDS[event.reason]))
                return

    # The model's side --------------------------------------------------------------------------------

    async def _pump_engine(self) -> None:
        async for event in self.engine.events():
            try:
                await self.conversation.handle(event)
            except Exception:
                # A bug in one handler must not end the call; the next event gets a fresh start.
                self.log.exception("error while handling %s", type(event).__name__)
            if type(event) is EngineLost:
                return
