"""Who said what, as heard: the call's conversation in order, and what a new session is given.

Caller turns come from input transcription; assistant turns from the output transcript, cut to
what the caller actually heard when they interrupted. Tool results are kept as notes so a new
OpenAI session (after a drop or the 60-minute cap) can be told what was already done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Role = Literal["caller", "assistant", "system"]
# A replay bigger than this is trimmed from the start: the newest context matters most.
MAX_REPLAY_CHARS = 24_000
INAUDIBLE = "[inaudible]"
UNTRANSCRIBED = "[not transcribed: the connection dropped]"


@dataclass
class Turn:
    role: Role
    text: str
    spoken_at: datetime
    item_id: str | None = None
    response_id: str | None = None
    interrupted: bool = False
    heard_ms: int | None = None
    audio_ms: int | None = None
    latency_ms: int | None = None
    recorded: bool = False  # persisted: later changes are updates
    audio: bytes | None = field(default=None, repr=False)  # a caller turn's μ-law, when not transcribed


def cut_to_heard(text: str, heard_ms: float, generated_ms: float) -> str:
    """The part of `text` spoken in the first `heard_ms` of `generated_ms` of audio, at a word edge.

    Speech runs at a roughly even pace, so the share of audio heard is the share of words heard.
    """
    if generated_ms <= 0 or heard_ms >= generated_ms:
        return text
    if heard_ms <= 0:
        return ""
    words = text.split()
    kept = round(len(words) * heard_ms / generated_ms)
    return " ".join(words[:kept])


class Transcript:
    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self._by_item: dict[str, Turn] = {}

    def add(self, turn: Turn) -> Turn:
        self.turns.append(turn)
        if turn.item_id:
            self._by_item[turn.item_id] = turn
        return turn

    def get(self, item_id: str) -> Turn | None:
        return self._by_item.get(item_id)

    def cut(self, item_id: str, heard_ms: float, generated_ms: float) -> Turn | None:
        """The caller stopped hearing this assistant turn after `heard_ms`: keep only that part."""
        turn = self._by_item.get(item_id)
        if turn is None or turn.role != "assistant" or heard_ms >= generated_ms:
            return None
        turn.text = cut_to_heard(turn.text, heard_ms, generated_ms)
        turn.interrupted = True
        turn.heard_ms = int(heard_ms)
        return turn

    def note(self, text: str, at: datetime) -> Turn:
        """Something that happened without being said (a tool result), for replay only."""
        return self.add(Turn("system", text, at))

    @property
    def spoken(self) -> list[Turn]:
        return sorted((t for t in self.turns if t.role != "system"), key=lambda t: t.spoken_at)

    @property
    def has_conversation(self) -> bool:
        return any(
            turn.role == "caller" and turn.text not in (INAUDIBLE, UNTRANSCRIBED) for turn in self.turns
        )

    @property
    def awaiting_answer(self) -> bool:
        """Did the caller speak, or a tool answer, after the assistant last spoke (so a new session
        must respond)?"""
        ordered = sorted(self.turns, key=lambda t: t.spoken_at)
        for turn in reversed(ordered):
            if turn.role == "caller" and turn.text == UNTRANSCRIBED and not turn.audio:
                continue  # nothing of it can be answered
            if turn.role in ("caller", "system"):
                return True
            if turn.role == "assistant" and turn.text:
                return False
        return False

    def history(self, max_chars: int = MAX_REPLAY_CHARS) -> list[Turn]:
        """The turns a new session is given to carry on the conversation, oldest first: everything
        that has words (or, untranscribed, its audio), trimmed from the start beyond `max_chars`."""
        kept: list[Turn] = []
        used = 0
        for turn in sorted(self.turns, key=lambda t: t.spoken_at, reverse=True):
            if not turn.text or turn.text == INAUDIBLE or (turn.text == UNTRANSCRIBED and not turn.audio):
                continue
            if used + len(turn.text) > max_chars:
                break
            used += len(turn.text)
            kept.append(turn)
        kept.reverse()
        return kept


def tool_note(name: str, output: dict[str, Any]) -> str:
    """A tool result in one line for replay: what was done, not every field."""
    keep = {key: output[key] for key in ("ok", "say", "error", "event", "cancelled") if key in output}
    return f"Earlier in this call the tool {name} returned: {json.dumps(keep, ensure_ascii=False)}"
