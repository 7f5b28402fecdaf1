"""G.711 μ-law audio for the simulated caller and the test stand-ins: codec, WAV files, speech.

Phone audio here is always μ-law, 8 kHz, mono: 8 bytes per millisecond, 160 bytes per 20 ms frame.
Speech is made with espeak-ng and converted with sox, the same tools the README asks a user to install.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import wave
from functools import lru_cache
from pathlib import Path

from callassist.telephony.ulaw import BYTES_PER_MS, SAMPLE_RATE, ULAW_TO_LINEAR, loudness, rms
from callassist.telephony.ulaw import SILENCE as ULAW_SILENCE

__all__ = ["BYTES_PER_MS", "SAMPLE_RATE", "ULAW_SILENCE", "ULAW_TO_LINEAR", "rms"]

FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS
# When speech ends in a clip: a frame is speech when its loudest sample is within three octaves of
# the loudest frame of the last 3 s, and above line noise (octave 4, |x| ~ 1000 of 32k). The server
# judges the caller's last loud frame by the same rule (call/speech.py), so both measure a turn from
# the same moment.
SPEECH_FLOOR_OCTAVE = 4
SPEECH_BELOW_PEAK_OCTAVES = 3
SPEECH_WINDOW_FRAMES = 3000 // FRAME_MS


class AudioToolMissing(RuntimeError):
    """espeak-ng or sox is not installed."""


def linear_to_ulaw(sample: int) -> int:
    """Encode one 16-bit linear sample as μ-law (G.711, with the usual bias and clip)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), clip) + bias
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not magnitude & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Decode μ-law bytes to little-endian 16-bit PCM."""
    table = ULAW_TO_LINEAR
    out = bytearray(len(ulaw) * 2)
    for index, code in enumerate(ulaw):
        out[2 * index : 2 * index + 2] = table[code].to_bytes(2, "little", signed=True)
    return bytes(out)


def silence(ms: int) -> bytes:
    return bytes([ULAW_SILENCE]) * (ms * BYTES_PER_MS)


def tone(ms: int, frequency: float = 440.0, amplitude: int = 8000) -> bytes:
    """A sine tone as μ-law: a deterministic stand-in for speech where words don't matter."""
    count = ms * BYTES_PER_MS
    return bytes(
        linear_to_ulaw(int(amplitude * math.sin(2 * math.pi * frequency * n / SAMPLE_RATE)))
        for n in range(count)
    )


def frames(ulaw: bytes, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    """Split audio into fixed frames, padding the last one with silence as Twilio does."""
    chunks = [ulaw[i : i + frame_bytes] for i in range(0, len(ulaw), frame_bytes)]
    if chunks and len(chunks[-1]) < frame_bytes:
        chunks[-1] = chunks[-1] + bytes([ULAW_SILENCE]) * (frame_bytes - len(chunks[-1]))
    return chunks


def speech_frames(chunks: list[bytes]) -> int:
    """How many of `chunks` (20 ms frames) it takes to reach the end of the speech in them: up to and
    including the last loud frame, so trailing silence doesn't count. 0 when none is loud."""
    levels = [loudness(chunk) for chunk in chunks[-SPEECH_WINDOW_FRAMES:]]
    if not levels or max(levels) < SPEECH_FLOOR_OCTAVE:
        return 0
    threshold = max(SPEECH_FLOOR_OCTAVE, max(levels) - SPEECH_BELOW_PEAK_OCTAVES)
    last = max(index for index, level in enumerate(levels) if level >= threshold)
    return len(chunks) - len(levels) + last + 1


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise AudioToolMissing(
            f"{tool} is not installed (Debian/Ubuntu: sudo apt-get install espeak-ng sox; "
            "macOS: brew install espeak-ng sox)"
        )
    return path


def convert_to_ulaw(path: Path) -> bytes:
    """Any audio file sox can read -> raw μ-law 8 kHz mono bytes."""
    sox = _require("sox")
    result = subprocess.run(
        [sox, str(path), "-t", "raw", "-r", str(SAMPLE_RATE), "-c", "1", "-e", "mu-law", "-b", "8", "-"],
        check=False,
        capture_output=True,
    )
    if result.returncode != 0:
        raise ValueError(f"sox could not read {path}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


@lru_cache(maxsize=256)
def speak(text: str, voice: str = "en-us", words_per_minute: int = 170) -> bytes:
    """Synthesize `text` with espeak-ng and return it as μ-law 8 kHz (cached per text)."""
    espeak = _require("espeak-ng")
    with tempfile.TemporaryDirectory(prefix="callassist-tts-") as tmp:
        wav_path = Path(tmp) / "speech.wav"
        result = subprocess.run(
            [espeak, "-v", voice, "-s", str(words_per_minute), "-w", str(wav_path), text],
            check=False,
            capture_output=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"espeak-ng failed: {result.stderr.decode(errors='replace').strip()}")
        return convert_to_ulaw(wav_path)


def write_wav(path: Path, ulaw: bytes) -> None:
    """Save μ-law audio as a 16-bit PCM WAV file any player can open."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(ulaw_to_pcm16(ulaw))
