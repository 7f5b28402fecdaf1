"""TurnTaking: the caller's turns and the assistant's, as heard on the line.

It plays the assistant's audio to the media leg (and times the first chunk of each answer), and on a
barge-in stops the playback and tells the model and the record how much of each item the caller
actually heard. It keeps the caller's recent audio, to time turns from when they really went quiet
and to give a replacement session the words a lost one heard but never transcribed.
"""

from __future__ import annotations

import binascii
import logging
import time

from callassist import observability as obs
from callassist.call.journal import CallJournal
from callassist.call.speech import InboundAudioTail
from callassist.engine.base import Engine
from callassist.engine.events import AudioOut, SpeechStarted, SpeechStopped
from callassist.media.leg import MediaLeg
from callassist.telephony.media_stream import base64_size

LOST_TURN_PADDING_BYTES = 300 * 8  # the VAD's prefix padding: audio kept from before speech began


class TurnTaking:
    def __init__(
        self,
        leg: MediaLeg,
        engine: Engine,
        journal: CallJournal,
        *,
        started_at: float,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._leg = leg
        self._engine = engine
        self._journal = journal
        self._started_at = started_at
        self._log = logger
        self.inbound = InboundAudioTail()
        self.input_bytes = 0  # caller audio sent to the current session
        self.last_input_at = 0.0
        self.caller_speaking = False  # between the detector's speech_started and speech_stopped
        self.speech_item: str | None = None  # the caller turn the detector has open
        self._turn_ended_at: float | None = None
        self._awaiting_first_audio = True
        self.greeting_latency_s: float | None = None
        self.turn_latencies_s: list[float] = []
        self._muted_items: set[str] = set()
        self._muted_responses: set[str] = set()
        self._session_items: set[str] = set()  # items of the current session (only those truncate)
        self._item_response: dict[str, str] = {}
        self.last_audio_item: str | None = None
        self.asked_to_speak = False  # a text-only answer was re-asked for as speech (once in a row)

    # The assistant speaks -------------------------------------------------------------------------

    async def play(self, audio: AudioOut) -> None:
        size = base64_size(audio.payload)
        journal = self._journal
        journal.generated_bytes[audio.item_id] += size
        if audio.item_id in self._muted_items or audio.response_id in self._muted_responses:
            return  # late audio of something the caller interrupted
        if self._awaiting_first_audio:
            self._first_audio(audio.response_id)
        if audio.item_id != self.last_audio_item:
            self.asked_to_speak = False  # it spoke: a later text-only answer may be re-asked once
            self.last_audio_item = audio.item_id
            self._session_items.add(audio.item_id)
            self._item_response[audio.item_id] = audio.response_id
            journal.first_audio(audio.item_id, time.monotonic())
        await self._leg.play(audio.item_id, audio.payload, size)

    def _first_audio(self, response_id: str) -> None:
        now = time.monotonic()
        self._awaiting_first_audio = False
        if self.greeting_latency_s is None:
            self.greeting_latency_s = now - self._started_at
            obs.GREETING_LATENCY.observe(self.greeting_latency_s)
            self._log.info("greeting audio after %.0f ms", self.greeting_latency_s * 1000)
        elif self._turn_ended_at is not None:
            latency = now - self._turn_ended_at
            self.turn_latencies_s.append(latency)
            obs.TURN_LATENCY.observe(latency)
            self._journal.latency_ms[response_id] = round(latency * 1000)
            self._turn_ended_at = None

    def mute(self, response_id: str) -> None:
        """Nothing more of this response is played (cancelled, or the call is over)."""
        self._muted_responses.add(response_id)

    def response_over(self, response_id: str) -> None:
        self._muted_responses.discard(response_id)  # nothing of it can arrive any more

    # The caller speaks ------------------------------------------------------------------------------

    async def speech_started(self, event: SpeechStarted, interrupted_response: str | None) -> None:
        """The caller began a turn: stop the assistant where they are, and tell the model and the
        record what was heard of each item (an item heard in full needs no truncate)."""
        self.caller_speaking = True
        self.speech_item = event.item_id
        self._journal.speech_started(event.item_id, event.audio_start_ms)
        truncated: set[str] = set()
        for cut in await self._leg.clear():
            self._muted_items.add(cut.item_id)
            if cut.heard_ms < cut.sent_ms and cut.item_id in self._session_items:
                await self._engine.truncate(cut.item_id, cut.heard_ms)
                truncated.add(cut.item_id)
            self._journal.interrupted(cut.item_id, cut.heard_ms)
            self._log.info("barge-in: caller heard %d of %d ms", cut.heard_ms, cut.sent_ms)
        if interrupted_response is None:
            return
        # The service cancels its own response on speech (interrupt_response); drop what is in flight.
        self._muted_responses.add(interrupted_response)
        item = self.last_audio_item
        if (
            item is not None
            and item not in truncated
            and self._item_response.get(item) == interrupted_response
        ):
            # Generation was slower than playback: all that was sent was heard, and the rest of
            # what the service generated must not count as said.
            heard = int(self._leg.heard_ms(item))
            self._muted_items.add(item)
            if item in self._session_items:
                await self._engine.truncate(item, heard)
            self._journal.interrupted(item, heard)

    def speech_stopped(self, event: SpeechStopped) -> None:
        """The caller's turn ended: their answer's latency counts from when they really went quiet
        (the detector decides after its silence window)."""
        self.caller_speaking = False
        self.speech_item = None
        self._journal.speech_stopped(event.item_id, event.audio_end_ms)
        now = time.monotonic()
        decided_at = now
        if event.audio_end_ms is not None and self.last_input_at:
            behind_s = max(0.0, (self.input_bytes / 8 - event.audio_end_ms) / 1000)
            decided_at = min(now, self.last_input_at - behind_s)
        self._turn_ended_at = self.inbound.last_speech_at(before=decided_at) or decided_at
        self._awaiting_first_audio = True

    # A session is replaced ---------------------------------------------------------------------------

    def keep_lost_caller_audio(self) -> bytes:
        """The caller's words the lost session heard but never transcribed (transcription runs
        asynchronously) are kept in the transcript as their audio, from the inbound tail, so a new
        session hears them in their place. Speech still under way at the drop is returned, to be
        appended before the frames buffered since, so the new session's detector hears it whole."""
        journal = self._journal
        # The tail's frames the old session received, and where they sit in its input audio: the
        # newest `buffered_frames` arrived after the drop and go to the new session anyway.
        frames = list(self.inbound.frames)
        sent = frames[: max(0, len(frames) - self._engine.buffered_frames)]
        end = self.input_bytes - sum(base64_size(payload) for _, payload in frames[len(sent) :])
        heard = b"".join(binascii.a2b_base64(payload) for _, payload in sent)
        base = end - len(heard)

        def audio_of(extent: tuple[int, int] | None, *, to_the_end: bool = False) -> bytes:
            if extent is None:
                return b""
            start = max(base, extent[0] * 8 - LOST_TURN_PADDING_BYTES)
            stop = end if to_the_end else min(end, extent[1] * 8)
            return heard[start - base : stop - base] if stop > start else b""

        for item_id in journal.untranscribed:
            journal.caller_turn_lost(item_id, audio_of(journal.speech_extent(item_id)))
        if not (self.caller_speaking and self.speech_item):
            return b""
        unfinished = audio_of(journal.speech_extent(self.speech_item), to_the_end=True)
        journal.speech_abandoned(self.speech_item)
        return unfinished

    def session_replaced(self) -> None:
        """The old session's items are gone; audio still queued on the line plays out. What the
        caller was sent of its unfinished items becomes assistant turns."""
        self.input_bytes = 0
        self.caller_speaking = False
        self.speech_item = None
        self._session_items.clear()
        self.last_audio_item = None
        self._journal.session_lost(self._leg.sent_ms)
