"""The whole chain on the GPT-Live engine: simulated Twilio -> callassist (CALLASSIST_ENGINE=live) ->
fake GPT-Live, all over real sockets. The Live counterpart of stack.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callassist.simulator import CallerSimulator
from tests.fakes.live_protocol import validate_live_server_event
from tests.fakes.live_server import FakeLiveServer, LiveScript
from tests.fakes.realtime_server import FakeRealtimeServer, Script
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, RunningServer, running_server


@dataclass
class LiveStack:
    fake: FakeLiveServer
    server: RunningServer
    simulator: CallerSimulator
    _exits: contextlib.AsyncExitStack = field(repr=False)


class LiveStackFactory:
    """Builds Live stacks; at teardown, what callassist sent must have passed the fake's SDK checks
    and the fake must never have sent anything off-protocol."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._stacks: list[LiveStack] = []

    async def __call__(
        self,
        script: LiveScript | None = None,
        *,
        realtime: Script | None = None,
        fake_options: dict[str, Any] | None = None,
        **settings: Any,
    ) -> LiveStack:
        """realtime: a script for a fake Realtime server on the same port (the fallback's)."""
        exits = contextlib.AsyncExitStack()
        also = FakeRealtimeServer(realtime) if realtime is not None else None
        fake = await exits.enter_async_context(FakeLiveServer(script, realtime=also, **(fake_options or {})))
        data_dir = self._data_dir / f"live{len(self._stacks)}"
        server = await exits.enter_async_context(
            running_server(fake.base_url, data_dir, **{"engine": "live", **settings})
        )
        simulator = CallerSimulator(server.base_url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID)
        stack = LiveStack(fake, server, simulator, exits)
        self._stacks.append(stack)
        return stack

    async def close(self) -> None:
        for stack in reversed(self._stacks):
            await stack._exits.aclose()

    def protocol_problems(self) -> list[str]:
        problems: list[str] = []
        for stack in self._stacks:
            problems.extend(stack.fake.validation_failures)
            if stack.fake.realtime is not None:
                problems.extend(stack.fake.realtime.validation_failures)
            for session in stack.fake.sessions:
                for sent in session.server_events:
                    error = validate_live_server_event(sent.event)
                    if error:
                        problems.append(f"fake sent an invalid {sent.type}: {error}")
        return problems


@contextlib.asynccontextmanager
async def live_stack_factory(data_dir: Path) -> AsyncIterator[LiveStackFactory]:
    factory = LiveStackFactory(data_dir)
    try:
        yield factory
    finally:
        await factory.close()
