"""What the live page shows: the calls in progress, fed by the call event stream, and a bounded ring
of numbered events the page's server-sent event streams read.

`LiveCalls.publish` is a `CallEvents` subscriber: synchronous, constant work, never waits. It
updates the state of the live calls, appends one event (with the next id) to a ring of the last
`RING_SIZE`, and wakes the readers. A reader (one SSE client) catches up from the ring at its own
pace; one that fell further behind than the ring holds gets a fresh snapshot instead. Nothing a
caller says is logged here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from callassist.call.events import CallEnded, CallEvent, CallStarted, CostAdded, ToolRan, TurnHeard
from callassist.store.contacts import ContactRepository
from callassist.store.db import Database, describe_failure

log = logging.getLogger(__name__)

RING_SIZE = 2000
LINES_KEPT = 200  # per live call: the page shows the latest; the record keeps them all
TOOLS_KEPT = 50
NameLookup = Callable[[str], Awaitable[str | None]]


def mask_number(number: str | None) -> str:
    """A caller's number with only its last 4 digits shown: '+1 ••• ••• 0000'."""
    if not number:
        return "unknown number"
    digits = [c for c in number if c.isdigit()]
    if len(digits) <= 4:
        return "•" * len(digits)
    return "•••" + "".join(digits[-4:])


def tool_label(name: str, ok: bool, arguments: str) -> str:
    """A short line for a tool call: its name, what it was given (compact), and whether it worked."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        parsed = None
    parts: list[str] = []
    if isinstance(parsed, dict):
        for key, value in list(parsed.items())[:3]:
            if isinstance(value, str | int | float | bool):
                parts.append(f"{key}={str(value)[:40]}")
    detail = f" ({', '.join(parts)})" if parts else ""
    return f"{name.replace('_', ' ')}{detail}{'' if ok else ' — failed'}"


@dataclass
class LiveLine:
    role: str
    text: str
    interrupted: bool
    at: str  # ISO instant
    item_id: str | None = None  # an assistant answer cut later (barge-in) comes again: it replaces

    def json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "text": self.text,
            "interrupted": self.interrupted,
            "at": self.at,
            "item_id": self.item_id,
        }


@dataclass
class LiveCall:
    call_sid: str
    caller_number: str | None
    is_owner: bool
    started_at: datetime
    caller_name: str | None = None
    cost: Decimal = Decimal(0)
    lines: deque[LiveLine] = field(default_factory=lambda: deque(maxlen=LINES_KEPT))
    tools: deque[str] = field(default_factory=lambda: deque(maxlen=TOOLS_KEPT))

    def json(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "caller": self.caller_name or ("the owner" if self.is_owner else None),
            "number": mask_number(self.caller_number),
            "started_at": self.started_at.isoformat(),
            "cost": f"{self.cost:.4f}",
            "lines": [line.json() for line in self.lines],
            "tools": list(self.tools),
        }


@dataclass(frozen=True)
class LiveEvent:
    id: int
    kind: str  # snapshot, call-started, call-updated, line, tool, cost, call-ended
    data: str  # JSON

    def sse(self, epoch: str) -> str:
        """As a server-sent event; its id carries this server's epoch, so an id from before a
        restart is never taken for one of the new server's."""
        return f"id: {epoch}.{self.id}\nevent: {self.kind}\ndata: {self.data}\n\n"


class LiveCalls:
    """The live calls of this server and the ring of recent events about them."""

    def __init__(self, ring_size: int = RING_SIZE, clock: Callable[[], float] = time.time) -> None:
        self.calls: dict[str, LiveCall] = {}
        self._ring: deque[LiveEvent] = deque(maxlen=ring_size)
        self._next_id = 1
        self._changed = asyncio.Event()
        self._clock = clock
        self._lookup: NameLookup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.epoch = secrets.token_hex(4)

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    def attach(self, database: Database) -> None:
        """Where a live caller's contact name is looked up (off the call's path)."""

        async def lookup(number: str) -> str | None:
            async with database.session(read_only=True) as session:
                contact = await ContactRepository(session).get(number)
            return contact.name if contact is not None else None

        self._lookup = lookup

    def close(self) -> None:
        """The server is stopping: every event stream ends."""
        self.closed = True
        self._wake()
        for task in self._tasks:
            task.cancel()

    # The subscriber ----------------------------------------------------------------------------

    def publish(self, event: CallEvent) -> None:
        if isinstance(event, CallStarted):
            started = datetime.fromtimestamp(self._clock(), UTC)
            live = LiveCall(event.call_sid, event.caller_number, event.is_owner, started)
            self.calls[event.call_sid] = live
            self._emit("call-started", live.json())
            if event.caller_number and self._lookup is not None and not event.is_owner:
                self._spawn(self._find_name(live, event.caller_number))
            return
        live_call = self.calls.get(event.call_sid)
        if isinstance(event, CallEnded):
            self.calls.pop(event.call_sid, None)
            self._emit(
                "call-ended",
                {"call_sid": event.call_sid, "reason": event.reason, "duration_s": round(event.duration_s)},
            )
        elif live_call is None:
            return
        elif isinstance(event, TurnHeard):
            turn = event.turn
            if not turn.text.strip():
                return
            line = LiveLine(turn.role, turn.text, turn.interrupted, turn.spoken_at.isoformat(), turn.item_id)
            self._add_line(live_call, line)
            self._emit("line", {"call_sid": event.call_sid, **line.json()})
        elif isinstance(event, ToolRan):
            outcome = event.outcome
            label = tool_label(outcome.name, outcome.ok, outcome.arguments)
            live_call.tools.append(label)
            self._emit("tool", {"call_sid": event.call_sid, "label": label})
        elif isinstance(event, CostAdded):
            live_call.cost += event.cost
            self._emit("cost", {"call_sid": event.call_sid, "cost": f"{live_call.cost:.4f}"})

    @staticmethod
    def _add_line(live_call: LiveCall, line: LiveLine) -> None:
        if line.item_id is not None:
            for index, earlier in enumerate(live_call.lines):
                if earlier.item_id == line.item_id:
                    live_call.lines[index] = line
                    return
        live_call.lines.append(line)

    async def _find_name(self, live: LiveCall, number: str) -> None:
        assert self._lookup is not None
        try:
            name = await self._lookup(number)
        except Exception as exc:  # the page shows the number; never the SQL and its parameters
            log.warning("could not look up a live caller's contact name: %s", describe_failure(exc))
            return
        if name and self.calls.get(live.call_sid) is live:
            live.caller_name = name
            self._emit("call-updated", live.json())

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run(), name="live-caller-name")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        self._ring.append(LiveEvent(self._next_id, kind, json.dumps(data, ensure_ascii=False)))
        self._next_id += 1
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # The readers -------------------------------------------------------------------------------

    def event_id(self, text: str | None) -> int | None:
        """The number in a Last-Event-ID this server gave out, or None (none, or another server's)."""
        epoch, _, number = (text or "").strip().partition(".")
        if epoch != self.epoch or not number.isdigit() or len(number) > 18:
            return None
        return int(number)

    @property
    def last_event_id(self) -> str:
        return f"{self.epoch}.{self.last_id}"

    def snapshot(self) -> LiveEvent:
        """Every live call as it stands, numbered as the newest event (a reader resumes after it)."""
        calls = [live.json() for live in self.calls.values()]
        return LiveEvent(self.last_id, "snapshot", json.dumps({"calls": calls}, ensure_ascii=False))

    def since(self, last_id: int | None) -> list[LiveEvent] | None:
        """The events after `last_id`, or None when the ring no longer reaches back that far (or the
        id is not one of this server's): the reader needs a snapshot."""
        if last_id is None or last_id > self.last_id:
            return None
        oldest = self._ring[0].id if self._ring else self._next_id
        if last_id < oldest - 1:
            return None
        return [event for event in self._ring if event.id > last_id]

    async def stream(self, last_id: int | None, heartbeat_s: float = 15.0) -> AsyncIterator[LiveEvent | None]:
        """Events from `last_id` on (a snapshot first when needed), as they come; None now and then
        (every `heartbeat_s` without events) so the connection can be kept alive. Ends at close()."""
        while not self.closed:
            changed = self._changed
            events = self.since(last_id)
            if events is None:
                snapshot = self.snapshot()
                last_id = snapshot.id
                yield snapshot
                continue
            for event in events:
                last_id = event.id
                yield event
            if events:
                continue
            try:
                await asyncio.wait_for(changed.wait(), heartbeat_s)
            except TimeoutError:
                yield None
