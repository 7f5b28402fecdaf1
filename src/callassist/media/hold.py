"""Hold audio: what the caller hears while the owner is rung (a warm transfer, call/transfer.py).

A soft three-note chime every few seconds, made here as μ-law (no file to ship, nothing to
transcode), and played through the media leg like the assistant's audio, a little ahead of real
time so a slow loop never leaves a gap, and cleared the moment the caller is back with the
assistant.
"""

from __future__ import annotations

import asyncio
import base64
import math
from functools import cache

from callassist.media.leg import MediaLeg
from callassist.telephony.ulaw import SAMPLE_RATE

HOLD_ITEM = "hold"  # the item id hold audio is played under (never a transcript item)
CHUNK_S = 0.5  # one chunk sent every half second ...
LEAD_CHUNKS = 2  # ... kept this many ahead of what is heard
_NOTES_HZ = (523.25, 659.25, 783.99)  # C5 E5 G5
_NOTE_S = 0.35
_PAUSE_S = 2.45  # silence after the chime: one cycle is 3.5 s
_LEVEL = 0.12  # of full scale: soft, below the assistant's voice


def linear_to_ulaw(sample: int) -> int:
    """One 16-bit linear sample as a G.711 μ-law code (the ITU-T G.711 segment encoding)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), clip) + bias
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


@cache
def hold_cycle() -> bytes:
    """One cycle of hold audio (the chime and its pause), μ-law at 8 kHz."""
    samples: list[int] = []
    note_len = int(_NOTE_S * SAMPLE_RATE)
    for frequency in _NOTES_HZ:
        for n in range(note_len):
            envelope = min(1.0, n / 160) * math.exp(-3.0 * n / note_len)  # 20 ms attack, soft decay
            value = _LEVEL * envelope * math.sin(2 * math.pi * frequency * n / SAMPLE_RATE)
            samples.append(round(value * 32767))
    samples += [0] * int(_PAUSE_S * SAMPLE_RATE)
    return bytes(linear_to_ulaw(sample) for sample in samples)


async def play_hold(leg: MediaLeg) -> None:
    """Play hold audio on `leg` until cancelled (then clear it with `leg.clear()`)."""
    cycle = hold_cycle()
    size = int(CHUNK_S * SAMPLE_RATE)
    chunks = [
        base64.b64encode((cycle * 2)[start : start + size]).decode("ascii")
        for start in range(0, len(cycle), size)
    ]
    loop = asyncio.get_running_loop()
    started, sent = loop.time(), 0
    while leg.lost is None:
        await leg.play(HOLD_ITEM, chunks[sent % len(chunks)], size)
        sent += 1
        # Sleep until the chunk LEAD_CHUNKS behind this one is due to be heard.
        await asyncio.sleep(max(0.0, started + (sent - LEAD_CHUNKS) * CHUNK_S - loop.time()))
