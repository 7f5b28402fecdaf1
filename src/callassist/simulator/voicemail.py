"""Twilio's `<Record>` verb, as the simulated Twilio follows it (https://www.twilio.com/docs/voice/twiml/record).

What Twilio documents, and the simulator does:
- a beep first unless `playBeep="false"`; then the caller's audio is recorded until `maxLength`
  seconds, a key in `finishOnKey` (default `1234567890*#`), or `timeout` seconds of silence
  (default 5);
- the `action` URL (default: the current document's URL, a loop the page warns about) is requested
  with the standard voice parameters plus RecordingUrl, RecordingSid, RecordingDuration and Digits
  (the key that ended it), and its TwiML is followed; verbs after `<Record>` are then unreachable;
- an empty recording (nothing said) makes no `action` request: the next verb runs;
- `recordingStatusCallback` gets AccountSid, CallSid, RecordingSid, RecordingUrl, RecordingStatus,
  RecordingDuration, RecordingChannels, RecordingSource, RecordingStartTime for each event of
  `recordingStatusCallbackEvent` (default `completed`; `absent` for an empty one)
  (https://www.twilio.com/docs/voice/api/recording#recordingstatuscallback);
- with `transcribe="true"`, `transcribeCallback` gets the standard voice parameters plus
  TranscriptionSid, TranscriptionText, TranscriptionStatus, TranscriptionUrl, RecordingSid and
  RecordingUrl. Twilio transcribes recordings of up to 2 minutes: longer ones come back `failed`.

Strict where the page states a rule (maxLength between 2 and 14400, finishOnKey digits, the
methods): a breach is a warning on the call, as real Twilio would refuse or ignore it. The
simulator can't transcribe: the test says what Twilio's transcription would read
(`leave_message(..., transcript=...)`); without one the transcription comes back `failed`.
"""

from __future__ import annotations

import asyncio
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from callassist.simulator.audio import BYTES_PER_MS, frames, speech_frames
from callassist.simulator.ids import new_sid

__all__ = ["Record", "leave_message", "parse_record"]

DEFAULT_FINISH_KEYS = "1234567890*#"
MAX_TRANSCRIBED_S = 120
MAX_LENGTH_S = 14400

Request = Callable[..., Awaitable[tuple[int, str]]]
NextRequest = tuple[str, str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class Record:
    action: str | None = None
    method: str = "POST"
    timeout: int = 5
    finish_on_key: str = DEFAULT_FINISH_KEYS
    max_length: int = 3600
    play_beep: bool = True
    recording_status_callback: str | None = None
    recording_status_callback_method: str = "POST"
    recording_status_callback_event: tuple[str, ...] = ("completed",)
    transcribe: bool = False
    transcribe_callback: str | None = None
    problems: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"Record maxLength={self.max_length}s finishOnKey={self.finish_on_key!r}"


def parse_record(element: ET.Element) -> Record:
    problems: list[str] = []

    def number(name: str, default: int) -> int:
        value = element.get(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            problems.append(f"<Record {name}={value!r}> is not an integer")
            return default

    max_length = number("maxLength", 3600)
    if not 1 < max_length <= MAX_LENGTH_S:
        problems.append(f"<Record maxLength={max_length}> outside 2..{MAX_LENGTH_S}")
    keys = element.get("finishOnKey", DEFAULT_FINISH_KEYS)
    if any(key not in DEFAULT_FINISH_KEYS for key in keys):
        problems.append(f"<Record finishOnKey={keys!r}>: only digits, # and *")
    methods = {
        name: (element.get(name) or "POST").upper() for name in ("method", "recordingStatusCallbackMethod")
    }
    problems.extend(
        f"<Record {name}={m!r}>: GET or POST" for name, m in methods.items() if m not in ("GET", "POST")
    )
    transcribe = (element.get("transcribe") or "").lower() == "true"
    if transcribe and max_length > MAX_TRANSCRIBED_S:
        problems.append(
            f"<Record transcribe> with maxLength={max_length}: Twilio transcribes 2 minutes at most"
        )
    events = tuple((element.get("recordingStatusCallbackEvent") or "completed").split())
    return Record(
        action=element.get("action"),
        method=methods["method"],
        timeout=number("timeout", 5),
        finish_on_key=keys,
        max_length=max_length,
        play_beep=(element.get("playBeep") or "true").lower() != "false",
        recording_status_callback=element.get("recordingStatusCallback"),
        recording_status_callback_method=methods["recordingStatusCallbackMethod"],
        recording_status_callback_event=events,
        transcribe=transcribe,
        transcribe_callback=element.get("transcribeCallback"),
        problems=tuple(problems),
    )


@dataclass(frozen=True, slots=True)
class Message:
    audio: bytes  # μ-law 8 kHz
    finish_key: str | None
    transcript: str | None


# The message each call's caller will leave (set before or during the <Record>).
_messages: weakref.WeakKeyDictionary[object, asyncio.Future[Message]] = weakref.WeakKeyDictionary()


def _slot(call: object) -> asyncio.Future[Message]:
    future = _messages.get(call)
    if future is None:
        future = _messages[call] = asyncio.get_running_loop().create_future()
    return future


def leave_message(
    call: object, audio: bytes, *, finish_key: str | None = None, transcript: str | None = None
) -> None:
    """What the caller says at the tone (and the key pressed after it), and what Twilio's
    transcription of it would read."""
    future = _slot(call)
    if not future.done():
        future.set_result(Message(bytes(audio), finish_key, transcript))


def _params_later(params: dict[str, str]) -> dict[str, str]:
    return {**params, "CallStatus": "in-progress"}


async def follow_record(
    call: Any,  # a SimulatedCall (simulator/call.py imports this module, so not imported here)
    verb: Record,
    doc_url: str,
    params: dict[str, str],
    request: Request,
) -> NextRequest | None:
    """Run a `<Record>`: returns the `action` request to make (None: empty recording, go on with
    the next verb). The callbacks are posted in the background, tracked with the call's others."""
    for problem in verb.problems:
        call._warn(problem)
    if verb.play_beep:
        call._emit("record_beep")
    if not verb.action:
        call._warn("<Record> without action: Twilio requests the current document again (a loop)")
    try:
        message = await asyncio.wait_for(asyncio.shield(_slot(call)), verb.timeout)
    except TimeoutError:
        message = Message(b"", None, None)  # silence for `timeout` seconds: nothing recorded
    chunks = frames(message.audio)
    spoken_ms = speech_frames(chunks) * 20 if chunks else 0
    key = message.finish_key if message.finish_key and message.finish_key in verb.finish_on_key else None
    if message.finish_key and key is None:
        call._warn(
            f"key {message.finish_key!r} is not in finishOnKey {verb.finish_on_key!r}: recorded, ignored"
        )
    recorded_ms = min(len(message.audio) // BYTES_PER_MS, verb.max_length * 1000)
    await asyncio.sleep(recorded_ms / 1000)  # real time: the caller talks
    if key is None and spoken_ms and recorded_ms < verb.max_length * 1000:
        await asyncio.sleep(verb.timeout)  # silence then ends it
    duration_s = min(round(spoken_ms / 1000), verb.max_length)
    recording_sid = new_sid("RE")
    recording_url = (
        f"https://api.twilio.com/2010-04-01/Accounts/{call.account_sid}/Recordings/{recording_sid}"
    )
    empty = spoken_ms == 0
    call._emit("recorded", sid=recording_sid, url=recording_url, duration=duration_s, digits=key, empty=empty)
    _callbacks(call, verb, doc_url, params, request, recording_sid, recording_url, duration_s, empty, message)
    if empty:
        return None
    action_params = {
        **_params_later(params),
        "RecordingUrl": recording_url,
        "RecordingSid": recording_sid,
        "RecordingDuration": str(duration_s),
    }
    if key is not None:
        action_params["Digits"] = key
    return urljoin(doc_url, verb.action or doc_url), verb.method, action_params


def _callbacks(
    call: Any,  # a SimulatedCall
    verb: Record,
    doc_url: str,
    params: dict[str, str],
    request: Request,
    recording_sid: str,
    recording_url: str,
    duration_s: int,
    empty: bool,
    message: Message,
) -> None:

    async def post(kind: str, url: str, method: str, form: dict[str, str]) -> None:
        await asyncio.sleep(0.05)  # after the action request, as Twilio processes the file
        answered: int | None = None
        try:
            answered, _ = await request(url, method, form, what=kind)
        except Exception as exc:
            call._warn(f"{kind} failed: {exc}")
        else:
            if not 200 <= answered < 300:
                call._warn(f"{kind} {url} answered HTTP {answered}")
        call._emit(kind.replace(" ", "_"), status=answered, form=form)

    async def run() -> None:
        event = "absent" if empty else "completed"
        if verb.recording_status_callback and event in verb.recording_status_callback_event:
            await post(
                "recording status",
                urljoin(doc_url, verb.recording_status_callback),
                verb.recording_status_callback_method,
                {
                    "AccountSid": call.account_sid,
                    "CallSid": call.call_sid,
                    "RecordingSid": recording_sid,
                    "RecordingUrl": recording_url,
                    "RecordingStatus": event,
                    "RecordingDuration": str(duration_s if not empty else 0),
                    "RecordingChannels": "1",
                    "RecordingSource": "RecordVerb",
                    "RecordingStartTime": datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"),
                },
            )
        if verb.transcribe and verb.transcribe_callback and not empty:
            done = message.transcript is not None and duration_s <= MAX_TRANSCRIBED_S
            transcription_sid = new_sid("TR")
            await post(
                "transcription",
                urljoin(doc_url, verb.transcribe_callback),
                "POST",
                {
                    **_params_later(params),
                    "TranscriptionSid": transcription_sid,
                    "TranscriptionText": (message.transcript or "") if done else "",
                    "TranscriptionStatus": "completed" if done else "failed",
                    "TranscriptionUrl": recording_url.split("/Recordings/")[0]
                    + f"/Transcriptions/{transcription_sid}",
                    "RecordingSid": recording_sid,
                    "RecordingUrl": recording_url,
                },
            )

    task = asyncio.get_running_loop().create_task(run(), name=f"sim-record-{call.call_sid[-6:]}")
    call._callbacks.add(task)
    task.add_done_callback(call._callbacks.discard)
