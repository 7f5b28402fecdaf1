"""Warm transfer: the caller is put through to the owner, if the owner takes the call.

    transfer_to_owner (or the caller pressing 0)
      -> the owner's phone rings at once (OwnerLine.ring: a whisper with the call's one-sentence
         summary, and "press 1 to take it")
      -> the assistant's short line ("I'm trying Dana now") is heard, then the caller is on hold:
         hold audio plays, the caller's audio no longer reaches the model
      -> the owner presses 1: the caller's call is moved to the owner (OwnerLine.put_through) and
         the assistant's part of the call ends (EndReason.transferred; summary, record and notices
         as for any call)
      -> anything else (2, no key, voicemail, no answer, busy, a failure, RING_LIMIT_S): the hold
         stops and the caller is back with the assistant in the same session, which is told why
         and offers to take a message. No second greeting: nothing of the conversation was lost.

What Twilio tells us about the owner's leg arrives on webhooks (telephony/transfer.py), which find
the live call and call `owner_pressed` / `owner_leg_ended`. The record gets the call's segments
(assistant, hold, owner or assistant again) through the recorder.

One reason it is a little over 400 lines: a transfer's races (the owner's key, Twilio's answers and
callbacks, the caller hanging up, a goodbye, the ring limit) all act on one attempt's state; split,
each rule would be read without the others it guards against.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from callassist.call.deps import CallDeps, EndReason, OwnerLine, TransferFailed
from callassist.call.journal import CallJournal
from callassist.call.phase import Phase
from callassist.engine.base import Engine
from callassist.media.hold import HOLD_ITEM, play_hold
from callassist.media.leg import MediaLeg
from callassist.realtime.config import CallContext

if TYPE_CHECKING:
    from callassist.call.closing import Closing
    from callassist.call.conversation import Conversation

ANNOUNCE_S = 8.0  # the longest the assistant's "I'm trying Dana" may take before the hold starts
# From the ring to the owner's key: the ring (telephony/owner_line.py RING_SECONDS), the whisper
# (the number digit by digit and a sentence) and the key wait fit in it; the caller is never on hold
# longer.
RING_LIMIT_S = 50.0
PUT_THROUGH_S = 5.0  # Twilio's answer to moving the caller (its webhook waits 15 s for ours)
HANG_UP_WAIT_S = 2.0  # at the end of a call, how long its owner's-leg hang-ups may take
MAX_ATTEMPTS = 2  # per call: a caller can't keep ringing the owner
TOOK_IT = "1"
BACK = "transfer-back"  # the purpose of the response that tells the caller the owner can't pick up


class Outcome(StrEnum):
    """How the ring ended; all but `connected` bring the caller back to the assistant, unless the
    call itself is ending."""

    connected = "connected"
    declined = "declined"
    no_answer = "no-answer"
    busy = "busy"
    failed = "failed"
    not_put_through = "not-put-through"  # the owner pressed 1, Twilio couldn't move the call
    caller_hung_up = "caller-hung-up"
    call_ending = "call-ending"  # a goodbye began, or the server stops


class Pressed(StrEnum):
    """What the owner's key led to, for what their leg hears next (telephony/transfer.py)."""

    connected = "connected"  # join the caller in the conference
    declined = "declined"
    back = "back"  # too late: the caller is back with the assistant
    gone = "gone"  # the caller has hung up


# What the assistant is told when the caller is back, by outcome.
_WHY = {
    Outcome.declined: "can't take the call right now",
    Outcome.no_answer: "didn't answer",
    Outcome.busy: "is on another call",
    Outcome.failed: "couldn't be reached (the line failed)",
    Outcome.not_put_through: "answered, but the call could not be put through",
}
# Twilio's final CallStatus for the owner's leg (status callback) -> outcome, when no key decided it.
# `completed` without a 1: answered by a voicemail, or hung up on the whisper.
_LEG_STATUS = {
    "completed": Outcome.no_answer,
    "no-answer": Outcome.no_answer,
    "busy": Outcome.busy,
    "failed": Outcome.failed,
    "canceled": Outcome.no_answer,
}


@dataclass(eq=False)
class _Attempt:
    """One ring of the owner."""

    decision: asyncio.Future[Outcome]
    started: float
    leg_sid: str | None = None
    ring: asyncio.Task[None] | None = None
    putting_through: asyncio.Future[bool] | None = None  # the owner pressed 1: Twilio is moving the call
    leg_ended: bool = False  # hung up by us (or asked to be)

    def decide(self, outcome: Outcome) -> None:
        """Decide, unless decided already or a 1 is being put through (that decides itself)."""
        if not self.decision.done() and self.putting_through is None:
            self.decision.set_result(outcome)


class TheCall(Protocol):
    """What a transfer needs of its call (call.Call)."""

    call_sid: str
    deps: CallDeps
    leg: MediaLeg
    engine: Engine
    journal: CallJournal
    context: CallContext
    conversation: Conversation
    closing: Closing
    end_reason: EndReason | None
    started_at: datetime
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]

    @property
    def phase(self) -> Phase: ...

    @property
    def over(self) -> bool: ...

    def enter(self, phase: Phase) -> None: ...

    def end(self, reason: EndReason) -> None: ...


class Transfer:
    def __init__(self, call: TheCall, owner_line: OwnerLine | None) -> None:
        self._call = call
        self._line = owner_line
        self.attempts = 0
        self.holding = False  # the caller is on hold: their audio doesn't reach the model
        self._attempt: _Attempt | None = None
        self._earlier_legs: set[str] = set()  # owner legs of earlier attempts (late callbacks)
        self._segments = 0  # segments recorded so far (0: a call without a transfer has none)
        self._asked = 0  # responses created before the transfer began (the line comes after them)
        self._hold_task: asyncio.Task[None] | None = None
        self._hang_ups: set[asyncio.Task[None]] = set()

    @property
    def under_way(self) -> bool:
        return self._attempt is not None and not self._attempt.decision.done()

    # Starting ------------------------------------------------------------------------------------------

    def start(self, summary: str) -> str | None:
        """Begin a transfer with `summary` for the whisper; None once started, else why not (for the
        model to relay)."""
        call = self._call
        owner = call.deps.settings.owner_name
        if self._line is None or not call.deps.settings.transfer_possible or call.context.is_owner:
            return f"The call can't be put through to {owner}: offer to take a message."
        if call.over or call.phase is not Phase.live:
            return "The call is ending."
        if self.under_way:
            return f"You are already trying {owner}: wait."
        if self.attempts >= MAX_ATTEMPTS:
            return f"{owner} couldn't be reached just now: don't try again; offer to take a message."
        self.attempts += 1
        if self._attempt is not None and self._attempt.leg_sid is not None:
            self._earlier_legs.add(self._attempt.leg_sid)
        attempt = _Attempt(asyncio.get_running_loop().create_future(), time.monotonic())
        self._attempt = attempt
        if self._segments == 0:
            self._segment("assistant", started_at=call.started_at)
        self._segment_ended(None)
        self._segment("hold")  # from the ring on: the caller holds once the assistant's line is heard
        self._asked = call.conversation.sequencer.created
        call.closing.spawn(self._run(attempt, _sayable(summary)))
        return None

    async def _run(self, attempt: _Attempt, summary: str) -> None:
        call = self._call
        decision = attempt.decision
        whisper = (
            f"Call from {_spoken_number(call.context.caller_number)}. {summary} "
            "Press 1 to take the call, or 2 to let the assistant take a message."
        )
        call.log.info("transfer: ringing the owner")
        # Never cancelled: once Twilio created the owner's call, its leg must be known to be ended.
        attempt.ring = asyncio.create_task(self._ring(attempt, whisper), name="transfer-ring")
        announcing = asyncio.create_task(self._announced(), name="transfer-announce")
        try:
            # The hold starts once the assistant's line was heard, unless the ring ended first.
            first: set[asyncio.Future[Any]] = {announcing, decision}
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if not decision.done():
                if call.phase is Phase.live and not call.over:
                    await self._hold()
                else:  # a goodbye began during the assistant's line
                    attempt.decide(Outcome.call_ending)
            remaining = RING_LIMIT_S - (time.monotonic() - attempt.started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(decision), max(0.0, remaining))
            if not decision.done() and attempt.putting_through is not None:
                # The owner pressed 1 at the last moment: Twilio is moving the caller; that decides.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(decision), PUT_THROUGH_S + 1)
            if not decision.done():
                call.log.info("transfer: no answer within %.0fs", RING_LIMIT_S)
                attempt.decide(Outcome.no_answer)
        finally:
            announcing.cancel()
            if not decision.done():  # cancelled with the call
                decision.set_result(Outcome.caller_hung_up)
        outcome = decision.result()
        if outcome is Outcome.connected:
            return  # the call ends (EndReason.transferred): its cleanup stops the hold
        self._end_owner_leg(attempt)
        if outcome in (Outcome.caller_hung_up, Outcome.call_ending) or call.over:
            await self._stop_hold()
            return
        await self._back(outcome)

    async def _ring(self, attempt: _Attempt, whisper: str) -> None:
        call = self._call
        assert self._line is not None
        try:
            attempt.leg_sid = await self._line.ring(call.call_sid, call.context.called_number, whisper)
        except Exception as exc:
            call.log.warning("transfer: could not ring the owner: %s", _describe(exc))
            attempt.decide(Outcome.failed)
            return
        if attempt.leg_ended:  # decided while Twilio was creating the leg: end it now
            attempt.leg_ended = False
            self._end_owner_leg(attempt)

    async def _announced(self) -> None:
        """Until the assistant's line ("I'm trying Dana"), the response after the tool's output or
        the keypad's note, has been heard (bounded)."""
        call = self._call
        deadline = time.monotonic() + ANNOUNCE_S
        await call.conversation.sequencer.wait_for_answer(self._asked, ANNOUNCE_S)
        await call.leg.wait_drained(max(0.0, deadline - time.monotonic()))

    async def _hold(self) -> None:
        call = self._call
        self.holding = True
        call.enter(Phase.on_hold)
        call.log.info("transfer: the caller is on hold")
        self._hold_task = call.closing.spawn(play_hold(call.leg))
        await call.engine.hold(True)

    async def _stop_hold(self) -> None:
        hold, self._hold_task = self._hold_task, None
        self.holding = False
        if hold is None:
            return
        hold.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hold
        if self._call.leg.lost is None:
            await self._call.leg.clear(barge_in=False)  # the hold audio queued at Twilio stops now
        if not self._call.over:
            await self._call.engine.hold(False)

    async def _back(self, outcome: Outcome) -> None:
        """The owner didn't take it: the caller is back with the assistant, which is told why."""
        call = self._call
        await self._stop_hold()
        self._segment_ended(outcome)
        self._segment("assistant")
        if call.phase is Phase.on_hold:
            call.enter(Phase.live)
        if call.phase is not Phase.live:
            return  # a goodbye is under way
        call.log.info("transfer: the caller is back with the assistant (%s)", outcome)
        owner = call.deps.settings.owner_name
        note = (
            f"{owner} {_WHY.get(outcome, 'could not be reached')}, so the call was not put through. "
            f"The caller is back with you: tell them {owner} can't pick up right now and offer to "
            "take a message."
        )
        await call.conversation.sequencer.request(BACK, note=note)

    def _end_owner_leg(self, attempt: _Attempt) -> None:
        """Hang the owner's leg up (ringing, or answered and not taken), once: now, or as soon as
        Twilio tells us which leg it is."""
        if attempt.leg_ended or self._line is None:
            return
        attempt.leg_ended = True
        if attempt.leg_sid is None:
            return  # _ring hangs it up when the leg's sid comes
        task = asyncio.create_task(self._hang_up(attempt.leg_sid), name="transfer-hang-up")
        self._hang_ups.add(task)
        task.add_done_callback(self._hang_ups.discard)

    async def _hang_up(self, leg_sid: str) -> None:
        assert self._line is not None
        try:
            await self._line.hang_up(leg_sid)
        except Exception as exc:
            self._call.log.info("transfer: the owner's leg could not be ended: %s", _describe(exc))

    # What Twilio says about the owner's leg (telephony/transfer.py) -----------------------------------

    async def owner_pressed(self, digits: str) -> Pressed:
        """The owner's key on the whisper: 1 moves the caller's call to the owner (the owner's leg
        then joins them), anything else declines. A repeated request (Twilio retries a webhook that
        was slow) gets the same answer."""
        attempt = self._attempt
        call = self._call
        if attempt is None:
            return Pressed.gone
        if attempt.putting_through is not None:  # a retry while Twilio moves the call
            return Pressed.connected if await asyncio.shield(attempt.putting_through) else self._too_late()
        if attempt.decision.done():
            return Pressed.connected if attempt.decision.result() is Outcome.connected else self._too_late()
        if digits != TOOK_IT:
            call.log.info("transfer: the owner declined")
            attempt.decide(Outcome.declined)
            return Pressed.declined
        assert self._line is not None
        putting_through = attempt.putting_through = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(PUT_THROUGH_S):
                await self._line.put_through(call.call_sid)
        except Exception as exc:
            call.log.warning("transfer: could not put the caller through: %s", _describe(exc))
            putting_through.set_result(False)
            if not attempt.decision.done():
                attempt.decision.set_result(Outcome.not_put_through)
            return self._too_late()
        putting_through.set_result(True)
        call.log.info("transfer: the owner took the call")
        if not attempt.decision.done():
            attempt.decision.set_result(Outcome.connected)
        self._segment_ended(Outcome.connected)
        self._segment("owner")
        self.holding = False
        call.end(EndReason.transferred)
        return Pressed.connected

    def _too_late(self) -> Pressed:
        return Pressed.gone if self._call.over else Pressed.back

    async def leg_end_reason(self, default: EndReason) -> EndReason:
        """Why the call ends now that the caller's stream closed: Twilio closes it when it moves
        the caller to the owner, possibly before it answered us; that is a transfer, not a
        hang-up."""
        attempt = self._attempt
        if attempt is None or attempt.putting_through is None:
            return default
        with contextlib.suppress(TimeoutError):
            if await asyncio.wait_for(asyncio.shield(attempt.putting_through), PUT_THROUGH_S + 1):
                return EndReason.transferred
        return default

    def is_owner_leg(self, leg_sid: str) -> bool:
        """`leg_sid` is the owner's leg being rung now (or one being created: Twilio may call back
        before its answer to the ring arrives); never one of an earlier attempt."""
        attempt = self._attempt
        if attempt is None or leg_sid in self._earlier_legs:
            return False
        if attempt.leg_sid is not None:
            return leg_sid == attempt.leg_sid
        return not attempt.decision.done()

    def owner_leg_ended(self, status: str) -> None:
        """Twilio's final status of the owner's leg; decides the transfer only if no key did."""
        if self._attempt is not None:
            self._attempt.leg_ended = True  # nothing to hang up any more
            self._attempt.decide(_LEG_STATUS.get(status, Outcome.failed))

    def abandon(self) -> None:
        """A goodbye begins (end_call, the time limit, the server stopping): no hold audio over it,
        and the owner's phone stops ringing."""
        attempt = self._attempt
        if attempt is not None:
            attempt.decide(Outcome.call_ending)
        if self._hold_task is not None:
            self._call.closing.spawn(self._stop_hold())

    async def call_ending(self) -> None:
        """The call is ending: the hold stops, the owner's phone stops ringing (waited for, briefly),
        and the record's last segment is closed."""
        call = self._call
        if self._hold_task is not None:
            self._hold_task.cancel()
            self._hold_task = None
        self.holding = False
        attempt = self._attempt
        if attempt is None:
            return
        ringing = not attempt.decision.done()
        attempt.decide(
            Outcome.caller_hung_up if call.end_reason is EndReason.caller_hung_up else Outcome.call_ending
        )
        if attempt.decision.done() and attempt.decision.result() is not Outcome.connected:
            self._end_owner_leg(attempt)
        if call.end_reason is not EndReason.transferred:
            self._segment_ended(attempt.decision.result() if ringing and attempt.decision.done() else None)
        pending = set(self._hang_ups) | (
            {attempt.ring} if attempt.ring and not attempt.ring.done() else set()
        )
        if pending:
            await asyncio.wait(pending, timeout=HANG_UP_WAIT_S)
            if self._hang_ups:
                await asyncio.wait(set(self._hang_ups), timeout=HANG_UP_WAIT_S)

    # The record's segments ------------------------------------------------------------------------------

    def _segment(self, kind: str, started_at: datetime | None = None) -> None:
        self._segments += 1
        self._call.journal.recorder.segment_started(self._segments, kind, started_at or datetime.now(UTC))

    def _segment_ended(self, outcome: Outcome | None) -> None:
        if self._segments:
            self._call.journal.recorder.segment_ended(
                self._segments, datetime.now(UTC), outcome.value if outcome else None
            )


def _sayable(text: str) -> str:
    """The model's summary for <Say>: one line, none of the characters markup is made of (the TwiML
    builder escapes XML; this keeps SSML-looking text out too), ending with a full stop."""
    flat = " ".join(re.sub(r"[<>&{}\[\]\\\"]", " ", text).split())
    return flat if flat.endswith((".", "!", "?")) else flat + "."


def _spoken_number(number: str | None) -> str:
    """A phone number the way a whisper says it: digit by digit."""
    digits = [char for char in number or "" if char.isdigit()]
    return " ".join(digits) if digits else "a hidden number"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__


__all__ = ["HOLD_ITEM", "Outcome", "OwnerLine", "Pressed", "Transfer", "TransferFailed"]
