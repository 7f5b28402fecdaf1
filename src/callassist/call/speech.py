"""When did the caller stop speaking? The last few seconds of their audio, read only when asked.

The Realtime VAD reports the end of a turn after its silence window (speech_stopped.audio_end_ms
"includes the min_silence_duration_ms"), and semantic VAD waits a variable time. To measure turn
latency from the moment the caller actually went quiet, the bridge keeps the recent frames as they
arrived (a deque append per frame, nothing decoded) and looks for the last loud one afterwards.
"""

from __future__ import annotations

import binascii
import bisect
from collections import deque
from itertools import accumulate

from callassist.telephony.ulaw import EXPONENTS

FRAME_S = 0.020
_KEEP_FRAMES = 250  # 5 s of 20 ms frames
_FLOOR = 4  # peaks below octave 4 (|x| < ~1000 of 32k) are line noise rather than a voice
_BELOW_PEAK = 3  # a frame counts as speech within three octaves (1/8) of the loudest recent one
_OCTAVE = [bytes([octave]) for octave in range(8)]
# _AT_LEAST[n] turns an octave into 1 if it is n or more, else 0.
_AT_LEAST = [bytes(int(octave >= n) for octave in range(256)) for n in range(8)]


class InboundAudioTail:
    def __init__(self, keep_frames: int = _KEEP_FRAMES) -> None:
        self.frames: deque[tuple[float, str]] = deque(maxlen=keep_frames)  # (arrival, base64 μ-law)

    def last_speech_at(self, before: float, window_s: float = 3.0) -> float | None:
        """Arrival time (our clock) of the end of the last loud frame before `before`, or None.
        Called once per turn over ~150 frames, so the frames are measured together in a few C
        calls: the loudest octave present, then the last sample within three octaves of it."""
        start = before - window_s
        times: list[float] = []
        decoded: list[bytes] = []
        decode = binascii.a2b_base64
        for at, payload in self.frames:
            if start <= at <= before:
                try:
                    audio = decode(payload)
                except (binascii.Error, ValueError):
                    continue
                if audio:
                    decoded.append(audio)
                    times.append(at)
        octaves = b"".join(decoded).translate(EXPONENTS)
        peak = next((octave for octave in range(7, _FLOOR - 1, -1) if _OCTAVE[octave] in octaves), None)
        if peak is None:
            return None  # nothing above line noise
        last_loud = octaves.translate(_AT_LEAST[max(_FLOOR, peak - _BELOW_PEAK)]).rfind(b"\x01")
        return times[bisect.bisect_right(list(accumulate(map(len, decoded))), last_loud)]
