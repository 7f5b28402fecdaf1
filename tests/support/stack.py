"""The whole chain over real sockets: simulated Twilio -> callassist -> fake OpenAI Realtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callassist.simulator import CallerSimulator
from callassist.simulator.call import SimulatedCall
from callassist.simulator.record import CallEvent
from tests.fakes.protocol import validate_server_event
from tests.fakes.realtime_server import FakeRealtimeServer, Script
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, RunningServer, running_server


@dataclass
class Stack:
    fake: FakeRealtimeServer
    server: RunningServer
    simulator: CallerSimulator
    _exits: contextlib.AsyncExitStack = field(repr=False)


class StackFactory:
    """Builds stacks for a test and checks, at teardown, that callassist never sent OpenAI anything
    the SDK's types reject and the fake never sent anything off-protocol."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._stacks: list[Stack] = []

    async def __call__(
        self,
        script: Script | None = None,
        *,
        fake_options: dict[str, Any] | None = None,
        **settings: Any,
    ) -> Stack:
        exits = contextlib.AsyncExitStack()
        fake = await exits.enter_async_context(FakeRealtimeServer(script, **(fake_options or {})))
        data_dir = self._data_dir / f"stack{len(self._stacks)}"
        server = await exits.enter_async_context(running_server(fake.base_url, data_dir, **settings))
        simulator = CallerSimulator(
            server.base_url,
            auth_token=settings.get("twilio_auth_token", AUTH_TOKEN),
            account_sid=settings.get("twilio_account_sid", ACCOUNT_SID),
        )
        stack = Stack(fake, server, simulator, exits)
        self._stacks.append(stack)
        return stack

    async def close(self) -> None:
        for stack in reversed(self._stacks):
            await stack._exits.aclose()

    def protocol_problems(self) -> list[str]:
        problems: list[str] = []
        for stack in self._stacks:
            problems.extend(stack.fake.validation_failures)
            for session in stack.fake.sessions:
                for sent in session.server_events:
                    if sent.injected:
                        continue
                    error = validate_server_event(sent.event)
                    if error:
                        problems.append(f"fake sent an invalid {sent.type}: {error}")
        return problems


@contextlib.asynccontextmanager
async def stack_factory(data_dir: Path) -> AsyncIterator[StackFactory]:
    factory = StackFactory(data_dir)
    try:
        yield factory
    finally:
        await factory.close()


def without_clock(session: dict[str, Any]) -> dict[str, Any]:
    """A session.update's session with the "Right now it is ..." line taken out of the instructions."""
    lines = str(session.get("instructions", "")).splitlines()
    kept = [line for line in lines if not line.startswith("Right now it is")]
    return {**session, "instructions": "\n".join(kept)}


async def heard_chunks(call: SimulatedCall, since: float, chunks: int) -> None:
    """Until `chunks` of the assistant's audio (one mark each) have played since `since`."""

    def enough(_: CallEvent) -> bool:
        return sum(1 for event in call.events if event.kind == "mark_echo" and event.t >= since) >= chunks

    await call.wait_for("mark_echo", after=since, predicate=enough, timeout=10)


async def talk_over(call: SimulatedCall, since: float, speech: bytes) -> CallEvent:
    """The caller talks over the assistant; returns Twilio's `clear` that follows."""
    talking = asyncio.create_task(call.say(speech))
    cleared = await call.wait_for("clear_in", after=since, timeout=5)
    await talking
    return cleared
