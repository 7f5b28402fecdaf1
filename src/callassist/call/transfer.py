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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from callassist.call.deps import CallDeps, EndReason
from callassist.call.journal import CallJournal
from callassist.call.phase import Phase
from callassist.media.hold import HOLD_ITEM, play_hold
from callassist.media.leg import MediaLeg
from callassist.realtime.config import CallContext

if TYPE_CHECKING:
    from callassist.call.closing import Closing
    from callassist.call.conversation import Conversation

ANNOUNCE_S = 8.0  # the longest the assistant's "I'm trying Dana" may take before the hold starts
RING_LIMIT_S = 40.0  # from the ring to the owner's answer: the caller is not kept on hold longer
MAX_ATTEMPTS = 2  # per call: a caller can't keep ringing the owner
TOOK_IT = "1"
BACK = "transfer-back"  # the purpose of the response that tells the caller the owner can't pick up


class TransferFailed(Exception):
    """Twilio refused or couldn't be reached (the text is for the log: no caller data in it)."""


class OwnerLine(Protocol):
    """How the owner is rung and the caller moved to them (Twilio's REST API in production:
    telephony/transfer.py; a stand-in in tests)."""

    async def ring(self, call_sid: str, called_number: str | None, whisper: str) -> str:
        """Ring the owner's phone with `whisper` and a key to take the call; the owner leg's id."""
        ...

    async def put_through(self, call_sid: str) -> None:
        """Move the caller's call to the owner (who pressed 1). TransferFailed if Twilio refused
        (the caller hung up meanwhile)."""
        ...

    async def hang_up(self, leg_sid: str) -> None:
        """End the owner's leg (ringing or answered)."""
        ...


class Outcome(StrEnum):
    """How the ring ended; all but `connected` bring the caller back to the assistant."""

    connected = "connected"
    declined = "declined"
    no_answer = "no-answer"
    busy = "busy"
    failed = "failed"
    caller_hung_up = "caller-hung-up"


# What the assistant is told when the caller is back, by outcome.
_WHY = {
    Outcome.declined: "can't take the call right now",
    Outcome.no_answer: "didn't answer",
    Outcome.busy: "is on another call",
    Outcome.failed: "couldn't be reached (the line failed)",
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


class TheCall(Protocol):
    """What a transfer needs of its call (call.Call)."""

    call_sid: str
    deps: CallDeps
    leg: MediaLeg
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
        self._decision: asyncio.Future[Outcome] | None = None
        self._leg_sid: str | None = None
        self._segments = 0  # segments recorded so far (0: a call without a transfer has none)
        self._asked = 0  # responses created before the transfer began (the line comes after them)
        self._hold_task: asyncio.Task[None] | None = None

    @property
    def under_way(self) -> bool:
        return self._decision is not None and not self._decision.done()

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
        self._decision = asyncio.get_running_loop().create_future()
        if self._segments == 0:
            self._segment("assistant", started_at=call.started_at)
        self._segment_ended(None)
        self._segment("hold")  # from the ring on: the caller holds once the assistant's line is heard
        self._asked = call.conversation.sequencer.created
        call.closing.spawn(self._run(_sayable(summary)))
        return None

    async def _run(self, summary: str) -> None:
        call = self._call
        assert self._decision is not None and self._line is not None
        decision = self._decision
        whisper = (
            f"Call from {_spoken_number(call.context.caller_number)}. {summary} "
            "Press 1 to take the call, or 2 to let the assistant take a message."
        )
        call.log.info("transfer: ringing the owner")
        ringing = asyncio.create_task(self._ring(whisper), name="transfer-ring")
        hold: asyncio.Task[None] | None = None
        announcing = asyncio.create_task(self._announced(), name="transfer-announce")
        try:
            # The hold starts once the assistant's line was heard, unless the ring ended first.
            first: set[asyncio.Future[Any]] = {announcing, decision}
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if call.over:
                return
            if not decision.done():
                hold = self._hold()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(decision), RING_LIMIT_S)
            if not decision.done():
                call.log.info("transfer: no answer within %.0fs", RING_LIMIT_S)
                decision.set_result(Outcome.no_answer)
            outcome = decision.result()
        finally:
            announcing.cancel()
            if not ringing.done():
                ringing.cancel()
            if not decision.done():
                decision.set_result(Outcome.caller_hung_up)
        if outcome is Outcome.connected:
            return  # the call ends (EndReason.transferred): its cleanup stops the hold
        if call.over or outcome is Outcome.caller_hung_up:
            return  # call_ending() hung the owner's leg up
        if self._leg_sid is not None:
            with contextlib.suppress(Exception):
                await self._line.hang_up(self._leg_sid)
        await self._back(hold, outcome)

    async def _ring(self, whisper: str) -> None:
        call = self._call
        assert self._line is not None and self._decision is not None
        try:
            self._leg_sid = await self._line.ring(call.call_sid, call.context.called_number, whisper)
        except Exception as exc:
            call.log.warning("transfer: could not ring the owner: %s", _describe(exc))
            if not self._decision.done():
                self._decision.set_result(Outcome.failed)

    async def _announced(self) -> None:
        """Until the assistant's line ("I'm trying Dana"), the response after the tool's output or
        the keypad's note, has been heard (bounded)."""
        call = self._call
        deadline = time.monotonic() + ANNOUNCE_S
        await call.conversation.sequencer.wait_for_answer(self._asked, ANNOUNCE_S)
        await call.leg.wait_drained(max(0.0, deadline - time.monotonic()))

    def _hold(self) -> asyncio.Task[None]:
        call = self._call
        self.holding = True
        call.enter(Phase.on_hold)
        call.log.info("transfer: the caller is on hold")
        self._hold_task = call.closing.spawn(play_hold(call.leg))
        return self._hold_task

    async def _back(self, hold: asyncio.Task[None] | None, outcome: Outcome) -> None:
        """The owner didn't take it: the caller is back with the assistant, which is told why."""
        call = self._call
        if hold is not None:
            hold.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hold
            await call.leg.clear(barge_in=False)  # the hold audio queued at Twilio stops now
        self._segment_ended(outcome)
        self._segment("assistant")
        self.holding = False
        if call.phase is Phase.on_hold:
            call.enter(Phase.live)
        call.log.info("transfer: the caller is back with the assistant (%s)", outcome)
        owner = call.deps.settings.owner_name
        note = (
            f"{owner} {_WHY.get(outcome, 'could not be reached')}, so the call was not put through. "
            f"The caller is back with you: tell them {owner} can't pick up right now and offer to "
            "take a message."
        )
        await call.conversation.sequencer.request(BACK, note=note)

    # What Twilio says about the owner's leg (telephony/transfer.py) -----------------------------------

    async def owner_pressed(self, digits: str) -> bool:
        """The owner's key on the whisper. True when the caller was put through (1, and Twilio moved
        the caller's call), False otherwise (the owner's leg is then told the caller is gone or
        simply hung up)."""
        decision = self._decision
        if decision is None or decision.done():
            return False
        if digits != TOOK_IT:
            self._call.log.info("transfer: the owner declined")
            decision.set_result(Outcome.declined)
            return False
        assert self._line is not None
        try:
            await self._line.put_through(self._call.call_sid)
        except Exception as exc:
            self._call.log.warning("transfer: could not put the caller through: %s", _describe(exc))
            if not decision.done():
                decision.set_result(Outcome.failed)
            return False
        if decision.done():  # the caller hung up, or the ring limit passed, meanwhile
            return False
        self._call.log.info("transfer: the owner took the call")
        decision.set_result(Outcome.connected)
        self._segment_ended(Outcome.connected)
        self._segment("owner")
        self.holding = False
        self._call.end(EndReason.transferred)
        return True

    def is_owner_leg(self, leg_sid: str) -> bool:
        """`leg_sid` is the owner's leg this transfer rang (or one being rung: Twilio may answer
        before its answer to the ring arrives)."""
        if self._leg_sid is not None:
            return leg_sid == self._leg_sid
        return self.under_way

    def owner_leg_ended(self, status: str) -> None:
        """Twilio's final status of the owner's leg; decides the transfer only if no key did."""
        decision = self._decision
        if decision is not None and not decision.done():
            decision.set_result(_LEG_STATUS.get(status, Outcome.failed))

    def call_ending(self) -> None:
        """The call is ending (the caller hung up on hold, the server stops): the hold stops, the
        owner's phone stops ringing, and the record's last segment is closed."""
        if self._hold_task is not None:
            self._hold_task.cancel()
        decision = self._decision
        ringing = decision is not None and not decision.done()
        if decision is not None and not decision.done():
            decision.set_result(Outcome.caller_hung_up)
            if self._leg_sid is not None and self._line is not None:
                _detach(self._line.hang_up(self._leg_sid))
        if self._segments and self._call.end_reason is not EndReason.transferred:
            self._segment_ended(Outcome.caller_hung_up if ringing else None)
        self.holding = False

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


_detached: set[asyncio.Task[None]] = set()


def _detach(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run `coroutine` past the end of the call (the owner's phone must stop ringing even so)."""

    async def quietly() -> None:
        with contextlib.suppress(Exception):
            await coroutine

    task = asyncio.create_task(quietly())
    _detached.add(task)
    task.add_done_callback(_detached.discard)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__


__all__ = ["HOLD_ITEM", "Outcome", "OwnerLine", "Transfer", "TransferFailed"]
