"""One call flow, written once, run on either speech engine: a neutral description of what the
assistant says and does (`Turn`, `Conversation`) that builds the Realtime fake's `Script` or the
GPT-Live fake's `LiveScript`, and a stack by engine (`EngineStack`) with the few per-session facts
the flows look at (what the model said, the caller audio it got, tool outputs, a dropped socket).

On Realtime a turn that uses tools is two model responses (speech + function calls, then the answer
once the outputs came back); on GPT-Live it is one reply that delegates the tools to the Responses
backend, and the Live model says the answer when the backend is done."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from callassist.simulator import CallerSimulator
from tests.fakes.live_script import Delegate, LiveReply
from tests.fakes.live_server import FakeLiveServer, FakeLiveSession, LiveScript
from tests.fakes.realtime_server import FakeRealtimeServer, FakeSession, Reply, Script
from tests.fakes.script import Responder, Say, UseTool
from tests.support.live_stack import LiveStack, LiveStackFactory, live_stack_factory
from tests.support.server import RunningServer
from tests.support.stack import Stack, StackFactory, stack_factory

Engine = Literal["realtime", "live"]
ENGINES: list[Engine] = ["realtime", "live"]


@dataclass
class Turn:
    """One occasion the assistant speaks: `say` (give it short audio), then the tools it uses with
    their intent, then `then`, said once the tools answered (None after end_call)."""

    say: Say
    tools: list[UseTool] = field(default_factory=list)
    then: Say | None = None


@dataclass
class Conversation:
    """The assistant's turns in order (the first is the greeting) and the caller's words."""

    turns: list[Turn]
    transcripts: list[str] = field(default_factory=list)

    def realtime(self) -> Script:
        replies: list[Responder] = []
        for turn in self.turns:
            replies.append(Reply([turn.say, *turn.tools]))
            if turn.then is not None:
                replies.append(Reply([turn.then]))
        return Script(replies=replies, transcripts=list(self.transcripts))

    def live(self) -> LiveScript:
        replies = [
            LiveReply([turn.say], Delegate(list(turn.tools), spoken=turn.then) if turn.tools else None)
            for turn in self.turns
        ]
        return LiveScript(replies=replies, transcripts=list(self.transcripts))


Session = FakeSession | FakeLiveSession


@dataclass
class EngineStack:
    """Simulated Twilio -> callassist -> the engine's fake, seen the same way on both engines."""

    engine: Engine
    stack: Stack | LiveStack

    @property
    def server(self) -> RunningServer:
        return self.stack.server

    @property
    def simulator(self) -> CallerSimulator:
        return self.stack.simulator

    @property
    def fake(self) -> FakeRealtimeServer | FakeLiveServer:
        return self.stack.fake

    def session(self, index: int = -1) -> Session:
        return self.fake.sessions[index]

    def said(self, index: int = -1) -> list[str]:
        """The words of each thing the model said aloud in a session, in order (no summaries)."""
        session = self.session(index)
        if isinstance(session, FakeLiveSession):
            return [said.text for said in session.said]
        return [
            str(part.get("transcript", ""))
            for response in session.responses
            if response.get("conversation") != "none"
            for output in response["output"]
            if output.get("type") == "message"
            for part in output.get("content", [])[:1]
        ]

    def audio_in(self, index: int = -1) -> bytes:
        return bytes(self.session(index).audio_in)

    def tool_outputs(self, index: int = -1) -> list[dict[str, Any]]:
        return [json.loads(output) for _, output in self.session(index).function_outputs]

    async def wait_until_said(self, count: int, index: int = -1, timeout: float = 10) -> None:  # noqa: ASYNC109
        await self.fake.wait_until(lambda: len(self.said(index)) >= count, timeout)

    async def wait_closed(self, index: int = -1, timeout: float = 5) -> None:  # noqa: ASYNC109
        session = self.session(index)
        await self.fake.wait_until(lambda: session.closed, timeout)

    async def drop(self, index: int = -1) -> None:
        """The model's socket goes away mid-call, without a goodbye from the service."""
        session = self.session(index)
        if isinstance(session, FakeLiveSession):
            await session.drop()
        else:
            await session.close(code=1001, reason="Your session hit the maximum duration of 60 minutes.")

    async def wait_ready(self, index: int, timeout: float = 5) -> Session:  # noqa: ASYNC109
        """Until session `index` is connected and configured by callassist."""
        session = await self.fake.wait_for_session(index, timeout)
        if isinstance(session, FakeLiveSession):
            await session.wait_for_client_event("session.start", timeout=timeout)
        else:
            await session.wait_for_client_event("session.update", timeout=timeout)
        return session


class EngineStackFactory:
    def __init__(self, engine: Engine, realtime: StackFactory, live: LiveStackFactory) -> None:
        self.engine = engine
        self._realtime = realtime
        self._live = live

    async def __call__(self, conversation: Conversation, **settings: Any) -> EngineStack:
        if self.engine == "live":
            return EngineStack("live", await self._live(conversation.live(), **settings))
        return EngineStack("realtime", await self._realtime(conversation.realtime(), **settings))

    def protocol_problems(self) -> list[str]:
        return [*self._realtime.protocol_problems(), *self._live.protocol_problems()]


@contextlib.asynccontextmanager
async def engine_stack_factory(engine: Engine, data_dir: Path) -> AsyncIterator[EngineStackFactory]:
    """Stacks on `engine`; at teardown the caller checks `protocol_problems()` is empty."""
    async with stack_factory(data_dir) as realtime, live_stack_factory(data_dir) as live:
        yield EngineStackFactory(engine, realtime, live)
