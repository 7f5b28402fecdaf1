"""Energy-based turn detection standing in for the service's server_vad / semantic_vad.

The real VAD is a model; this one is a level detector with the same knobs and the same event
timing conventions, so callassist sees the events it would see from the service:

* audio is cut into 20 ms frames; a frame is speech when its RMS >= 600 x (threshold / 0.5)
  (semantic_vad has no threshold and behaves as threshold 0.5);
* `speech_started` after 3 consecutive speech frames, with `audio_start_ms` = onset minus
  `prefix_padding_ms` (never before the start of the uncommitted buffer);
* `speech_stopped` once `silence_duration_ms` of non-speech followed (semantic_vad: eagerness
  low 1500 / medium, auto 800 / high 400 ms); `audio_end_ms` is where that silence window ends,
  i.e. it includes the silence, as the API reference says.

All positions are milliseconds into the session's input audio stream, not wall-clock time, so
results don't depend on how fast a test pushes audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tests.fakes.formats import AudioKind, bytes_per_ms, frame_energy, samples_per_ms
from tests.fakes.protocol import SEMANTIC_VAD_DEFAULTS, SERVER_VAD_DEFAULTS

FRAME_MS = 20
ONSET_FRAMES = 3
BASE_SPEECH_RMS = 600.0
SEMANTIC_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 400}
SEMANTIC_PREFIX_PADDING_MS = 300

VadEventKind = Literal["speech_started", "speech_stopped"]


@dataclass(frozen=True)
class VadSettings:
    """The parts of `session.audio.input.turn_detection` that drive the detector."""

    kind: Literal["server_vad", "semantic_vad"]
    threshold: float
    prefix_padding_ms: int
    silence_duration_ms: int
    create_response: bool
    interrupt_response: bool
    idle_timeout_ms: int | None

    @classmethod
    def from_turn_detection(cls, turn_detection: dict[str, Any] | None) -> VadSettings | None:
        """None when turn detection is off (the client commits and asks for responses itself)."""
        if not turn_detection:
            return None
        if turn_detection.get("type") == "semantic_vad":
            merged = {**SEMANTIC_VAD_DEFAULTS, **turn_detection}
            return cls(
                kind="semantic_vad",
                threshold=0.5,
                prefix_padding_ms=SEMANTIC_PREFIX_PADDING_MS,
                silence_duration_ms=SEMANTIC_SILENCE_MS.get(str(merged["eagerness"]), 800),
                create_response=bool(merged["create_response"]),
                interrupt_response=bool(merged["interrupt_response"]),
                idle_timeout_ms=None,
            )
        merged = {**SERVER_VAD_DEFAULTS, **{k: v for k, v in turn_detection.items() if v is not None}}
        return cls(
            kind="server_vad",
            threshold=float(merged["threshold"]),
            prefix_padding_ms=int(merged["prefix_padding_ms"]),
            silence_duration_ms=int(merged["silence_duration_ms"]),
            create_response=bool(merged["create_response"]),
            interrupt_response=bool(merged["interrupt_response"]),
            idle_timeout_ms=turn_detection.get("idle_timeout_ms"),
        )


@dataclass(frozen=True)
class VadEvent:
    kind: VadEventKind
    ms: int  # audio_start_ms for speech_started, audio_end_ms for speech_stopped


class TurnDetector:
    """Feeds on appended audio and reports speech start/stop positions."""

    def __init__(self, settings: VadSettings, kind: AudioKind, position_ms: float) -> None:
        self.settings = settings
        self._kind = kind
        self._frame_bytes = FRAME_MS * bytes_per_ms(kind)
        rms = BASE_SPEECH_RMS * (settings.threshold / 0.5)
        # Compare energies instead of RMS values: no square root per frame.
        self._energy_threshold = rms * rms * FRAME_MS * samples_per_ms(kind)
        self._carry = b""
        self._position_ms = position_ms  # start of the first byte in _carry
        self._speech_run = 0
        self._onset_ms = 0.0
        self._silence_ms = 0
        self.in_speech = False

    def reset(self) -> None:
        """Forget a turn in progress (after a commit or clear); keeps the stream position."""
        self._speech_run = 0
        self._silence_ms = 0
        self.in_speech = False

    def feed(self, audio: bytes, floor_ms: float) -> list[VadEvent]:
        """Process appended audio; `floor_ms` is where the uncommitted input buffer starts."""
        data = self._carry + audio if self._carry else audio
        frame_bytes = self._frame_bytes
        usable = len(data) - len(data) % frame_bytes
        events: list[VadEvent] = []
        kind = self._kind
        threshold = self._energy_threshold
        settings = self.settings
        for offset in range(0, usable, frame_bytes):
            frame_start = self._position_ms
            self._position_ms += FRAME_MS
            is_speech = frame_energy(data[offset : offset + frame_bytes], kind) >= threshold
            if not self.in_speech:
                if not is_speech:
                    self._speech_run = 0
                    continue
                self._speech_run += 1
                if self._speech_run == 1:
                    self._onset_ms = frame_start
                if self._speech_run >= ONSET_FRAMES:
                    self.in_speech = True
                    self._silence_ms = 0
                    start = max(floor_ms, self._onset_ms - settings.prefix_padding_ms, 0.0)
                    events.append(VadEvent("speech_started", int(start)))
            elif is_speech:
                self._silence_ms = 0
            else:
                self._silence_ms += FRAME_MS
                if self._silence_ms >= settings.silence_duration_ms:
                    self.in_speech = False
                    self._speech_run = 0
                    events.append(VadEvent("speech_stopped", int(self._position_ms)))
        self._carry = data[usable:]
        return events
