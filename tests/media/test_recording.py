"""Call recording: both sides on the caller's clock, what a barge-in cleared cut, a WAV sox reads
(tests/call/test_call_recording.py records a call over real sockets)."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from pathlib import Path

from callassist.media.recording import SILENCE, Recorder, delete_expired, recording_path

CALL = "CA" + "0" * 31 + "1"


def wav_parts(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    start = data.index(b"data") + 8
    frames = data[start:]
    return frames[0::2], frames[1::2]


async def test_assistant_audio_plays_from_when_it_was_sent_and_a_clear_cuts_what_was_queued(
    tmp_path: Path,
) -> None:
    recorder = Recorder(tmp_path, CALL)
    recorder.caller(b"\x01" * 800)  # 100 ms of the caller
    recorder.assistant(b"\x02" * 1600)  # 200 ms, queued at once, plays from 100 ms
    recorder.caller(b"\x03" * 800)  # 100 ms later the caller speaks over it
    recorder.cleared()  # Twilio drops the 100 ms still queued
    recorder.assistant(b"\x04" * 400)  # the next answer starts now
    recorder.caller(b"\x05" * 800)
    path = await recorder.finish()
    assert path == tmp_path / f"{CALL}.wav"
    left, right = wav_parts(path)
    assert left == b"\x01" * 800 + b"\x03" * 800 + b"\x05" * 800
    assert right == bytes([SILENCE]) * 800 + b"\x02" * 800 + b"\x04" * 400 + bytes([SILENCE]) * 400
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob("*.raw")))  # working files gone
    assert path.stat().st_mode & 0o077 == 0  # the owner's only


async def test_sox_reads_the_wav_as_stereo_mu_law(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, CALL)
    recorder.start()
    recorder.caller(random.Random(1).randbytes(8000))
    path = await recorder.finish()
    assert path is not None
    sox = await asyncio.to_thread(subprocess.run, ["sox", "--i", str(path)], capture_output=True, text=True)
    info = sox.stdout
    assert "Channels       : 2" in info and "Sample Rate    : 8000" in info
    assert "u-law" in info and "00:00:01.00" in info


def test_only_call_sids_name_recordings_and_old_ones_expire(tmp_path: Path) -> None:
    assert recording_path(tmp_path, "../../etc/passwd") is None
    assert recording_path(tmp_path, CALL) == tmp_path / f"{CALL}.wav"
    old, new = tmp_path / f"{CALL}.wav", tmp_path / ("CA" + "0" * 31 + "2.wav")
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    os.utime(old, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    assert delete_expired(tmp_path, 2) == 1
    assert not old.exists() and new.exists()
