"""From an accepted Media Stream to a Call: `start`, admission, a call slot, then the call.

The model's connection is opened while Twilio is still sending `connected`/`start` (unless
PRECONNECT_LIMIT such connections exist: then once the stream is admitted), and belongs to this
scope: whatever way the stream ends (no `start`, a refused token, a finished call, a cancellation),
it is closed before `answer_stream` returns.

Who is calling comes from the store's record of Twilio's signed webhooks for this CallSid, never
from the stream: `start.customParameters` is attacker-controlled for anyone holding a captured
handshake, so only its token is read, to find and claim that record (once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from datetime import UTC, datetime

from starlette.websockets import WebSocket

from callassist import observability as obs
from callassist.call.call import Call
from callassist.call.deps import CallDeps, EndReason
from callassist.call.events import AssistantLost
from callassist.call.journal import CallJournal
from callassist.call.recorder import CallRecorder
from callassist.call.registry import StreamTicket
from callassist.engine.base import Engine
from callassist.engine.live_fallback import bill, build_engine, engine_model
from callassist.media.leg import MediaLeg
from callassist.media.pacing import PacedLeg
from callassist.media.recording import RECORDINGS, Recorder, RecordingLeg, delete_expired
from callassist.media.twilio import START_TIMEOUT_S, NoStart, TwilioMediaStream
from callassist.realtime.config import CallContext
from callassist.store.admission import Admission, Refusal
from callassist.store.db import describe_failure
from callassist.telephony.media_stream import Start

log = logging.getLogger(__name__)

ADMIT_TIMEOUT_S = 5.0  # reading and claiming the call's record in the store
ENGINE_CLOSE_S = 2.5  # longer than the socket's own close timeout, so a close is never cut half-way
_NO_START = {
    NoStart.disconnected: EndReason.twilio_disconnected,
    NoStart.hung_up: EndReason.caller_hung_up,
    NoStart.timed_out: EndReason.no_start,
    NoStart.evicted: EndReason.no_start,
}
# What Twilio reports for withheld numbers: shared by every such caller, so never an identity.
_WITHHELD = frozenset({"+266696687", "+86282452253", "+7378742833", "+2562533", "+8656696"})
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def caller_identity(number: str | None) -> str | None:
    """The caller's number if it can identify them, None for hidden or withheld numbers."""
    if not number or number in _WITHHELD or not _E164.match(number):
        return None
    return number


async def answer_stream(websocket: WebSocket, deps: CallDeps, ticket: StreamTicket) -> EndReason:
    """Run one accepted Media Stream to its end. Never raises for problems of either peer."""
    accepted = (datetime.now(UTC), time.monotonic())  # the caller waits from here
    context: dict[str, object] = {"call": "pending"}
    logger = obs.CallLogger(log, context)
    leg = TwilioMediaStream(websocket, logger)
    ticket.stream = leg
    engine = build_engine(deps.openai, deps.settings, deps.tools, logger)  # CALLASSIST_ENGINE
    preconnects = deps.preconnects
    preconnected = preconnects.take()
    connecting: asyncio.Task[None] | None = None
    if preconnected:
        connecting = asyncio.create_task(engine.connect(), name="engine-connect")
    try:
        start = await leg.wait_for_start()
        if not isinstance(start, Start):
            return await _no_start(leg, start, logger)
        context["call"] = start.call_sid
        ticket.start_received()
        admission = await _admit(leg, start, deps, logger)
        if isinstance(admission, EndReason):
            return admission
        settings = deps.settings
        recorder = Recorder(settings.data_dir / RECORDINGS, start.call_sid) if settings.record else None
        call_leg: MediaLeg = leg if recorder is None else RecordingLeg(leg, recorder)
        if settings.engine == "live":
            # GPT-Live can't be truncated: what Twilio holds is kept to a small lead instead, so a
            # barge-in stops the caller hearing it within ~200 ms (media/pacing.py).
            call_leg = PacedLeg(call_leg)
        call = _new_call(start, admission, call_leg, engine, deps, logger, accepted)
        bill(engine, call.journal.recorder, deps.prices, deps.settings, deps.events)  # GPT-Live's cost
        if not ticket.start_call(call):
            logger.warning("all %d lines busy: the stream is refused", deps.settings.max_calls)
            obs.STREAMS_REFUSED.labels(reason="busy").inc()
            deps.events.publish(AssistantLost(start.call_sid))  # /voice/stream-ended apologises
            await leg.close(code=1013)
            return EndReason.busy
        _record_start(call, start)
        contested = _end_if_claimed_elsewhere(call, admission, logger)
        if recorder is not None:
            recorder.start()
        if connecting is None:
            connecting = asyncio.create_task(engine.connect(), name="engine-connect")
        else:  # the connection opened ahead is the admitted call's now
            preconnected = False
            preconnects.give_back()
        try:
            return await call.run(connecting)
        finally:
            if contested is not None:
                contested.cancel()
            if recorder is not None:
                await _keep_recording(recorder, settings.record_retention_days, logger)
    finally:
        try:
            if connecting is not None:
                connecting.cancel()  # nothing if it is done
                await asyncio.wait({connecting})  # a cancellation of this task still goes through
                if not connecting.cancelled():
                    connecting.exception()  # retrieved: a failed connect is the call's to report
        finally:
            try:
                # A connect that finished (even one that raced its cancellation) left a socket.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(engine.close(), ENGINE_CLOSE_S)
                await leg.close()  # closed already unless the call's cleanup was cut short
            finally:
                if preconnected:
                    preconnects.give_back()


async def _no_start(
    leg: TwilioMediaStream, why: NoStart, logger: logging.LoggerAdapter[logging.Logger]
) -> EndReason:
    if why is NoStart.evicted:  # counted by the registry
        logger.info("closed a stream that sent no `start`, to make room for a newer one")
        await leg.close(code=1013)
    elif why is NoStart.timed_out:
        logger.warning("no `start` from Twilio within %gs", START_TIMEOUT_S)
        obs.STREAMS_REFUSED.labels(reason="no-start").inc()
        await leg.close(code=1008)
    else:
        obs.STREAMS_REFUSED.labels(reason="ended-before-start").inc()
    return _NO_START[why]


async def _admit(
    leg: TwilioMediaStream, start: Start, deps: CallDeps, logger: logging.LoggerAdapter[logging.Logger]
) -> Admission | EndReason:
    """The call's record, claimed for this stream; an EndReason (and the stream closed) if the token
    is not one our webhook issued for this CallSid, has expired, or its call had a stream already."""
    token = start.custom_parameters.get("token", "")
    try:
        async with asyncio.timeout(ADMIT_TIMEOUT_S):
            outcome = await deps.admissions.claim(start.call_sid, token, start.stream_sid)
    except Exception as exc:  # the store is down or too slow: the call can't be recorded either
        logger.error("stream refused: the call's record could not be read: %s", describe_failure(exc))
        obs.STREAMS_REFUSED.labels(reason="store").inc()
        deps.events.publish(AssistantLost(start.call_sid))  # the token was good: a real caller
        await leg.close(code=1011)
        return EndReason.rejected
    if isinstance(outcome, Refusal):
        if outcome is Refusal.token:
            logger.warning("stream refused: missing, invalid or expired call token")
        else:
            logger.warning("stream refused: this call's stream was opened already (a replay?)")
        obs.WEBHOOKS_REJECTED.labels(endpoint="stream", reason="token").inc()
        obs.STREAMS_REFUSED.labels(reason=outcome.value).inc()
        await leg.close(code=1008)
        return EndReason.rejected
    return outcome


def _end_if_claimed_elsewhere(
    call: Call, admission: Admission, logger: logging.LoggerAdapter[logging.Logger]
) -> asyncio.Task[None] | None:
    """A stream admitted from memory (store/admission.py) ends if its claim, stored in the
    background, finds another stream (another process's) had the call's record first."""
    storing = admission.claimed_elsewhere
    if storing is None:
        return None

    async def watch() -> None:
        if await asyncio.shield(storing):  # this watch's cancellation must not cancel the UPDATE
            logger.warning("stream ended: another stream claimed this call first (a replay?)")
            obs.STREAMS_REFUSED.labels(reason=Refusal.used.value).inc()
            call.end(EndReason.rejected)

    return asyncio.create_task(watch(), name="claim-watch")


def _new_call(
    start: Start,
    admission: Admission,
    leg: MediaLeg,
    engine: Engine,
    deps: CallDeps,
    logger: logging.LoggerAdapter[logging.Logger],
    accepted: tuple[datetime, float],
) -> Call:
    settings = deps.settings
    if start.encoding != "audio/x-mulaw" or start.sample_rate != 8000:
        logger.warning("unexpected media format %s/%s", start.encoding, start.sample_rate)
    caller = caller_identity(admission.caller_number)
    owner_phone = settings.owner_phone
    # Caller ID alone is easy to fake: the owner's own view needs the carrier's attestation
    # (SHAKEN/STIR level A, as Twilio's signed webhook gave it) unless the owner chose to trust it.
    is_owner = bool(
        owner_phone and caller == owner_phone and (admission.attested or settings.trust_owner_caller_id)
    )
    if owner_phone and caller == owner_phone and not is_owner:
        logger.warning("a call from the owner's number without caller-ID attestation: treated as a caller")
    context = CallContext(
        caller_number=caller,
        called_number=admission.called_number,
        is_owner=is_owner,
        owner_missed_call=admission.dial_status,
        # The number is the caller's if the carrier says so, in Twilio's signed webhook (a code
        # texted to it can confirm it later: tools/identity.py).
        caller_verified=is_owner or bool(caller and admission.attested),
        recorded=settings.record,
    )
    call_sid = start.call_sid
    recorder = CallRecorder(deps.records, call_sid, logger=logger)
    journal = CallJournal(
        recorder,
        deps.prices,
        model=settings.realtime_model,
        transcription_model=settings.transcription_model,
        logger=logger,
        events=deps.events,
    )
    return Call(call_sid, leg, engine, deps, context, journal, logger=logger, accepted=accepted)


def _record_start(call: Call, start: Start) -> None:
    context = call.context
    call.journal.recorder.call_started(
        started_at=call.started_at,
        stream_sid=start.stream_sid,
        caller_number=context.caller_number,
        called_number=context.called_number,
        caller_name=None,
        is_owner=context.is_owner,
        dial_status=context.owner_missed_call,
        model=engine_model(call.deps.settings),
    )
    call.log.info("stream started (caller %s)", obs.masked_number(context.caller_number))


async def _keep_recording(
    recorder: Recorder, retention_days: int, logger: logging.LoggerAdapter[logging.Logger]
) -> None:
    """The call's WAV assembled off the audio path; recordings past their retention deleted."""
    path = await recorder.finish()
    if path is not None:
        logger.info("call recorded (%s)", path.name)
    expired = await asyncio.to_thread(delete_expired, recorder.directory, retention_days)
    if expired:
        logger.info("deleted %d recording(s) older than %d days", expired, retention_days)
