"""TwiML documents, built with twilio.twiml (never by pasting strings)."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import Connect, VoiceResponse

# Twilio's <Dial> timeout bounds (it adds ~5 s of its own on top).
MIN_RING_SECONDS, MAX_RING_SECONDS = 5, 600


def ring_owner(
    owner_phone: str,
    ring_seconds: int,
    action_url: str,
    caller_id: str | None = None,
    screen_url: str | None = None,
) -> str:
    """Ring the owner first; Twilio reports the outcome to `action_url` (DialCallStatus).

    With `screen_url`, the owner's leg runs that TwiML once answered, before the legs are bridged
    (a whisper and a key to take the call; https://www.twilio.com/docs/voice/twiml/number#url),
    while the caller keeps hearing ringing (answerOnBridge).
    """
    response = VoiceResponse()
    timeout = min(max(ring_seconds, MIN_RING_SECONDS), MAX_RING_SECONDS)
    dial = response.dial(
        timeout=timeout, action=action_url, method="POST", answer_on_bridge=True, caller_id=caller_id
    )
    if screen_url:
        dial.number(owner_phone, url=screen_url, method="POST")
    else:
        dial.number(owner_phone)
    return str(response)


def screen(whisper: str, choice_url: str, timeout_seconds: int) -> str:
    """The owner's leg: say `whisper` and wait for one key (posted to `choice_url`); no key within
    `timeout_seconds` (a voicemail, a screening bot, a phone in a pocket) hangs the owner's leg up,
    so the caller's <Dial> ends unbridged. `whisper` is plain text: the builder escapes it."""
    response = VoiceResponse()
    gather = response.gather(
        num_digits=1, timeout=timeout_seconds, action=choice_url, method="POST", action_on_empty_result=False
    )
    gather.say(whisper)
    response.hangup()
    return str(response)


def conference(room: str, action_url: str | None = None) -> str:
    """Join the conference `room` (a warm transfer: the caller and the owner); it starts when this
    leg enters and ends when it leaves, and Twilio requests `action_url` once this leg left it
    (https://www.twilio.com/docs/voice/twiml/conference)."""
    response = VoiceResponse()
    dial = response.dial(action=action_url, method="POST") if action_url else response.dial()
    dial.conference(room, start_conference_on_enter=True, end_conference_on_exit=True, beep=False)
    return str(response)


def empty() -> str:
    """No verbs: on the owner's screened leg, the end of the screening TwiML bridges the call."""
    return str(VoiceResponse())


def connect_assistant(
    stream_url: str,
    parameters: Mapping[str, str],
    after_url: str | None = None,
    status_url: str | None = None,
    notice: str | None = None,
) -> str:
    """Bridge the call to our Media Stream, after `notice` if any ("This call is recorded."); when
    the stream closes, ask `after_url` what next (the voicemail if the assistant failed), or hang
    up. Twilio reports the stream's life (started, stopped, error) to `status_url`.

    The stream URL cannot carry a query string (Twilio drops it), so values travel as <Parameter>s
    and come back in `start.customParameters`.
    """
    response = VoiceResponse()
    if notice:
        response.say(notice)
    connect = Connect(action=after_url, method="POST") if after_url else Connect()
    if status_url:
        stream = connect.stream(url=stream_url, status_callback=status_url, status_callback_method="POST")
    else:
        stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    response.hangup()
    return str(response)


def hang_up() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


def unavailable(message: str) -> str:
    """Say a short apology and hang up (server shutting down, assistant not configured)."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)


def voicemail(
    prompt: str,
    *,
    action_url: str,
    recording_status_url: str,
    transcribe_url: str | None,
    max_length: int,
    goodbye: str,
) -> str:
    """Say `prompt`, then record the caller's message after a beep (https://www.twilio.com/docs/voice/twiml/record).

    Twilio requests `action_url` when the recording ends (RecordingUrl, RecordingSid,
    RecordingDuration, Digits) and runs the TwiML it answers; an empty recording makes no request
    and the next verb runs instead: `goodbye` and a hang-up. The recording status callback and the
    transcription callback (`transcribe_url`; None: no transcription) come later, on their own.
    """
    response = VoiceResponse()
    response.say(prompt)
    options: dict[str, object] = {}
    if transcribe_url:
        options.update(transcribe=True, transcribe_callback=transcribe_url)
    response.record(
        action=action_url,
        method="POST",
        max_length=max_length,
        timeout=5,  # seconds of silence that end the message (Twilio's default, stated)
        finish_on_key="#",
        play_beep=True,
        recording_status_callback=recording_status_url,
        recording_status_callback_method="POST",
        recording_status_callback_event="completed absent",
        **options,
    )
    response.say(goodbye)
    response.hangup()
    return str(response)
