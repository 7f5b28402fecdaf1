"""Twilio-facing routes: the incoming-call webhook, the owner dial result, the Media Stream and
its status callback."""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, HTTPException, Request, Response, WebSocket
from starlette.datastructures import FormData

from callassist import observability as obs
from callassist.call.opening import answer_stream
from callassist.runtime import Runtime, RuntimeDep
from callassist.store import screening
from callassist.store.admission import Spent, WebhookFacts
from callassist.store.db import describe_failure
from callassist.telephony import forms, twiml

log = logging.getLogger(__name__)
router = APIRouter()

XML = "application/xml"
# Twilio's DialCallStatus values after which the assistant picks up (the owner didn't).
OWNER_MISSED = frozenset({"busy", "no-answer", "failed"})
RESTARTING = "Sorry, the assistant is restarting. Please call again in a minute."
UNAVAILABLE = "Sorry, the assistant can't take your call right now. Please try again a little later."
RECORDED = "This call is recorded."
BUSY = "Sorry, all lines are busy right now. Please call again in a few minutes."
# A webhook for a call whose stream was opened already: Twilio never asks twice (it is in <Connect>
# until the stream closes, then asks /voice/stream-ended), so this is a replay. A polite 200 rather
# than a 4xx: were it ever Twilio, a caller would hear this instead of Twilio's "application error".
ALREADY_CONNECTED = "Sorry, this call can't be connected to the assistant again. Please call back."
# <Stream statusCallback> events (Twilio's TwiML <Stream> page: StreamEvent, with StreamError on errors).
STREAM_ERROR = "stream-error"
_NUMBER_LIKE = re.compile(r"\+?\d[\d ().-]{5,}\d")
# The ring the owner confirms: how long the whisper waits for a key, how long a VIP rings when
# ringing is otherwise off, and what the assistant is told when the owner pressed another key.
SCREEN_KEY_SECONDS = 6
VIP_RING_SECONDS = 20
DECLINED = "declined"
ATTESTED = "TN-Validation-Passed-A"  # SHAKEN/STIR full attestation: the caller ID is the caller's


async def _signed_form(request: Request, runtime: Runtime, endpoint: str) -> FormData:
    """The webhook's form, if Twilio signed it and it is a form Twilio sends; otherwise the request
    ends here: 403 without a valid signature, 400 for a signed form that is not Twilio's as sent
    (no CallSid, a missing standard key, a malformed value: see `callassist.telephony.forms`, on
    re-split signed forms). Nothing, least of all a stream token, is issued for either."""
    form = await request.form()
    if not runtime.signatures.check_webhook(request, form):
        obs.WEBHOOKS_REJECTED.labels(endpoint=endpoint, reason="signature").inc()
        log.warning("refused %s: invalid or missing X-Twilio-Signature", request.url.path)
        raise HTTPException(status_code=403, detail="invalid signature")
    why = forms.problem(
        form,
        stream_status=endpoint == "stream-status",
        account_sid=runtime.settings.twilio_account_sid,
    )
    if why is not None:
        obs.WEBHOOKS_REJECTED.labels(endpoint=endpoint, reason=why).inc()
        log.warning("refused %s: a signed form Twilio does not send (%s)", request.url.path, why)
        raise HTTPException(status_code=400, detail=f"malformed Twilio request: {why}")
    return form


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _facts(form: FormData, dial_status: str | None = None) -> WebhookFacts:
    """What Twilio's signed webhook says about the call; the stream's identity comes from here."""
    return WebhookFacts(
        caller_number=_field(form, "From") or None,
        called_number=_field(form, "To") or None,
        # SHAKEN/STIR: "TN-Validation-Passed-A" means the carrier vouches for the caller ID.
        stir_verstat=_field(form, "StirVerstat") or None,
        dial_status=dial_status,
    )


def _spent(endpoint: str, call_sid: str, why: Spent) -> str:
    obs.WEBHOOKS_REJECTED.labels(endpoint=endpoint, reason=f"call-{why.value}").inc()
    if why is Spent.streamed:
        log.warning("webhook for call %s, whose stream was opened already (a replay?): no token", call_sid)
    else:
        log.warning("webhook for call %s, whose stream token expired unused: no new token", call_sid)
    return twiml.unavailable(ALREADY_CONNECTED)


async def _assistant_twiml(
    runtime: Runtime, form: FormData, endpoint: str, dial_status: str | None = None
) -> str:
    """Connect the call to the assistant: a Media Stream whose only parameter is the call's token.
    Who is calling is recorded here, from this signed webhook, and the stream's `start` is never
    asked (see `callassist.store.admission`)."""
    call_sid = _field(form, "CallSid")
    try:
        token = await runtime.admissions.issue(call_sid, _facts(form, dial_status))
    except Exception as exc:  # the store is down: the call could not be recorded or admitted
        log.error("call %s: could not record its webhook: %s", call_sid, describe_failure(exc))
        return twiml.unavailable(UNAVAILABLE)
    if isinstance(token, Spent):
        return _spent(endpoint, call_sid, token)
    parameters = {"token": token}
    # Absolute URLs under the public one: Twilio resolves relative ones against the webhook's URL.
    public = runtime.settings.public_url
    return twiml.connect_assistant(
        runtime.settings.stream_url() + stream_path(call_sid, token),
        parameters,
        after_url=public + "/voice/stream-ended",
        status_url=public + "/voice/stream-status",
        # Recording starts with the stream: the caller is told before it, whatever the model says.
        notice=RECORDED if runtime.settings.record else None,
    )


@router.post("/voice/incoming")
async def incoming_call(request: Request, runtime: RuntimeDep) -> Response:
    form = await _signed_form(request, runtime, "incoming")
    settings = runtime.settings
    caller, call_sid = _field(form, "From"), _field(form, "CallSid")
    log.info("incoming call %s from %s", call_sid, obs.masked_number(caller))
    if not runtime.registry.accepting:
        return Response(twiml.unavailable(RESTARTING), media_type=XML)
    owner = settings.owner_phone
    standing = screening.Standing()
    if caller != owner:
        try:
            standing = await screening.standing(runtime.database, caller)
        except Exception as exc:  # no contacts: nobody is blocked or VIP, the call goes on
            log.warning("call %s: could not read the contacts: %s", call_sid, describe_failure(exc))
    if standing.blocked:
        return Response(await _refuse_blocked(runtime, form), media_type=XML)
    if runtime.registry.full:
        log.warning("all %d lines busy: call %s refused", settings.max_calls, call_sid)
        return Response(twiml.unavailable(BUSY), media_type=XML)
    # A VIP rings the owner even when ringing is off (CALLASSIST_RING_OWNER_SECONDS=0), when the
    # carrier vouches for the number: caller ID is easily faked, and a fake VIP must not ring.
    vip = standing.vip and _field(form, "StirVerstat").startswith(ATTESTED)
    ring_seconds = settings.ring_owner_seconds or (VIP_RING_SECONDS if vip else 0)
    if owner and ring_seconds > 0 and caller != owner:
        # What this webhook says is kept for the stream the dial result may open (its attestation,
        # above all); a replay of it for a call that had its stream is refused like any other.
        try:
            spent = await runtime.admissions.note(call_sid, _facts(form))
        except Exception as exc:  # ringing the owner needs no store; the dial result will say
            log.warning("call %s: could not record its webhook: %s", call_sid, describe_failure(exc))
            spent = None
        if spent is not None:
            return Response(_spent("incoming", call_sid, spent), media_type=XML)
        # Absolute: a relative action resolves against the host root, wrong if PUBLIC_BASE_URL has a path.
        # The owner's leg runs /voice/screen first: only a pressed 1 bridges the call. The caller's
        # CallSid rides in its query, which Twilio signs with the rest of the URL.
        document = twiml.ring_owner(
            owner,
            ring_seconds,
            settings.public_url + "/voice/dial-result",
            screen_url=settings.public_url + f"/voice/screen?parent={call_sid}",
        )
        return Response(document, media_type=XML)
    return Response(await _assistant_twiml(runtime, form, "incoming"), media_type=XML)


async def _refuse_blocked(runtime: Runtime, form: FormData) -> str:
    """A blocked number: a polite refusal, no assistant, and a call record (outcome "blocked")."""
    call_sid = _field(form, "CallSid")
    log.info("call %s: the number is blocked; refused", call_sid)
    try:
        await screening.record_blocked_call(
            runtime.database, call_sid, _field(form, "From") or None, _field(form, "To") or None
        )
    except Exception as exc:  # the refusal needs no store
        log.warning("call %s: could not record the blocked call: %s", call_sid, describe_failure(exc))
    return twiml.unavailable(f"Sorry, {runtime.settings.owner_name} isn't taking calls right now. Goodbye.")


@router.post("/voice/dial-result")
async def dial_result(request: Request, runtime: RuntimeDep) -> Response:
    form = await _signed_form(request, runtime, "dial-result")
    call_sid = _field(form, "CallSid")
    status = _field(form, "DialCallStatus")
    log.info("owner dial for %s ended: %s", call_sid, status or "unknown")
    if status == "canceled":
        return Response(twiml.hang_up(), media_type=XML)  # the caller is gone
    # Only a 1 the owner pressed on the whisper means the owner took the call. A voicemail or a
    # phone's screening bot answers too (DialCallStatus "completed"), and Twilio's docs do not say
    # which status a <Dial> gets when the screening TwiML hangs the owner's leg up
    # (https://www.twilio.com/docs/voice/twiml/number#url; Twilio's call-screening how-to,
    # https://www.twilio.com/docs/howto/callscreening, treats anything but "completed" as unanswered):
    # so the status never decides alone.
    try:
        choice = await screening.owner_choice(runtime.database, call_sid)
    except Exception as exc:  # no store: no stream could be admitted either
        log.error("call %s: could not read the owner's choice: %s", call_sid, describe_failure(exc))
        return Response(twiml.unavailable(UNAVAILABLE), media_type=XML)
    if choice == screening.TOOK_IT and status not in OWNER_MISSED:
        return Response(twiml.hang_up(), media_type=XML)  # the owner talked to the caller
    if status not in OWNER_MISSED and status not in ("completed", "answered"):
        return Response(twiml.hang_up(), media_type=XML)
    # What the assistant is told: the owner pressed another key (declined), or never took it.
    missed = DECLINED if choice and choice != screening.TOOK_IT else status
    if missed in ("completed", "answered"):
        missed = "no-answer"  # answered by a voicemail or a bot, or hung up on the whisper
    if not runtime.registry.accepting:
        return Response(twiml.unavailable(RESTARTING), media_type=XML)
    return Response(await _assistant_twiml(runtime, form, "dial-result", dial_status=missed), media_type=XML)


def _parent(request: Request) -> str:
    """The caller's CallSid, from the query of the screening URL we gave Twilio (signed with it)."""
    parent = request.query_params.get("parent", "")
    if not forms.CALL_SID.fullmatch(parent):
        raise HTTPException(status_code=400, detail="malformed Twilio request: parent")
    return parent


def spoken_number(number: str | None) -> str:
    """A phone number the way a whisper should say it: digit by digit ("5 5 5 1 2 3")."""
    digits = [char for char in number or "" if char.isdigit()]
    return " ".join(digits) if digits else "a hidden number"


@router.post("/voice/screen")
async def screen(request: Request, runtime: RuntimeDep) -> Response:
    """Twilio's request for the owner's leg once the owner's phone answered (<Number url>): the
    whisper, and one key to take the call."""
    form = await _signed_form(request, runtime, "screen")
    parent = _parent(request)
    caller: str | None = None
    name: str | None = None
    try:
        caller, attested = await screening.caller_identity(runtime.database, parent)
        if attested:  # a contact's name only for a number the carrier vouches for
            name = (await screening.standing(runtime.database, caller)).name
    except Exception as exc:  # the whisper still says what Twilio told us
        log.warning("call %s: could not read the caller for the whisper: %s", parent, describe_failure(exc))
    if caller is None:
        caller = _field(form, "From") or None
    whisper = (
        f"Call from {_sayable(name) + ', ' if name else ''}{spoken_number(caller)}. "
        "Press 1 to take it, 2 to let the assistant answer."
    )
    choice_url = runtime.settings.public_url + f"/voice/screen-choice?parent={parent}"
    return Response(twiml.screen(whisper, choice_url, SCREEN_KEY_SECONDS), media_type=XML)


def _sayable(name: str) -> str:
    """A contact's name for <Say>: one line (caller_text, in `screening.standing`), and none of the
    characters markup is made of (the builder escapes XML; this keeps SSML-looking text out too)."""
    return " ".join(re.sub(r"[<>&{}\[\]\\\"]", " ", name).split())


@router.post("/voice/screen-choice")
async def screen_choice(request: Request, runtime: RuntimeDep) -> Response:
    """The key the owner pressed on the whisper: 1 bridges the call (the screening TwiML ends with
    nothing more to do); anything else hangs the owner's leg up and the assistant answers."""
    form = await _signed_form(request, runtime, "screen-choice")
    parent = _parent(request)
    digits = _field(form, "Digits")
    try:
        await screening.record_owner_choice(runtime.database, parent, digits)
    except Exception as exc:  # without the record, a bridge would read as "not taken": don't bridge
        log.error("call %s: could not record the owner's choice: %s", parent, describe_failure(exc))
        return Response(twiml.hang_up(), media_type=XML)
    log.info("call %s: the owner %s", parent, "took it" if digits == screening.TOOK_IT else "declined")
    if digits == screening.TOOK_IT:
        return Response(twiml.empty(), media_type=XML)
    return Response(twiml.hang_up(), media_type=XML)


# /voice/stream-ended (the <Connect action>: the voicemail when the assistant couldn't answer) is
# in callassist.telephony.voicemail.


@router.post("/voice/stream-status")
async def stream_status(request: Request, runtime: RuntimeDep) -> Response:
    """Twilio's <Stream statusCallback>: stream-started, stream-stopped, or stream-error (the stream
    could not be opened or broke, e.g. a handshake our server or a proxy refused). Errors are logged
    as warnings: without this, a stream that never reached us leaves no trace on our side."""
    form = await _signed_form(request, runtime, "stream-status")
    call_sid = _field(form, "CallSid")
    event = _field(form, "StreamEvent")
    stream_sid = _field(form, "StreamSid") or "unknown stream"
    if event == STREAM_ERROR:
        log.warning(
            "media stream error on call %s (%s): %s",
            call_sid,
            stream_sid,
            _loggable(_field(form, "StreamError")) or "no details given",
        )
    elif event in ("stream-started", "stream-stopped"):
        log.debug("media stream %s of call %s: %s", stream_sid, call_sid, event)
    else:
        log.info("media stream %s of call %s: unexpected status %r", stream_sid, call_sid, _loggable(event))
    return Response(status_code=204)


def _loggable(text: str, limit: int = 300) -> str:
    """Twilio's text, on one line, short, with anything that looks like a phone number masked."""
    flat = " ".join(text.split())
    masked = _NUMBER_LIKE.sub(lambda match: obs.masked_number(re.sub(r"[^\d+]", "", match[0])), flat)
    return masked if len(masked) <= limit else masked[: limit - 1] + "…"


def stream_path(call_sid: str, token: str) -> str:
    """The call's own Media Stream path, under the stream URL. Twilio signs the `<Stream url>` it
    opens, so the handshake's signature covers this call and token, not a URL shared by every call
    (and a path, unlike a query string, is kept: Twilio drops `?query` from Stream URLs)."""
    return f"/{call_sid}/{token}"


@router.websocket("/voice/stream/{call_sid}/{token}")
async def media_stream(websocket: WebSocket, call_sid: str, token: str, runtime: RuntimeDep) -> None:
    # Everything here happens before accept() and before any OpenAI connection is opened: the
    # signature over this call's URL, then its token (ours, this call's, unexpired, unclaimed, and no
    # other stream of the call open). A replayed handshake of a call whose stream was opened is
    # refused here; one replayed in the instant before the real `start` waits in a small pre-start
    # pool (not a call slot), and `start` claims the token once (store/admission.py).
    if not runtime.signatures.check_stream(websocket, stream_path(call_sid, token)):
        obs.WEBHOOKS_REJECTED.labels(endpoint="stream", reason="signature").inc()
        log.warning("refused a Media Stream: invalid or missing X-Twilio-Signature")
        await websocket.close(code=1008)
        return
    if not runtime.registry.accepting or runtime.deps is None:
        await websocket.close(code=1013)  # try again later
        return
    ticket = runtime.registry.open_stream(call_sid if forms.CALL_SID.fullmatch(call_sid) else None)
    if ticket is None:
        if runtime.registry.has_stream(call_sid):
            _refuse_handshake("call-has-stream")
            await websocket.close(code=1008)
        else:
            _log_pool_full(runtime.registry.pre_start_limit)
            await websocket.close(code=1013)
        return
    try:
        try:
            refusal = await runtime.admissions.unclaimed(call_sid, token)
        except Exception as exc:  # the store is down: nothing can be admitted
            log.error("could not check a Media Stream's token: %s", describe_failure(exc))
            await websocket.close(code=1013)
            return
        if refusal is not None:
            _refuse_handshake(f"token-{refusal.value}")
            await websocket.close(code=1008)
            return
        await websocket.accept()
        await answer_stream(websocket, runtime.deps, ticket)
    finally:
        ticket.close()


class _Sampled:
    """A count of something that can come in floods: it is logged the first time and every
    hundredth, never once per event (a replay flood must not flood the log too)."""

    def __init__(self) -> None:
        self.count = 0

    def tick(self) -> bool:
        self.count += 1
        return self.count == 1 or self.count % 100 == 0


_handshake_refusals = _Sampled()
_pool_refusals = _Sampled()


def _refuse_handshake(reason: str) -> None:
    """Counted in /metrics; the log gets the first refusal and every hundredth (a replay flood)."""
    obs.WEBHOOKS_REJECTED.labels(endpoint="stream", reason=reason).inc()
    if _handshake_refusals.tick():
        log.warning(
            "refused a Media Stream before accept: %s (a replayed handshake?; %d so far)",
            reason,
            _handshake_refusals.count,
        )


def _log_pool_full(limit: int) -> None:
    """A flood is counted in /metrics; the log gets its first refusal and every hundredth."""
    if _pool_refusals.tick():
        log.warning(
            "refused a Media Stream: %d streams are already waiting for `start` (%d refused so far)",
            limit,
            _pool_refusals.count,
        )
