"""Twilio-facing routes: the incoming-call webhook, the owner dial result, and the Media Stream."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request, Response, WebSocket
from starlette.datastructures import FormData

from callassist import observability as obs
from callassist.call.bridge import CallBridge
from callassist.telephony import twiml

if TYPE_CHECKING:
    from callassist.app import Services

log = logging.getLogger(__name__)
router = APIRouter()

XML = "application/xml"
# Twilio's DialCallStatus values after which the assistant picks up (the owner didn't).
OWNER_MISSED = frozenset({"busy", "no-answer", "failed"})
RESTARTING = "Sorry, the assistant is restarting. Please call again in a minute."
UNAVAILABLE = "Sorry, the assistant can't take your call right now. Please try again a little later."
BUSY = "Sorry, all lines are busy right now. Please call again in a few minutes."


def _services(request: Request | WebSocket) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def _signed_form(request: Request, endpoint: str) -> FormData:
    """The webhook's form, if Twilio signed it; otherwise the request ends here with a 403."""
    services = _services(request)
    form = await request.form()
    if not services.signatures.check_webhook(request, form):
        obs.WEBHOOKS_REJECTED.labels(endpoint=endpoint, reason="signature").inc()
        log.warning("refused %s: invalid or missing X-Twilio-Signature", request.url.path)
        raise HTTPException(status_code=403, detail="invalid signature")
    return form


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _assistant_twiml(services: Services, form: FormData, dial_status: str | None = None) -> str:
    call_sid = _field(form, "CallSid")
    parameters = {
        "callerNumber": _field(form, "From"),
        "calledNumber": _field(form, "To"),
        "token": services.stream_tokens.issue(call_sid),
    }
    if _field(form, "StirVerstat"):
        # SHAKEN/STIR: "TN-Validation-Passed-A" means the carrier vouches for the caller ID.
        parameters["stirVerstat"] = _field(form, "StirVerstat")
    if dial_status:
        parameters["dialStatus"] = dial_status
    after = services.settings.public_url + "/voice/stream-ended"
    return twiml.connect_assistant(services.settings.stream_url(), parameters, after)


@router.post("/voice/incoming")
async def incoming_call(request: Request) -> Response:
    form = await _signed_form(request, "incoming")
    services = _services(request)
    settings = services.settings
    caller = _field(form, "From")
    log.info("incoming call %s from %s", _field(form, "CallSid"), obs.masked_number(caller))
    if not services.registry.accepting:
        return Response(twiml.unavailable(RESTARTING), media_type=XML)
    if services.streams_open >= settings.max_calls:
        log.warning("all %d lines busy: call %s refused", settings.max_calls, _field(form, "CallSid"))
        return Response(twiml.unavailable(BUSY), media_type=XML)
    owner = settings.owner_phone
    if owner and settings.ring_owner_seconds > 0 and caller != owner:
        # Absolute: a relative action resolves against the host root, wrong if PUBLIC_BASE_URL has a path.
        document = twiml.ring_owner(
            owner, settings.ring_owner_seconds, settings.public_url + "/voice/dial-result"
        )
        return Response(document, media_type=XML)
    return Response(_assistant_twiml(services, form), media_type=XML)


@router.post("/voice/dial-result")
async def dial_result(request: Request) -> Response:
    form = await _signed_form(request, "dial-result")
    services = _services(request)
    status = _field(form, "DialCallStatus")
    log.info("owner dial for %s ended: %s", _field(form, "CallSid"), status or "unknown")
    if status not in OWNER_MISSED:
        # completed/answered: the owner talked to the caller; canceled: the caller is gone.
        return Response(twiml.hang_up(), media_type=XML)
    if not services.registry.accepting:
        return Response(twiml.unavailable(RESTARTING), media_type=XML)
    return Response(_assistant_twiml(services, form, dial_status=status), media_type=XML)


@router.post("/voice/stream-ended")
async def stream_ended(request: Request) -> Response:
    """Twilio asks what next once our stream has closed with the caller still on the line."""
    form = await _signed_form(request, "stream-ended")
    services = _services(request)
    if _field(form, "CallSid") in services.assistant_failures:
        return Response(twiml.unavailable(UNAVAILABLE), media_type=XML)
    return Response(twiml.hang_up(), media_type=XML)


@router.websocket("/voice/stream")
async def media_stream(websocket: WebSocket) -> None:
    services = _services(websocket)
    # The signature is checked before accept() and before any OpenAI connection is opened; the
    # per-call token (start.customParameters) once Twilio sends `start`, before OpenAI is configured.
    if not services.signatures.check_stream(websocket):
        obs.WEBHOOKS_REJECTED.labels(endpoint="stream", reason="signature").inc()
        log.warning("refused a Media Stream: invalid or missing X-Twilio-Signature")
        await websocket.close(code=1008)
        return
    if (
        not services.registry.accepting
        or services.deps is None
        or services.streams_open >= services.settings.max_calls
    ):
        await websocket.close(code=1013)  # try again later
        return
    await websocket.accept()
    services.streams_open += 1
    bridge = CallBridge(websocket, services.deps, on_started=services.registry.add)
    try:
        await bridge.run()
    finally:
        services.streams_open -= 1
        services.registry.remove(bridge)
