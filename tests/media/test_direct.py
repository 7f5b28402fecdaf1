"""media/direct.py over a real uvicorn (websockets-sansio) and a real websocket client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from callassist.media.direct import CHANNEL_KEY, DirectChannel, RawChannel


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Probe:
    """What the server side saw and did, for the test to check."""

    def __init__(self) -> None:
        self.channel: DirectChannel | None = None
        self.written: list[bool] = []
        self.received: list[dict[str, Any]] = []
        self.go = asyncio.Event()
        self.done = asyncio.Event()


@contextlib.asynccontextmanager
async def server(probe: Probe, ws: str = "websockets-sansio") -> AsyncIterator[str]:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        channel = probe.channel = DirectChannel(websocket.scope)
        assert channel.receive is not None
        probe.received.append(await channel.receive())  # the client's first frame
        if channel.write is not None:
            probe.written.append(channel.write(("one", '{"two":2}')))
        await probe.go.wait()  # the client has closed, or paused us
        probe.received.append(await channel.receive())
        if channel.write is not None:
            probe.written.append(channel.write(("three",)))
        probe.done.set()

    app = RawChannel(Starlette(routes=[WebSocketRoute("/ws", endpoint)]))
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, ws=ws, log_config=None, lifespan="off")
    uv = uvicorn.Server(config)
    started = asyncio.Event()
    startup = uv.startup

    async def startup_then_say(sockets: Any = None) -> None:
        await startup(sockets)
        started.set()

    uv.startup = startup_then_say  # type: ignore[method-assign]
    task = asyncio.create_task(uv.serve())
    try:
        async with asyncio.timeout(5):
            await started.wait()
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 5)


async def test_frames_are_written_in_order_in_one_go_and_refused_once_the_client_left() -> None:
    probe = Probe()
    async with server(probe) as url:
        async with connect(url, compression=None) as client:
            await client.send("hello")
            async with asyncio.timeout(5):
                assert await client.recv() == "one"
                assert await client.recv() == '{"two":2}'
        probe.go.set()
        async with asyncio.timeout(5):
            await probe.done.wait()
    assert probe.received[0] == {"type": "websocket.receive", "text": "hello"}
    assert probe.received[1]["type"] == "websocket.disconnect"
    assert probe.written == [True, False]  # after the close: the framework's path decides


async def test_a_paused_transport_is_left_to_the_framework() -> None:
    probe = Probe()
    async with server(probe) as url, connect(url, compression=None) as client:
        await client.send("hello")
        async with asyncio.timeout(5):
            await client.recv()
            await client.recv()
        assert probe.channel is not None and probe.channel.write is not None
        protocol = _protocol_of(probe.channel)
        protocol.writable.clear()  # what uvicorn does in pause_writing()
        await client.send("again")
        probe.go.set()
        async with asyncio.timeout(5):
            await probe.done.wait()
        protocol.writable.set()
    assert probe.written == [True, False]


def _protocol_of(channel: DirectChannel) -> Any:
    write = channel.write
    assert write is not None
    cells = [cell.cell_contents for cell in write.__closure__ or ()]
    return next(value for value in cells if hasattr(value, "writable"))


@pytest.mark.parametrize("scope", [{}, {CHANNEL_KEY: "nonsense"}, {CHANNEL_KEY: (None, None)}])
def test_no_channel_in_the_scope_means_the_framework_path(scope: dict[str, Any]) -> None:
    channel = DirectChannel(scope)
    assert channel.write is None
    assert channel.receive is None


def test_another_server_s_send_has_no_direct_write() -> None:
    class OtherProtocol:
        async def send(self, message: dict[str, Any]) -> None:  # no conn, no transport
            return None

    async def receive() -> dict[str, Any]:
        return {}

    channel = DirectChannel({CHANNEL_KEY: (receive, OtherProtocol().send)})
    assert channel.receive is receive
    assert channel.write is None


@pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated")
async def test_uvicorn_s_legacy_websockets_gets_the_framework_path() -> None:
    probe = Probe()
    async with server(probe, ws="websockets") as url:
        async with connect(url, compression=None) as client:
            await client.send("hello")
        probe.go.set()
        async with asyncio.timeout(5):
            await probe.done.wait()
    assert probe.channel is not None
    assert probe.channel.write is None
    assert probe.received[0] == {"type": "websocket.receive", "text": "hello"}
