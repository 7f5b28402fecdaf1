"""Call: one live call, from an admitted stream to its complete record.

Two pumps run side by side: the caller's audio from the media leg to the model engine, and the
engine's events to the leg and the conversation. The call owns its phase and its cleanup; the parts
it orchestrates each own one job: `TurnTaking` (playback, barge-in, turn timing), the
`ResponseSequencer` (when the model may speak), the `ToolRunner` (tool calls), the `CallJournal`
(the record) and `Closing` (goodbyes, time limit, rotation, the summary).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from callassist import observability as obs
from callassist.call.aftercall import CallFacts
from callassist.call.closing import Closing
from callassist.call.deps import CallDeps, EndReason
from callassist.call.events import AssistantLost, CallEnded, CallStarted
from callassist.call.journal import CallJournal
from callassist.call.phase import Phase, move
from callassist.call.recorder import CallSummaryFields
from callassist.call.sequencer import GREETING, SPEAK_AGAIN, TURN, ResponseSequencer, Started
from callassist.call.tool_runner import ToolRunner
from callassist.call.turns import TurnTaking
from callassist.engine.base import Engine, EngineUnavailable
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
)
from callassist.media.leg import CallerAudio, Keypress, LegEnd, MediaLeg
from callassist.realtime.config import CallContext, build_instructions
from callassist.tools.identity import code_typed
from callassist.tools.registry import ToolContext

MEMORY_TIMEOUT_S = 1.5  # the greeting doesn't wait longer than this for the caller's history
MAX_KEYPAD_DIGITS = 24  # keys kept for a code typed in (tools/identity.py)
KEYPAD_NOTE = (
    "The caller has typed the code on their keypad (you are not shown the digits): call "
    "check_verification_code without a code."
)
_LEG_ENDS = {
    LegEnd.hung_up: EndReason.caller_hung_up,
    LegEnd.disconnected: EndReason.twilio_disconnected,
    LegEnd.unresponsive: EndReason.twilio_unresponsive,
}


@dataclass(slots=True)
class CallStats:
    """Figures a call produces, for its log line (the record itself is in the journal)."""

    started_at: float = field(default_factory=time.monotonic)
    openai_errors: dict[str, int] = field(default_factory=dict)


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
    ) -> None:
        self.call_sid = call_sid
        self.leg = leg
        self.engine = engine
        self.deps = deps
        self.context = context
        self.journal = journal
        self.log = logger
        self.started_at = datetime.now(UTC)
        self.stats = CallStats()
        self.phase = Phase.connecting
        self.end_reason: EndReason | None = None
        self._ended = asyncio.Event()
        self.summary: CallSummaryFields | None = None
        self.turns = TurnTaking(leg, engine, journal, started_at=self.stats.started_at, logger=logger)
        self.sequencer = ResponseSequencer(
            engine,
            caller_speaking=lambda: self.turns.caller_speaking,
            call_over=self._ended.is_set,
            logger=logger,
        )
        self.tool_context = ToolContext(
            call_sid=call_sid,
            caller_number=context.caller_number,
            is_owner=context.is_owner,
            services=deps.tool_services,
            recorder=journal.recorder,
            call=self,
            logger=logger,
            caller_verified=context.caller_verified,
            called_number=context.called_number,
        )
        self.tools = ToolRunner(
            deps.tools,
            self.tool_context,
            engine,
            self.sequencer,
            journal,
            call_over=self._ended.is_set,
            logger=logger,
        )
        self.closing = Closing(self)

    # Phase -------------------------------------------------------------------------------------------

    def enter(self, phase: Phase) -> None:
        self.phase = move(self.phase, phase)

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
        remembering = asyncio.create_task(self._remember_caller(), name="caller-memory")
        try:
            # The caller may hang up while the model is still connecting: don't wait for it then.
            await asyncio.wait({connecting, ended}, return_when=asyncio.FIRST_COMPLETED)
            try:
                if not connecting.done():
                    raise EngineUnavailable("the call ended before the model answered")
                connecting.result()
                await remembering
                await self.engine.configure(self._setup)
            except EngineUnavailable as exc:
                if not self.over:
                    self.log.error("assistant unavailable: %s", exc)
                    self.end(EndReason.openai_unavailable)
            else:
                self.enter(Phase.live)
                engine_pump = asyncio.create_task(self._pump_engine(), name="engine-pump")
                self.closing.start_timers()
            waiting = {leg_pump, ended, lost} | ({engine_pump} if engine_pump else set())
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                self.end(_LEG_ENDS[lost.result()])
        finally:
            remembering.cancel()
            lost.cancel()
            await self._cleanup(leg_pump, engine_pump, ended)
        return self.end_reason or EndReason.twilio_disconnected

    async def _cleanup(
        self, leg_pump: asyncio.Task[None], engine_pump: asyncio.Task[None] | None, ended: asyncio.Task[Any]
    ) -> None:
        """In this order: stop the model talking, close the caller's line, let tools finish, ask for
        the summary, wait for the caller's last words, close the model, complete the record."""
        self.end(EndReason.twilio_disconnected)  # the reason given first stays
        self.enter(Phase.ended)
        ended.cancel()
        await self.engine.settled(2.0)  # a switch to a new session under way finishes first
        for cut in self.leg.forget_queued():  # still queued at the end: never heard
            self.journal.interrupted(cut.item_id, cut.heard_ms)
        if self.sequencer.active is not None and self.engine.ready:
            await self.engine.cancel_response()  # nobody is listening: stop generating (and paying)
        speaking = self.turns.caller_speaking and self.turns.speech_item and self.engine.ready
        # They hung up mid-sentence (before the detector closed their turn): commit it so it is
        # transcribed and kept; a commit creates no response (its SDK docstring).
        if speaking and self.turns.speech_item and await self.engine.commit_input():
            self.journal.speech_stopped(self.turns.speech_item, None)
        if self.end_reason is EndReason.openai_unavailable:
            self.deps.events.publish(AssistantLost(self.call_sid))  # before Twilio asks stream-ended
        await self.leg.close()  # the caller's line closes now, not after the summary
        shutting_down = self.end_reason is EndReason.server_shutdown
        await self.tools.finish(within_s=1.0 if shutting_down else None)
        if engine_pump is not None and not engine_pump.done():
            self.summary = await self.closing.summarize(within_s=1.5 if shutting_down else None)
            await self.tools.finish(within_s=1.0)
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
        self.sequencer.close()
        await self._close_record()
        reason = self.end_reason or EndReason.twilio_disconnected
        duration = time.monotonic() - self.stats.started_at
        self.deps.events.publish(CallEnded(self.call_sid, reason.value, duration))
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
            greeting_latency_s=self.turns.greeting_latency_s,
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
        """The name the caller gave (to a tool) or, failing that, the one we knew them by."""
        return self.tool_context.caller_name or self.context.caller_name

    def facts(self) -> CallFacts:
        """What the owner's notice is made from."""
        return CallFacts(
            caller_number=self.context.caller_number,
            caller_name=self.caller_name,
            started_at=self.started_at,
            duration_s=time.monotonic() - self.stats.started_at,
            summary=self.summary,
            tool_outcomes=list(self.journal.tool_outcomes),
        )

    async def _remember_caller(self) -> None:
        loader, number = self.deps.load_memory, self.context.caller_number
        if loader is None or not number or self.context.is_owner:
            return
        try:
            name, history = await asyncio.wait_for(loader(number), MEMORY_TIMEOUT_S)
        except Exception as exc:  # a slow or broken store must not delay or break the greeting
            self.log.warning("caller history unavailable: %s", exc)
            return
        if not self.context.caller_verified:
            # Caller ID can be faked: whose number it is and what those calls were about are theirs
            # only once the number is confirmed (check_verification_code returns the history then).
            return
        self.context.caller_name = name
        self.context.history = tuple(history)
        self.tool_context.caller_name = name
        if name or history:
            named = "by name" if name else "by number"
            self.log.info("known caller, %s (%d earlier call(s))", named, len(history))

    # The caller's side -------------------------------------------------------------------------------

    async def _pump_leg(self) -> None:
        receive, send_audio = self.leg.receive, self.engine.send_audio
        turns, remember, ended = self.turns, self.turns.inbound.frames.append, self._ended
        monotonic = time.monotonic
        while True:
            event = await receive()
            if isinstance(event, CallerAudio):
                if ended.is_set():
                    continue  # the call is over: nothing the caller says now starts an answer
                turns.input_bytes += event.size
                turns.last_input_at = now = monotonic()
                remember((now, event.payload))
                try:
                    await send_audio(event.payload)
                except Exception as exc:  # never lose the caller over one frame
                    self.log.warning("could not forward audio: %s", exc)
            elif isinstance(event, Keypress):
                self._keypress(event.digit)
            else:
                self.end(_LEG_ENDS[event.reason])
                return

    def _keypress(self, digit: str) -> None:
        # Keys can be a PIN or a card number: the digit itself is never logged. A code typed in is
        # kept for check_verification_code, never shown to the model.
        tools = self.tool_context
        tools.keypad = (tools.keypad + digit[:1])[-MAX_KEYPAD_DIGITS:]
        self.log.info("caller pressed a key")
        if tools.verification is not None and (digit == "#" or code_typed(tools.keypad)):
            self.closing.spawn(self.sequencer.request("keypad", note=KEYPAD_NOTE))

    # The model's side --------------------------------------------------------------------------------

    async def _setup(self, replacing: bool) -> SessionSetup:
        """What opens every model session: the greeting on the first; on a replacement (a drop, the
        time cap), the conversation so far and an answer if the caller is owed one, never both."""
        unfinished = b""
        if replacing:
            unfinished = self.turns.keep_lost_caller_audio()  # needs the old session's offsets
            self._forget_old_session()
        settings = self.deps.settings
        setup = SessionSetup(
            instructions=build_instructions(settings, self.context, tools=self.deps.tools),
            tools=self.deps.tools.declarations(owner=self.context.is_owner, owner_name=settings.owner_name),
        )
        if not replacing:
            setup.greeting = self.sequencer.tag(GREETING)  # the assistant speaks first
            return setup
        setup.history = self.journal.transcript.history()
        setup.unfinished_speech = unfinished
        # The caller is waiting, unless they are still speaking (the detector answers then) or
        # tools are still running (their delivery asks, so nothing is answered twice).
        if self.journal.transcript.awaiting_answer and not unfinished and not self.tools.busy:
            setup.answer = self.sequencer.tag(TURN)
        return setup

    def _forget_old_session(self) -> None:
        self.sequencer.session_replaced()
        self.turns.session_replaced()
        self.tools.session_replaced()

    async def _pump_engine(self) -> None:
        async for event in self.engine.events():
            try:
                await self._on_event(event)
            except Exception:
                # A bug in one handler must not end the call; the next event gets a fresh start.
                self.log.exception("error while handling %s", type(event).__name__)
            if type(event) is EngineLost:
                return

    async def _on_event(self, event: EngineEvent) -> None:
        if type(event) is AudioOut:
            await self.turns.play(event)
        elif type(event) is AssistantWords:
            self.journal.transcript_delta(event.item_id, event.delta)
        elif isinstance(event, SpeechStarted):
            await self._caller_began(event)
        elif isinstance(event, SpeechStopped):
            self.turns.speech_stopped(event)
            self.sequencer.caller_stopped()
        elif isinstance(event, CallerTranscribed):
            self.journal.caller_transcribed(event)
        elif isinstance(event, CallerInaudible):
            self.journal.caller_inaudible(event.item_id)
        elif isinstance(event, ResponseStarted):
            await self._response_started(event)
        elif isinstance(event, ResponseFinished):
            await self._response_finished(event)
        elif isinstance(event, EngineError):
            self._engine_error(event)
        elif isinstance(event, SessionReplaced):
            await self._session_replaced(event)
        elif isinstance(event, EngineLost) and not self.over:
            self.log.error("lost the assistant: %s", event.reason)
            self.end(EndReason.openai_unavailable)

    async def _caller_began(self, event: SpeechStarted) -> None:
        # A goodbye being said is taken back before the barge-in clears the playback (an empty
        # queue would let the hang-up through at once).
        taken_back = self.closing.take_back_goodbye()
        await self.turns.speech_started(event, self.sequencer.active)
        if taken_back:
            await self.closing.tell_model_the_call_goes_on()

    async def _response_started(self, event: ResponseStarted) -> None:
        started = self.sequencer.started(event)
        if started is Started.cancel:
            await self.engine.cancel_response(event.response_id)
            self.turns.mute(event.response_id)

    async def _response_finished(self, event: ResponseFinished) -> None:
        self.turns.response_over(event.response_id)
        if event.request == SUMMARY_REQUEST:
            self.journal.response_done(event, SUMMARY_REQUEST, spoken=False)
            self.closing.summary_arrived(event.text)
            return
        self.journal.response_done(event, self.sequencer.finished(event))
        if event.failure is not None:
            self.log.warning("response failed: %s", event.failure)
        if self.tools.response_finished(event):
            return  # the tools' delivery asks for the next response
        if event.status == "completed" and event.text_only and await self._ask_to_speak(event.response_id):
            return
        await self.sequencer.ask_wanted()

    async def _ask_to_speak(self, response_id: str) -> bool:
        """After a conversation replayed as text, models have answered in text only, which a caller
        never hears (openai-realtime-api-beta #72, livekit/agents #1143). The text is kept in the
        record; the model is asked once to say it."""
        if self.turns.asked_to_speak:
            self.log.warning("response %s was text only again; not asking a second time", response_id)
            return False
        self.turns.asked_to_speak = True
        self.log.warning("response %s came back as text only: asking for it to be spoken", response_id)
        await self.sequencer.request(
            SPEAK_AGAIN,
            note="Your last answer reached the caller as text only, which they cannot hear on the phone: "
            "say it to them now, out loud.",
        )
        return True

    def _engine_error(self, error: EngineError) -> None:
        self.stats.openai_errors[error.code] = self.stats.openai_errors.get(error.code, 0) + 1
        obs.REALTIME_ERRORS.labels(code=error.code).inc()
        if error.kind is ErrorKind.fatal:
            self.end(EndReason.openai_unavailable)
        elif error.request == SUMMARY_REQUEST:
            self.closing.summary_arrived("")
        elif error.kind is ErrorKind.refused:
            self.sequencer.refused(error)

    async def _session_replaced(self, event: SessionReplaced) -> None:
        await self.sequencer.after_replacement()
        if event.rotated:
            obs.REALTIME_ROTATIONS.inc()
            self.log.info(
                "moved to a fresh model session ahead of its time cap (%.2fs); conversation replayed",
                event.downtime_s,
            )
            return
        obs.REALTIME_RECONNECTS.inc()
        self.log.info(
            "model session re-established after %.2fs (close code %s); conversation replayed",
            event.downtime_s,
            event.close_code,
        )
