"""Twilio's conference rooms, as the simulated Twilio runs them for `<Dial><Conference>`.

What https://www.twilio.com/docs/voice/twiml/conference documents, and the rooms do:
- the room's name is namespaced to the account: every leg that dials the same name while that
  conference runs joins it; once it has ended, the name opens a new conference (a new CF sid);
- "Conferences will not start until at least two participants join", and one of them must have
  `startConferenceOnEnter` (default true); until then the others wait, hearing hold music;
- "If a participant has [endConferenceOnExit] set to true, then when that participant leaves,
  the conference ends and all other participants drop out": each dropped leg's `<Dial>` ends, so
  that call goes on with the Dial `action` (or its next verb) ("allow either call leg to continue
  executing TwiML if the other hangs up");
- a conference also ends when its last participant leaves.

Each leg's own record (`CallRecord`) gets the events: `conference_joined`, `conference_started`
(the legs are bridged: the conference runs with this leg and at least one other in it),
`conference_left` and `conference_ended`. `Conferences.wait()` lets a test wait on the rooms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from callassist.simulator import twiml as tw
from callassist.simulator.ids import new_sid
from callassist.simulator.record import CallRecord

__all__ = ["Conferences", "Participant", "Room"]


@dataclass(eq=False)
class Participant:
    """One leg in a conference room."""

    record: CallRecord
    role: str  # a label for tests and reports: "caller", "owner"...
    start_on_enter: bool
    end_on_exit: bool
    joined_at: float
    done: asyncio.Event = field(default_factory=asyncio.Event)  # left, or dropped when the room ended
    started: asyncio.Event = field(default_factory=asyncio.Event)  # bridged: the conference runs with it
    bridged: bool = False  # was in the running conference with someone else
    left_at: float | None = None
    dropped: bool = False  # the conference ended under it (it did not leave by itself)

    @property
    def call_sid(self) -> str:
        return self.record.call_sid


@dataclass(eq=False)
class Room:
    """One conference (one CF sid): who joined, when it started and how it ended."""

    name: str
    sid: str = field(default_factory=lambda: new_sid("CF"))
    participants: list[Participant] = field(default_factory=list)  # in the room now
    everyone: list[Participant] = field(default_factory=list)  # all who ever joined
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None

    @property
    def started(self) -> bool:
        return self.started_at is not None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def roles(self) -> list[str]:
        return [participant.role for participant in self.everyone]


class Conferences:
    """The account's conference rooms (shared by the caller simulator and the REST stand-in)."""

    def __init__(self) -> None:
        self.running: dict[str, Room] = {}
        self.history: list[Room] = []  # every conference, running or ended, in creation order
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def by_name(self, name: str) -> list[Room]:
        return [room for room in self.history if room.name == name]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until `predicate()` holds over the rooms (checked at every change); TimeoutError otherwise."""
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"conference condition not met within {timeout:g}s") from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def wait_ended(self, name: str, timeout: float = 5.0) -> Room:  # noqa: ASYNC109
        """The first conference of that name once it has ended."""
        await self.wait(lambda: any(room.ended for room in self.by_name(name)), timeout)
        return next(room for room in self.by_name(name) if room.ended)

    def join(self, record: CallRecord, conference: tw.Conference, *, role: str) -> Participant:
        for problem in conference.problems:
            record._warn(problem)
        room = self.running.get(conference.name)
        if room is None:
            room = Room(conference.name)
            self.running[conference.name] = room
            self.history.append(room)
        participant = Participant(
            record=record,
            role=role,
            start_on_enter=conference.start_conference_on_enter,
            end_on_exit=conference.end_conference_on_exit,
            joined_at=time.monotonic(),
        )
        room.participants.append(participant)
        room.everyone.append(participant)
        record._emit(
            "conference_joined",
            name=room.name,
            conference_sid=room.sid,
            role=role,
            participants=[p.role for p in room.participants],
        )
        if room.started:
            self._bridge(room, participant)
        elif len(room.participants) >= 2 and any(p.start_on_enter for p in room.participants):
            room.started_at = time.monotonic()
            for each in room.participants:
                self._bridge(room, each)
        self._notify()
        return participant

    def leave(self, participant: Participant, why: str) -> None:
        """The leg leaves (hangs up, is redirected, or its `<Dial>` ends otherwise)."""
        room = self._room_of(participant)
        if room is None or participant.done.is_set():
            return
        participant.left_at = time.monotonic()
        room.participants.remove(participant)
        participant.record._emit("conference_left", name=room.name, conference_sid=room.sid, why=why)
        participant.done.set()
        if participant.end_on_exit:
            self._end(room, f"{participant.role} left with endConferenceOnExit", participant)
        elif not room.participants:
            self._end(room, "the last participant left", participant)
        self._notify()

    # ----- internals --------------------------------------------------------------------------------------

    def _room_of(self, participant: Participant) -> Room | None:
        for room in self.history:
            if participant in room.everyone:
                return room
        return None

    @staticmethod
    def _bridge(room: Room, participant: Participant) -> None:
        participant.bridged = True
        participant.started.set()
        participant.record._emit(
            "conference_started",
            name=room.name,
            conference_sid=room.sid,
            participants=[p.role for p in room.participants],
        )

    def _end(self, room: Room, reason: str, leaver: Participant) -> None:
        room.ended_at = time.monotonic()
        room.end_reason = reason
        if self.running.get(room.name) is room:
            del self.running[room.name]
        leaver.record._emit("conference_ended", name=room.name, conference_sid=room.sid, reason=reason)
        for participant in list(room.participants):
            room.participants.remove(participant)
            participant.left_at = room.ended_at
            participant.dropped = True
            participant.record._emit(
                "conference_ended", name=room.name, conference_sid=room.sid, reason=reason
            )
            participant.done.set()

    def _notify(self) -> None:
        for entry in list(self._waiters):
            predicate, future = entry
            if future.done():
                continue
            try:
                if predicate():
                    future.set_result(None)
            except Exception as exc:  # a test's predicate bug surfaces in the test
                future.set_exception(exc)
