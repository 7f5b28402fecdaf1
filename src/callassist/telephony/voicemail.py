"""When the assistant can't answer: the caller leaves a voicemail instead of hearing silence.

A call whose assistant was lost (OpenAI unreachable, refused, rate-limited; `AssistantLost` on the
call event stream) has its stream closed by the call; Twilio then requests the `<Connect action>`,
`/voice/stream-ended`, which answers with a spoken prompt and a `<Record>`
(https://www.twilio.com/docs/voice/twiml/record). Twilio's three requests about the recording are
signed and checked like every webhook, and each fills in the call's voicemail row:

- the `<Record action>` (`/voice/voicemail/recorded`): the standard voice parameters plus
  RecordingUrl, RecordingSid, RecordingDuration and Digits; its TwiML says goodbye. Twilio makes no
  request for an empty recording (it runs the next verb: our goodbye and `<Hangup>`).
- the recording status callback (`/voice/voicemail/recording-status`): AccountSid, CallSid,
  RecordingSid, RecordingUrl, RecordingStatus, RecordingDuration... but no From/To
  (https://www.twilio.com/docs/voice/api/recording#recordingstatuscallback).
- the transcription callback (`/voice/voicemail/transcription`): the standard voice parameters plus
  TranscriptionSid, TranscriptionText, TranscriptionStatus (completed or failed), TranscriptionUrl,
  RecordingSid, RecordingUrl (the `transcribeCallback` section of the `<Record>` page).

The owner's notice is queued once the recording exists, due a little later so the transcription
can join it; when the transcription callback comes first (it normally does), the still-unsent
notice gets the text and is due at once.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import and_, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from callassist import observability as obs
from callassist.caller_text import one_line
from callassist.notify.notices import enqueue_owner_notices
from callassist.runtime import Runtime, RuntimeDep
from callassist.store.db import describe_failure
from callassist.store.models import OutboxRow, utc_now
from callassist.store.voicemail import Voicemail, save_voicemail
from callassist.telephony import forms, twiml

log = logging.getLogger(__name__)
router = APIRouter()

XML = "application/xml"
RECORDED_PATH = "/voice/voicemail/recorded"
RECORDING_STATUS_PATH = "/voice/voicemail/recording-status"
TRANSCRIPTION_PATH = "/voice/voicemail/transcription"
GOODBYE = "Thank you. Your message has been passed on. Goodbye."
NO_MESSAGE = "No message was recorded. Goodbye."
# A notice waits this long for the transcription before it goes out without it.
TRANSCRIPTION_WAIT = timedelta(seconds=120)
MAX_TRANSCRIPTION_CHARS = 1500
TRANSCRIBED_MAX_S = 120

RECORDING_SID = re.compile(r"RE[0-9a-f]{32}")
TRANSCRIPTION_SID = re.compile(r"TR[0-9a-f]{32}")
# Recordings live under Twilio's API host: https://api.twilio.com/2010-04-01/Accounts/AC.../Recordings/RE...
RECORDING_URL = re.compile(
    r"https://api\.twilio\.com/2010-04-01/Accounts/AC[0-9a-f]{32}/Recordings/RE[0-9a-f]{32}"
)
RECORDING_STATUSES = frozenset({"in-progress", "completed", "absent", "failed"})
TRANSCRIPTION_STATUSES = frozenset({"completed", "failed"})
RECORDING_STATUS_KEYS = ("AccountSid", "CallSid", "RecordingSid", "RecordingUrl", "RecordingStatus")


def prompt(owner_name: str) -> str:
    return (
        f"Sorry, {owner_name} can't take your call right now. "
        "Please leave a message after the tone, and press the pound key when you're done."
    )


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


async def _signed(
    request: Request, runtime: Runtime, endpoint: str, required: tuple[str, ...] | None
) -> FormData:
    """The callback's form if Twilio signed it and it is one Twilio sends: 403 / 400 otherwise."""
    form = await request.form()
    if not runtime.signatures.check_webhook(request, form):
        obs.WEBHOOKS_REJECTED.labels(endpoint=endpoint, reason="signature").inc()
        log.warning("refused %s: invalid or missing X-Twilio-Signature", request.url.path)
        raise HTTPException(status_code=403, detail="invalid signature")
    why = forms.problem(
        form, stream_status=False, account_sid=runtime.settings.twilio_account_sid, required=required
    ) or _recording_problem(form)
    if why is not None:
        obs.WEBHOOKS_REJECTED.labels(endpoint=endpoint, reason=why).inc()
        log.warning("refused %s: a signed form Twilio does not send (%s)", request.url.path, why)
        raise HTTPException(status_code=400, detail=f"malformed Twilio request: {why}")
    return form


def _recording_problem(form: FormData) -> str | None:
    """The recording's own fields, when present, must look like Twilio's."""
    sid = _field(form, "RecordingSid")
    if sid and not RECORDING_SID.fullmatch(sid):
        return "recording-sid"
    url = _field(form, "RecordingUrl")
    if url and not RECORDING_URL.fullmatch(url):
        return "recording-url"
    duration = _field(form, "RecordingDuration")
    if duration and not (duration.isdigit() or duration == "-1"):
        return "recording-duration"
    digits = _field(form, "Digits")
    if digits and digits not in ("hangup", *"0123456789*#"):
        return "digits"
    if (status := _field(form, "RecordingStatus")) and status not in RECORDING_STATUSES:
        return "recording-status"
    if (status := _field(form, "TranscriptionStatus")) and status not in TRANSCRIPTION_STATUSES:
        return "transcription-status"
    transcription_sid = _field(form, "TranscriptionSid")
    if transcription_sid and not TRANSCRIPTION_SID.fullmatch(transcription_sid):
        return "transcription-sid"
    return None


def _duration(form: FormData) -> int | None:
    value = _field(form, "RecordingDuration")
    return int(value) if value.isdigit() else None


@router.post("/voice/stream-ended")
async def stream_ended(request: Request, runtime: RuntimeDep) -> Response:
    """Twilio asks what next once our stream has closed with the caller still on the line: the
    voicemail if the assistant could not answer this call, a hang-up otherwise."""
    form = await _signed(request, runtime, "stream-ended", None)
    call_sid = _field(form, "CallSid")
    if call_sid not in runtime.assistant_failures and not await _never_streamed(runtime, call_sid):
        return Response(twiml.hang_up(), media_type=XML)
    settings = runtime.settings
    public = settings.public_url
    log.info("call %s: the assistant could not answer; the caller gets the voicemail", call_sid)
    document = twiml.voicemail(
        prompt(settings.owner_name),
        action_url=public + RECORDED_PATH,
        recording_status_url=public + RECORDING_STATUS_PATH,
        # Twilio transcribes recordings of up to 2 minutes (<Record transcribe>): longer ones not at all.
        transcribe_url=public + TRANSCRIPTION_PATH
        if settings.voicemail_transcribe and settings.voicemail_max_seconds <= TRANSCRIBED_MAX_S
        else None,
        max_length=settings.voicemail_max_seconds,
        goodbye=NO_MESSAGE,
    )
    return Response(document, media_type=XML)


async def _never_streamed(runtime: Runtime, call_sid: str) -> bool:
    """A stream refused before it became a call (the pool full, the server restarting, the store
    down at the handshake, a stream error) leaves its caller owed the voicemail too."""
    try:
        return await runtime.admissions.never_streamed(call_sid)
    except Exception as exc:  # the store is down: the caller still gets a chance to leave a message
        log.error("call %s: could not read its stream's record: %s", call_sid, describe_failure(exc))
        return True


@router.post(RECORDED_PATH)
async def recorded(request: Request, runtime: RuntimeDep) -> Response:
    """The `<Record action>`: the message is recorded. Kept, the owner's notice queued, goodbye."""
    form = await _signed(request, runtime, "voicemail-recorded", None)
    # A store failure is logged by _keep; the caller who just left a message hears the goodbye,
    # not Twilio's "application error" (the recording status callback brings the recording again).
    with contextlib.suppress(HTTPException):
        await _keep(runtime, form, recording_status=None, finished_on_key=_field(form, "Digits") or None)
    return Response(twiml.unavailable(GOODBYE), media_type=XML)


@router.post(RECORDING_STATUS_PATH)
async def recording_status(request: Request, runtime: RuntimeDep) -> Response:
    form = await _signed(request, runtime, "voicemail-status", RECORDING_STATUS_KEYS)
    status = _field(form, "RecordingStatus")
    if status == "absent":
        log.info("call %s: Twilio kept no recording (too short or silent)", _field(form, "CallSid"))
    await _keep(runtime, form, recording_status=status, finished_on_key=None)
    return Response(status_code=204)


@router.post(TRANSCRIPTION_PATH)
async def transcription(request: Request, runtime: RuntimeDep) -> Response:
    form = await _signed(request, runtime, "voicemail-transcription", None)
    call_sid = _field(form, "CallSid")
    status = _field(form, "TranscriptionStatus") or "failed"
    text = (
        one_line(_field(form, "TranscriptionText"), MAX_TRANSCRIPTION_CHARS) if status == "completed" else ""
    )
    try:
        async with runtime.database.session() as session:
            voicemail = await save_voicemail(
                session,
                call_sid,
                transcription_status=status,
                transcription=text or None,
                recording_sid=_field(form, "RecordingSid") or None,
                recording_url=_field(form, "RecordingUrl") or None,
                caller_number=_field(form, "From") or None,
                called_number=_field(form, "To") or None,
            )
            await _notify(session, runtime, voicemail, final=True, called=_field(form, "To") or None)
    except Exception as exc:
        log.error(
            "call %s: could not keep the voicemail's transcription: %s", call_sid, describe_failure(exc)
        )
        raise HTTPException(status_code=503, detail="try again") from None
    if runtime.outbox is not None:
        runtime.outbox.wake()
    return Response(status_code=204)


async def _keep(
    runtime: Runtime, form: FormData, *, recording_status: str | None, finished_on_key: str | None
) -> None:
    call_sid = _field(form, "CallSid")
    url = _field(form, "RecordingUrl") or None
    try:
        async with runtime.database.session() as session:
            voicemail = await save_voicemail(
                session,
                call_sid,
                recording_sid=_field(form, "RecordingSid") or None,
                recording_url=url,
                duration_s=_duration(form),
                finished_on_key=finished_on_key,
                recording_status=recording_status,
                caller_number=_field(form, "From") or None,
                called_number=_field(form, "To") or None,
            )
            if url and recording_status in (None, "completed"):
                final = (
                    not runtime.settings.voicemail_transcribe or voicemail.transcription_status is not None
                )
                await _notify(session, runtime, voicemail, final=final, called=_field(form, "To") or None)
    except Exception as exc:  # Twilio's request fails; it says so in its debugger
        log.error("call %s: could not keep the voicemail: %s", call_sid, describe_failure(exc))
        raise HTTPException(status_code=503, detail="try again") from None
    if runtime.outbox is not None:
        runtime.outbox.wake()


def notice_text(voicemail: Voicemail) -> tuple[str, str]:
    """(subject, body) of the owner's notice about a voicemail."""
    caller = voicemail.caller_number or "a withheld number"
    subject = f"Voicemail from {caller}"
    lines = [f"Voicemail from {caller}, left while the assistant was unavailable"]
    if voicemail.duration_s is not None:
        lines[0] += f" ({voicemail.duration_s // 60}:{voicemail.duration_s % 60:02d})"
    lines[0] += "."
    if voicemail.transcription:
        lines.append(f'"{voicemail.transcription}"')
    elif voicemail.transcription_status == "failed":
        lines.append("(Twilio could not transcribe it.)")
    if voicemail.recording_url:
        lines.append(f"Recording: {voicemail.recording_url}")
    return subject, "\n".join(lines)


async def _notify(
    session: AsyncSession, runtime: Runtime, voicemail: Voicemail, *, final: bool, called: str | None
) -> None:
    """Queue the owner's notice (once per voicemail), or bring a queued, unsent one up to date.
    `final`: nothing more is expected (the transcription came, or none was asked for): due now."""
    if not runtime.senders or not voicemail.recording_url:
        return
    subject, text = notice_text(voicemail)
    key = f"{voicemail.call_sid}:voicemail"
    due = utc_now() if final else utc_now() + TRANSCRIPTION_WAIT
    new = await enqueue_owner_notices(
        session,
        runtime.settings,
        key=key,
        text=text,
        subject=subject,
        sms_sender=called,
        call_sid=voicemail.call_sid,
    )
    # Still waiting in the outbox, untouched by a worker: it gets the latest text and due time.
    await session.execute(
        update(OutboxRow)
        .where(
            and_(
                OutboxRow.dedupe_key.in_((f"{key}:sms", f"{key}:email")),
                OutboxRow.status == "pending",
                OutboxRow.attempts == 0,
                OutboxRow.locked_until.is_(None),
            )
        )
        .values(body=text, next_attempt_at=due)
    )
    if new:
        log.info("call %s: the owner's voicemail notice is queued", voicemail.call_sid)
