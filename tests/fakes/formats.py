"""The three GA audio formats (audio/pcmu, audio/pcma, audio/pcm 24 kHz) for the fake server.

Scripted speech is μ-law 8 kHz (from `callassist.simulator.audio`); these helpers convert it into
whatever format the session asked for and give the VAD a cheap energy measure per format.
Conversions are table lookups because the fake also runs in a 200-session benchmark.
"""

from __future__ import annotations

from array import array
from operator import mul
from typing import Any, Literal

from callassist.simulator.audio import ULAW_TO_LINEAR

AudioKind = Literal["pcmu", "pcma", "pcm"]

_KINDS: dict[str, AudioKind] = {"audio/pcmu": "pcmu", "audio/pcma": "pcma", "audio/pcm": "pcm"}


def audio_kind(audio_format: dict[str, Any] | None) -> AudioKind:
    """Map a session format object to a short name; the service's default is 24 kHz PCM."""
    if not audio_format:
        return "pcm"
    return _KINDS.get(str(audio_format.get("type")), "pcm")


def bytes_per_ms(kind: AudioKind) -> int:
    # G.711: 8000 samples/s x 1 byte; PCM: 24000 samples/s x 2 bytes
    return 48 if kind == "pcm" else 8


def _alaw_to_linear(code: int) -> int:
    code ^= 0x55
    magnitude = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        magnitude += 8
    elif segment == 1:
        magnitude += 0x108
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


_ALAW_SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _linear_to_alaw(sample: int) -> int:
    value = sample >> 3
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    segment = next((index for index, end in enumerate(_ALAW_SEGMENT_ENDS) if value <= end), 8)
    if segment >= 8:
        return 0x7F ^ mask
    code = segment << 4
    code |= (value >> 1) & 0x0F if segment < 2 else (value >> segment) & 0x0F
    return code ^ mask


ALAW_TO_LINEAR: tuple[int, ...] = tuple(_alaw_to_linear(code) for code in range(256))
ULAW_TO_ALAW: bytes = bytes(_linear_to_alaw(ULAW_TO_LINEAR[code]) for code in range(256))
# Squares per code, so a frame's energy is one `sum(map(...))` without multiplications.
ULAW_SQUARES: tuple[int, ...] = tuple(value * value for value in ULAW_TO_LINEAR)
ALAW_SQUARES: tuple[int, ...] = tuple(value * value for value in ALAW_TO_LINEAR)
# μ-law code -> three little-endian 16-bit samples: 8 kHz to 24 kHz by sample repetition, which
# is plenty for a fake whose audio only has to have the right length and loudness.
_ULAW_TO_PCM24: tuple[bytes, ...] = tuple(
    ULAW_TO_LINEAR[code].to_bytes(2, "little", signed=True) * 3 for code in range(256)
)


def ulaw_to_format(ulaw: bytes, kind: AudioKind) -> bytes:
    """Convert μ-law 8 kHz audio to the session's output format."""
    if kind == "pcmu":
        return ulaw
    if kind == "pcma":
        return ulaw.translate(ULAW_TO_ALAW)
    return b"".join(map(_ULAW_TO_PCM24.__getitem__, ulaw))


def frame_energy(frame: bytes, kind: AudioKind) -> int:
    """Sum of squared linear samples of one frame."""
    if kind == "pcmu":
        return sum(map(ULAW_SQUARES.__getitem__, frame))
    if kind == "pcma":
        return sum(map(ALAW_SQUARES.__getitem__, frame))
    samples = array("h")
    samples.frombytes(frame[: len(frame) - len(frame) % 2])
    return sum(map(mul, samples, samples))


def samples_per_ms(kind: AudioKind) -> int:
    return 24 if kind == "pcm" else 8
