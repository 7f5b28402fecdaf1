"""Call recording (CALLASSIST_RECORD): both sides of a call as one stereo μ-law WAV, from the leg.

`RecordingLeg` wraps any media leg: the call doesn't know it is recorded (beyond its greeting saying
so). The caller is the left channel, the assistant the right, both the G.711 μ-law bytes that went
over the line (no transcoding: a WAV with format 7, 8 kHz, 8 bits). Time is the caller's frame
clock (Twilio sends a frame every 20 ms, speech or silence), so the assistant's audio is placed the
way Twilio plays it: back to back from when it was sent, and what a barge-in cleared from Twilio's
buffer is cut, as it was never heard.

Nothing is written on the audio path: frames go to memory, a background task appends them to two
raw files every second (on a worker thread), and the WAV is assembled on a thread once the call is
over. Files live in CALLASSIST_DATA_DIR/recordings, are readable by the owner's account only, and
are deleted after CALLASSIST_RECORD_RETENTION_DAYS.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
import os
import re
import struct
import time
from pathlib import Path

from callassist.media.leg import CallerAudio, LegCounts, LegEnd, LegEvent, MediaLeg
from callassist.media.playback import Interrupted

log = logging.getLogger(__name__)

RECORDINGS = "recordings"  # under CALLASSIST_DATA_DIR: one WAV per recorded call
FLUSH_S = 1.0
_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
SILENCE = 0xFF  # μ-law digital silence


def recording_path(directory: Path, call_sid: str) -> Path | None:
    """Where a call's WAV is (None for anything that is not a CallSid: no path tricks)."""
    if not _CALL_SID.fullmatch(call_sid):
        return None
    return directory / f"{call_sid}.wav"


class Recorder:
    """Both sides of one call, on the caller's frame clock (in samples = bytes)."""

    def __init__(self, directory: Path, call_sid: str) -> None:
        self.directory = directory
        self.call_sid = call_sid
        self._caller = bytearray()  # caller audio not yet flushed
        self._caller_flushed = 0  # samples written to the caller file
        self._segments: list[tuple[int, bytes]] = []  # assistant audio: (start sample, bytes)
        self._assistant_end = 0  # where the next assistant chunk starts (Twilio's buffer end)
        self._assistant_flushed = 0  # samples written to the assistant file (silence included)
        self._task: asyncio.Task[None] | None = None
        self._finishing = False
        self._writes = asyncio.Lock()  # one flush at a time, in order, on the worker thread
        self.failed = False

    @property
    def now(self) -> int:
        return self._caller_flushed + len(self._caller)

    def caller(self, audio: bytes) -> None:
        self._caller += audio

    def assistant(self, audio: bytes) -> None:
        start = max(self._assistant_end, self.now)
        self._segments.append((start, audio))
        self._assistant_end = start + len(audio)

    def cleared(self) -> None:
        """Twilio dropped what was queued: nothing after the caller's present was heard."""
        now = self.now
        kept: list[tuple[int, bytes]] = []
        for start, audio in self._segments:
            if start < now:
                kept.append((start, audio[: now - start]))
        self._segments = kept
        self._assistant_end = min(self._assistant_end, now)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._task = asyncio.create_task(self._flush_every_second(), name="call-recording")

    async def _flush_every_second(self) -> None:
        while not self._finishing:
            await asyncio.sleep(FLUSH_S)
            if not self._finishing:
                await self._flush(final=False)

    async def _flush(self, *, final: bool) -> None:
        async with self._writes:  # a flush on its thread is never overtaken nor cut off
            await self._flush_now(final=final)

    async def _flush_now(self, *, final: bool) -> None:
        caller, self._caller = bytes(self._caller), bytearray()
        self._caller_flushed += len(caller)
        # Assistant audio is final once the caller's clock has passed it (a clear can't cut it).
        limit = self._assistant_end if final else self._caller_flushed
        track = bytearray()
        pending: list[tuple[int, bytes]] = []
        position = self._assistant_flushed
        for start, audio in self._segments:
            if start >= limit:
                pending.append((start, audio))
                continue
            end = min(start + len(audio), limit)
            if start > position:
                track += bytes([SILENCE]) * (start - position)
                position = start
            track += audio[position - start : end - start]
            position = max(position, end)
            if start + len(audio) > limit:
                pending.append((limit, audio[limit - start :]))
        self._segments = pending
        self._assistant_flushed = position
        try:
            await asyncio.to_thread(self._append, caller, bytes(track))
        except OSError as exc:
            if not self.failed:
                log.warning("call recording: could not write (%s); the call goes on", exc)
            self.failed = True

    def _raw(self, side: str) -> Path:
        return self.directory / f"{self.call_sid}.{side}.raw"

    def _append(self, caller: bytes, assistant: bytes) -> None:
        for side, data in (("caller", caller), ("assistant", assistant)):
            if data:
                descriptor = os.open(self._raw(side), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(descriptor, "ab") as file:
                    file.write(data)

    async def finish(self) -> Path | None:
        """Write what is left and assemble the WAV (on a thread); its path, or None."""
        self._finishing = True  # the periodic flush stops; one under way completes (the lock)
        await self._flush(final=True)
        if self._task is not None:
            self._task.cancel()
        if self.failed:
            return None
        try:
            return await asyncio.to_thread(self._assemble)
        except OSError as exc:
            log.warning("call recording: could not assemble the WAV (%s)", exc)
            return None

    def _assemble(self) -> Path:
        sides = []
        for side in ("caller", "assistant"):
            path = self._raw(side)
            sides.append(path.read_bytes() if path.exists() else b"")
        length = max(len(sides[0]), len(sides[1]))
        left, right = (side.ljust(length, bytes([SILENCE])) for side in sides)
        frames = bytearray(2 * length)
        frames[0::2], frames[1::2] = left, right
        target = self.directory / f"{self.call_sid}.wav"
        partial = self.directory / f"{self.call_sid}.wav.part"  # never served half-written
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(wav_header(len(frames)))
            file.write(frames)
        os.replace(partial, target)
        for side in ("caller", "assistant"):
            self._raw(side).unlink(missing_ok=True)
        return target


def wav_header(data_bytes: int, channels: int = 2, rate: int = 8000) -> bytes:
    """RIFF/WAVE with a WAVE_FORMAT_MULAW (7) fmt chunk: 8-bit G.711 μ-law, as on the line."""
    fmt = struct.pack("<HHIIHHH", 7, channels, rate, rate * channels, channels, 8, 0)
    fact = struct.pack("<I", data_bytes // channels)
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"fact"
        + struct.pack("<I", 4)
        + fact
        + b"data"
        + struct.pack("<I", data_bytes)
    )
    return b"RIFF" + struct.pack("<I", len(body) + data_bytes) + body


class RecordingLeg:
    """A media leg that records what passes through another one (see the module's docstring)."""

    def __init__(self, inner: MediaLeg, recorder: Recorder) -> None:
        self._inner = inner
        self.recorder = recorder
        self.counts: LegCounts = inner.counts

    async def receive(self) -> LegEvent:
        event = await self._inner.receive()
        if isinstance(event, CallerAudio):
            # The leg checked the frame already; a recording never costs the caller a frame.
            with contextlib.suppress(binascii.Error, ValueError):
                self.recorder.caller(binascii.a2b_base64(event.payload))
        return event

    async def play(self, item_id: str, payload: str, size: int) -> None:
        await self._inner.play(item_id, payload, size)
        self.recorder.assistant(binascii.a2b_base64(payload))

    async def clear(self, *, barge_in: bool = True) -> list[Interrupted]:
        cuts = await self._inner.clear(barge_in=barge_in)
        if cuts:
            self.recorder.cleared()
        return cuts

    @property
    def audible(self) -> bool:
        return self._inner.audible

    def heard_ms(self, item_id: str) -> float:
        return self._inner.heard_ms(item_id)

    def sent_ms(self, item_id: str) -> float:
        return self._inner.sent_ms(item_id)

    async def wait_drained(self, within_s: float) -> bool:
        return await self._inner.wait_drained(within_s)

    @property
    def lost(self) -> LegEnd | None:
        return self._inner.lost

    async def wait_lost(self) -> LegEnd:
        return await self._inner.wait_lost()

    def forget_queued(self) -> list[Interrupted]:
        cuts = self._inner.forget_queued()
        if cuts:
            self.recorder.cleared()
        return cuts

    async def close(self) -> None:
        await self._inner.close()


def delete_expired(directory: Path, days: int) -> int:
    """Recordings older than `days` days are deleted (the retention), with the working files a
    crash left behind; how many."""
    if not directory.is_dir():
        return 0
    cutoff = time.time() - days * 86400
    deleted = 0
    for path in [*directory.glob("CA*.wav"), *directory.glob("CA*.raw"), *directory.glob("CA*.part")]:
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except OSError:
            continue
    return deleted
