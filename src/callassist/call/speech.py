"""When did the caller stop speaking? The last few seconds of their audio, read only when asked.

The Realtime VAD reports the end of a turn after its silence window (speech_stopped.audio_end_ms
"includes the min_silence_duration_ms"), and semantic VAD waits a variable time. To measure turn
latency from the moment the caller actually went quiet, the bridge keeps the recent frames as they
arrived (a deque append per frame, nothing decoded) and looks for the last loud one afterwards.
"""

from __future__ import annotations

import binascii
from collections import deque

from callassist.telephony.ulaw import loudness

FRAME_S = 0.020
_KEEP_FRAMES = 250  # 5 s of 20 ms frames
_FLOOR = 4  # peaks below octave 4 (|x| < ~1000 of 32k) are line noise rather than a voice
_BELOW_PEAK = 3  # a frame counts as speech within three octaves (1/8) of the loudest recent one


class InboundAudioTail:
    def __init__(self, keep_frames: int = _KEEP_FRAMES) -> None:
        self.frames: deque[tuple[float, str]] = deque(maxlen=keep_frames)  # (arrival, base64 μ-law)

    def last_speech_at(self, before: float, window_s: float = 3.0) -> float | None:
        """Arrival time (our clock) of the end of the last loud frame before `before`, or None."""
        recent = [(at, payload) for at, payload in self.frames if before - window_s <= at <= before]
        levels: list[tuple[float, int]] = []
        for at, payload in recent:
            try:
                levels.append((at, loudness(binascii.a2b_base64(payload))))
            except (binascii.Error, ValueError):
                continue
        if not levels:
            return None
        threshold = max(_FLOOR, max(level for _, level in levels) - _BELOW_PEAK)
        for at, level in reversed(levels):
            if level >= threshold:
                return at
        return None
