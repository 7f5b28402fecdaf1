"""When the caller stopped speaking, read from the tail of their audio."""

from __future__ import annotations

import base64

from callassist.call.speech import InboundAudioTail
from callassist.simulator.audio import tone

SILENCE = base64.b64encode(bytes([0xFF]) * 160).decode()
HISS = base64.b64encode(bytes([0xFE, 0x7E]) * 80).decode()  # ±8 of 32k: line noise


def _speech_frames(ms: int) -> list[str]:
    audio = tone(ms, 440, amplitude=8000)
    return [base64.b64encode(audio[i : i + 160]).decode() for i in range(0, len(audio), 160)]


def _tail(frames: list[str], start: float = 10.0) -> InboundAudioTail:
    tail = InboundAudioTail()
    for n, payload in enumerate(frames):
        tail.frames.append((start + n * 0.02, payload))
    return tail


def test_the_end_of_the_last_loud_frame_before_the_silence() -> None:
    tail = _tail([SILENCE] * 10 + _speech_frames(600) + [HISS] * 30)
    assert tail.last_speech_at(before=11.5) == 10.0 + (10 + 29) * 0.02


def test_a_quiet_line_has_no_speech() -> None:
    assert _tail([SILENCE] * 20 + [HISS] * 20).last_speech_at(before=11.0) is None
    assert InboundAudioTail().last_speech_at(before=11.0) is None


def test_only_the_window_before_the_moment_counts() -> None:
    tail = _tail(_speech_frames(400) + [SILENCE] * 200)  # speech 10.0-10.38, then 4 s of silence
    assert tail.last_speech_at(before=14.4, window_s=3.0) is None
    assert tail.last_speech_at(before=12.0, window_s=3.0) == 10.0 + 19 * 0.02
    assert tail.last_speech_at(before=10.1) == 10.1  # frames after `before` are not looked at


def test_softer_words_after_a_shout_still_count() -> None:
    # Above line noise they do: octave 7 is the loudest, so "three octaves below the peak" is never
    # stricter than the noise floor (octave 4).
    loud = _speech_frames(200)
    soft = [base64.b64encode(tone(20, 440, amplitude=2000)).decode()] * 10
    tail = _tail(loud + soft + [SILENCE] * 10)
    assert tail.last_speech_at(before=11.0) == 10.0 + 19 * 0.02


def test_unreadable_and_empty_payloads_are_skipped() -> None:
    tail = _tail(_speech_frames(100) + ["not base64!", ""] + [SILENCE] * 5)
    assert tail.last_speech_at(before=11.0) == 10.0 + 4 * 0.02
