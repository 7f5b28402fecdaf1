"""Who is speaking on a GPT-Live line, in the call's terms.

GPT-Live reports no turns: its audio and transcripts are deltas ("these events do not define
complete turns or include a transcript-done event", InputTranscriptDeltaEvent) and it has no voice
activity events. The call thinks in responses and caller turns, so they are made here:

- a stretch of the model's speech is one response with one item: it begins with its first audio
  delta and is over after UTTERANCE_GAP_S without audio or words from it (completed), or when the
  caller starts talking (cancelled: the model stops on its own, the call stops what is queued at
  Twilio, and what it says next is a new stretch);
- a caller turn begins with their first input transcript delta (SpeechStarted) and is over when the
  model speaks or after CALLER_QUIET_S without words (SpeechStopped, then CallerTranscribed with its
  words: transcription is part of the session's price, so 0 s are billed for it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from callassist.engine.events import (
    AssistantWords,
    AudioOut,
    CallerTranscribed,
    EngineEvent,
    ResponseFinished,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    SpokenItem,
)

# The service streams a stretch of speech without pauses longer than this between deltas (an
# assumption the docs leave open; too short only splits one answer into two turns in the record).
UTTERANCE_GAP_S = 0.6
# A caller who pauses longer than this mid-sentence starts a new turn in the record.
CALLER_QUIET_S = 1.0


@dataclass(slots=True)
class Speech:
    response_id: str
    item_id: str
    request: str | None
    last_at: float
    words: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CallerTurn:
    item_id: str
    start_ms: int
    end_ms: int
    last_at: float
    words: list[str] = field(default_factory=list)


class Turns:
    def __init__(self, take_request: Callable[[], str | None], new_id: Callable[[str], str]) -> None:
        """take_request: our request tag the model's next speech answers (None: its own);
        new_id: a fresh id with the given prefix."""
        self._take_request = take_request
        self._new_id = new_id
        self.speech: Speech | None = None
        self.caller: CallerTurn | None = None
        self._early_words: list[str] = []  # words of the model's speech before its first audio

    def reset(self) -> None:
        """The session was replaced: its open speech and turn went with it (the call kept them)."""
        self.speech, self.caller, self._early_words = None, None, []

    @property
    def open(self) -> bool:
        return self.speech is not None or self.caller is not None

    def deadline(self, now: float) -> float | None:
        """Seconds until the open speech or caller turn is taken as over, if one is open."""
        deadlines = []
        if self.speech is not None:
            deadlines.append(self.speech.last_at + UTTERANCE_GAP_S - now)
        if self.caller is not None:
            deadlines.append(self.caller.last_at + CALLER_QUIET_S - now)
        return min(deadlines) if deadlines else None

    def expire(self, now: float, out: list[EngineEvent]) -> None:
        if self.speech is not None and now - self.speech.last_at >= UTTERANCE_GAP_S:
            self.speech_over("completed", out)
        if self.caller is not None and now - self.caller.last_at >= CALLER_QUIET_S:
            self.caller_over(out)

    # The model -----------------------------------------------------------------------------------

    def audio(self, payload: str, out: list[EngineEvent]) -> None:
        speech = self.speech or self._speech_began(out)
        speech.last_at = time.monotonic()
        out.append(AudioOut(speech.response_id, speech.item_id, payload))

    def _speech_began(self, out: list[EngineEvent]) -> Speech:
        if self.caller is not None:
            self.caller_over(out)  # the model took its turn: the caller's is over
        request = self._take_request()
        speech = Speech(self._new_id("live_resp"), self._new_id("live_item"), request, time.monotonic())
        speech.words, self._early_words = self._early_words, []
        self.speech = speech
        out.append(ResponseStarted(speech.response_id, request))
        out += [AssistantWords(speech.item_id, word) for word in speech.words]
        return speech

    def assistant_words(self, delta: str, out: list[EngineEvent]) -> None:
        speech = self.speech
        if speech is None:
            self._early_words.append(delta)  # the transcript may run ahead of the audio
            return
        speech.words.append(delta)
        speech.last_at = time.monotonic()
        out.append(AssistantWords(speech.item_id, delta))

    def speech_over(self, status: str, out: list[EngineEvent]) -> None:
        speech, self.speech = self.speech, None
        if speech is None:
            return
        spoken = SpokenItem(speech.item_id, "".join(speech.words).strip(), True)
        out.append(ResponseFinished(speech.response_id, speech.request, status, spoken=(spoken,)))

    # The caller ----------------------------------------------------------------------------------

    def caller_words(self, data: dict[str, Any], out: list[EngineEvent]) -> None:
        now = time.monotonic()
        turn = self.caller
        if turn is None:
            turn = self.caller = CallerTurn(self._new_id("live_in"), int(data["start_ms"]), 0, now)
            out.append(SpeechStarted(turn.item_id, turn.start_ms))
            if self.speech is not None:
                self.speech_over("cancelled", out)  # the caller talks over the model
        turn.words.append(str(data["delta"]))
        turn.end_ms = int(data["end_ms"])
        turn.last_at = now

    def caller_over(self, out: list[EngineEvent]) -> None:
        turn, self.caller = self.caller, None
        if turn is None:
            return
        out.append(SpeechStopped(turn.item_id, turn.end_ms))
        out.append(CallerTranscribed(turn.item_id, "".join(turn.words).strip(), seconds=0.0))
