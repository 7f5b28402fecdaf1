"""Warm transfer, Twilio's requests: what the owner pressed, how the owner's leg ended, and the
end of the call with the owner.

The call core decides (call/transfer.py); the owner is rung and the caller moved through Twilio's
REST API (telephony/owner_line.py). Here:

- `/voice/transfer/choice`: the owner's key. 1: the caller's call is updated with new TwiML
  (https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource), which ends its Media
  Stream, and joins a conference named after it; the owner's leg joins the same one (both end it on
  leaving). Anything else: the owner's leg hangs up and the caller is back with the assistant.
- `/voice/transfer/ended`: the caller's `<Dial action>` once they left the conference: the owner's
  segment of the call record ends there.

Every request is signed by Twilio and checked; the caller's CallSid travels in the signed URL.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import update

from callassist.call.transfer import Pressed
from callassist.runtime import Runtime, RuntimeDep
from callassist.store.db import describe_failure
from callassist.store.models import CallSegmentRow
from callassist.telephony import forms, twiml
from callassist.telephony.owner_line import CHOICE_PATH, ENDED_PATH, STATUS_PATH, room
from callassist.telephony.webhooks import _field, _signed_form

log = logging.getLogger(__name__)
router = APIRouter()

XML = "application/xml"
CALLER_GONE = "Sorry, the caller has hung up."
CALLER_BACK = "Too late: the caller is back with the assistant, who will take a message."


def _parent(request: Request) -> str:
    parent = request.query_params.get("parent", "")
    if not forms.CALL_SID.fullmatch(parent):
        raise HTTPException(status_code=400, detail="malformed Twilio request: parent")
    return parent


@router.post(CHOICE_PATH)
async def transfer_choice(request: Request, runtime: RuntimeDep) -> Response:
    """The owner's key after the whisper: 1 puts the caller through, anything else declines."""
    form = await _signed_form(request, runtime, "transfer-choice")
    parent = _parent(request)
    digits = _field(form, "Digits")
    call = runtime.registry.find(parent)
    if call is None:
        log.info("call %s: the owner answered the transfer, but the call is over", parent)
        return Response(twiml.unavailable(CALLER_GONE), media_type=XML)
    if not call.transfer.is_owner_leg(_field(form, "CallSid")):
        log.warning("call %s: a transfer key from a leg we did not ring; ignored", parent)
        return Response(twiml.hang_up(), media_type=XML)
    pressed = await call.transfer.owner_pressed(digits)
    if pressed is Pressed.connected:
        return Response(twiml.conference(room(parent)), media_type=XML)
    if pressed is Pressed.gone:
        return Response(twiml.unavailable(CALLER_GONE), media_type=XML)
    if pressed is Pressed.back:
        return Response(twiml.unavailable(CALLER_BACK), media_type=XML)
    return Response(twiml.hang_up(), media_type=XML)


@router.post(STATUS_PATH)
async def transfer_status(request: Request, runtime: RuntimeDep) -> Response:
    """The owner's leg ended (its final CallStatus): decides the transfer if no key did."""
    form = await _signed_form(request, runtime, "transfer-status")
    parent = _parent(request)
    call = runtime.registry.find(parent)
    if call is not None and call.transfer.is_owner_leg(_field(form, "CallSid")):
        call.transfer.owner_leg_ended(_field(form, "CallStatus"))
    return Response(status_code=204)


@router.post(ENDED_PATH)
async def transfer_ended(request: Request, runtime: RuntimeDep) -> Response:
    """The caller left the conference with the owner: the owner's segment of the record ends."""
    await _signed_form(request, runtime, "transfer-ended")
    parent = _parent(request)
    await _end_owner_segment(runtime, parent)
    return Response(twiml.hang_up(), media_type=XML)


async def _end_owner_segment(runtime: Runtime, call_sid: str) -> None:
    ended_at = datetime.now(UTC)
    try:
        for attempt in range(2):
            async with runtime.database.session() as session:
                result = await session.execute(
                    update(CallSegmentRow)
                    .where(
                        CallSegmentRow.call_sid == call_sid,
                        CallSegmentRow.kind == "owner",
                        CallSegmentRow.ended_at.is_(None),
                    )
                    .values(ended_at=ended_at, outcome="completed")
                )
            if getattr(result, "rowcount", 1) or attempt:
                return
            # A short talk: the segment's row may still be queued at the record writer.
            await runtime.records.flushed(2.0)
    except Exception as exc:  # the caller is gone either way: Twilio gets its <Hangup>
        log.warning("call %s: could not end the owner's segment: %s", call_sid, describe_failure(exc))
