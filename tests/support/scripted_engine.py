"""ScriptedEngine: a model engine in memory, for in-process tests of the call logic.

The test plays the model: it `emit()`s typed engine events (engine/events.py) and reads what the
call asked of the engine in `sent`, in order. Nothing is a socket or a clock, so a test of the
sequencing, barge-in or tool rules runs in milliseconds. It is also the smallest example of what a
new engine must implement (engine/base.py); the socket-level fake OpenAI in tests/fakes stays the
contract test of the real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from callassist.engine.base import EngineUnavailable, SetupHook
from callassist.engine.events import EngineEvent, EngineLost, SessionReplaced, SessionSetup


@dataclass(frozen=True)
class Sent:
    """One thing the call asked of the engine: `what` is the method, `args` its arguments."""

    what: str
    args: tuple[Any, ...] = ()


class ScriptedEngine:
    def __init__(self, *, unreachable: bool = False) -> None:
        self._events: asyncio.Queue[EngineEvent | None] = asyncio.Queue()
        self._setup: SetupHook | None = None
        self._unreachable = unreachable
        self.setups: list[SessionSetup] = []
        self.sent: list[Sent] = []
        self.audio: list[str] = []
        self.ready = False
        self.switching = False
        self.buffered_frames = 0
        self.session_age = 0.0
        self.reconnects = 0
        self.rotations = 0
        self.closed = False
        self.changed = asyncio.Event()  # set on every request, for tests that wait for one
        self.configured = asyncio.Event()
        # Set while the call waits for the next event with none queued: every event emitted so far
        # has been handled (the call handles one before it asks for the next).
        self.drained = asyncio.Event()

    # The test's side ------------------------------------------------------------------------------

    def emit(self, *events: EngineEvent) -> None:
        for event in events:
            self._events.put_nowait(event)
        self.drained.clear()

    async def handled(self, within_s: float = 2.0) -> None:
        """Until the call has handled every event emitted so far."""
        async with asyncio.timeout(within_s):
            await self.drained.wait()

    async def replace_session(self, *, rotated: bool = False) -> SessionSetup:
        """A new session takes over (as after a drop): the call's setup for it, then the event."""
        assert self._setup is not None
        setup = await self._setup(True)
        self.setups.append(setup)
        self.reconnects += 0 if rotated else 1
        self.emit(SessionReplaced(0.1, None if rotated else 1006, rotated))
        return setup

    def requests(self, what: str) -> list[tuple[Any, ...]]:
        return [sent.args for sent in self.sent if sent.what == what]

    async def wait_for(self, what: str, count: int = 1, within_s: float = 2.0) -> list[tuple[Any, ...]]:
        """Until the call asked `what` at least `count` times."""
        async with asyncio.timeout(within_s):
            while len(self.requests(what)) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.requests(what)

    def _record(self, what: str, *args: Any) -> bool:
        self.sent.append(Sent(what, args))
        self.changed.set()
        return self.ready

    # The engine's side ----------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._unreachable:
            raise EngineUnavailable("scripted: unreachable")

    async def configure(self, setup: SetupHook) -> None:
        self._setup = setup
        self.setups.append(await setup(False))
        self.ready = True
        self.configured.set()

    async def events(self) -> AsyncIterator[EngineEvent]:
        while True:
            if self._events.empty():
                self.drained.set()
            event = await self._events.get()
            if event is None:
                yield EngineLost("closed")
                return
            yield event

    async def close(self) -> None:
        self.closed = True
        self.ready = False
        self._events.put_nowait(None)

    async def wait_ready(self, within_s: float) -> bool:
        return self.ready

    async def settled(self, within_s: float) -> bool:
        return self.ready

    async def rotate(self, quiet: Callable[[], bool]) -> bool:
        if not quiet():
            return False
        self.rotations += 1
        await self.replace_session(rotated=True)
        return True

    async def send_audio(self, payload: str) -> None:
        self.audio.append(payload)

    async def commit_input(self) -> bool:
        return self._record("commit_input")

    async def request_response(self, request: str, *, audio_only: bool = False) -> bool:
        return self._record("request_response", request, audio_only)

    async def request_summary(self, instructions: str) -> bool:
        return self._record("request_summary", instructions)

    async def cancel_response(self, response_id: str | None = None) -> bool:
        return self._record("cancel_response", response_id)

    async def truncate(self, item_id: str, heard_ms: int) -> bool:
        return self._record("truncate", item_id, heard_ms)

    async def add_note(self, text: str) -> bool:
        return self._record("add_note", text)

    async def hold(self, on: bool) -> None:
        self._record("hold", on)

    async def add_tool_output(self, call_id: str, output_json: str) -> bool:
        return self._record("add_tool_output", call_id, output_json)
