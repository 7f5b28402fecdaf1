"""A call's phase: one value with checked transitions instead of a flag per state."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Before a call exists, the owner's phone may ring (the webhook) and the stream's `start` is
    awaited (call/opening.py). A Call begins connecting to the model."""

    connecting = "connecting"  # the model's session is being opened and configured
    live = "live"  # the conversation is on
    on_hold = "on-hold"  # a warm transfer rings the owner; the caller hears hold audio
    winding_down = "winding-down"  # a goodbye is under way: the call ends after it
    ended = "ended"  # cleanup runs; nothing new starts


_NEXT: dict[Phase, frozenset[Phase]] = {
    Phase.connecting: frozenset({Phase.live, Phase.ended}),
    Phase.live: frozenset({Phase.on_hold, Phase.winding_down, Phase.ended}),
    Phase.on_hold: frozenset({Phase.live, Phase.winding_down, Phase.ended}),
    Phase.winding_down: frozenset({Phase.live, Phase.ended}),  # live again: a goodbye taken back
    Phase.ended: frozenset(),
}


def move(current: Phase, new: Phase) -> Phase:
    """The phase after moving from `current` to `new` (the same phase is no move); a RuntimeError
    for a move the lifecycle doesn't allow (a bug, never the caller's doing)."""
    if new is not current and new not in _NEXT[current]:
        raise RuntimeError(f"a call can't go from {current} to {new}")
    return new
