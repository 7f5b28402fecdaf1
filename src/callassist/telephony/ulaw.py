"""G.711 μ-law, the phone network's audio: 8 kHz, one byte per sample, 8 bytes per millisecond."""

from __future__ import annotations

import math

SAMPLE_RATE = 8000
BYTES_PER_MS = 8
SILENCE = 0xFF  # the μ-law code for 0 (Twilio pads with it)


def _ulaw_to_linear(code: int) -> int:
    code = ~code & 0xFF
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    magnitude -= 0x84
    return -magnitude if sign else magnitude


ULAW_TO_LINEAR: tuple[int, ...] = tuple(_ulaw_to_linear(code) for code in range(256))
_SQUARES: tuple[int, ...] = tuple(value * value for value in ULAW_TO_LINEAR)


def rms(ulaw: bytes) -> float:
    """Root-mean-square level of μ-law audio in linear units (0..32124)."""
    if not ulaw:
        return 0.0
    return math.sqrt(sum(map(_SQUARES.__getitem__, ulaw)) / len(ulaw))


# Each μ-law code's exponent (0..7): the octave of its magnitude, each step about double the last.
EXPONENTS = bytes((~code & 0xFF) >> 4 & 0x07 for code in range(256))


def loudness(ulaw: bytes) -> int:
    """The loudest sample's octave (0 silence .. 7 full scale), two C calls: cheap enough to scan
    seconds of audio at once."""
    return max(ulaw.translate(EXPONENTS), default=0)
