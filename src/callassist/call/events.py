"""The call event stream: what happens on every call, as typed events, for whoever subscribes.

A call publishes; subscribers (the metrics, the runtime's health and apology bookkeeping, a live
dashboard) read. Publishing never blocks the call and a failing subscriber never breaks it. The
call's record is written by its journal and recorder, in order and transactionally, not from here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from callassist import observability as obs

if TYPE_CHECKING:
    from callassist.call.transcript import Turn
    from callassist.tools.registry import ToolOutcome

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class CallStarted:
    call_sid: str
    caller_number: str | None
    is_owner: bool


@dataclass(slots=True, frozen=True)
class TurnHeard:
    """A turn as heard (a caller's words, an assistant answer cut where they interrupted it)."""

    call_sid: str
    turn: Turn


@dataclass(slots=True, frozen=True)
class ToolRan:
    call_sid: str
    outcome: ToolOutcome


@dataclass(slots=True, frozen=True)
class CostAdded:
    call_sid: str
    kind: str  # response, transcription
    cost: Decimal


@dataclass(slots=True, frozen=True)
class AssistantLost:
    """The model could not be reached for this call: the caller is apologised to."""

    call_sid: str


@dataclass(slots=True, frozen=True)
class CallEnded:
    call_sid: str
    reason: str
    duration_s: float


CallEvent = CallStarted | TurnHeard | ToolRan | CostAdded | AssistantLost | CallEnded
Subscriber = Callable[[CallEvent], None]


class CallEvents:
    """Server-wide: every call publishes here."""

    def __init__(self, *subscribers: Subscriber) -> None:
        self._subscribers: list[Subscriber] = list(subscribers)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Start receiving events; returns the function that stops it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def publish(self, event: CallEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("a subscriber failed on %s", type(event).__name__)


def count_calls(event: CallEvent) -> None:
    """The metrics' subscriber: calls in progress and calls ended, by outcome."""
    if isinstance(event, CallStarted):
        obs.CALLS_ACTIVE.inc()
    elif isinstance(event, CallEnded):
        obs.CALLS_ACTIVE.dec()
        obs.CALLS_TOTAL.labels(outcome=event.reason).inc()
