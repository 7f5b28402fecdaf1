"""How callassist sends to an OpenAI Realtime socket: the cheapest correct way per message.

The SDK opens the socket; what we send goes to the websocket under its connection, and a frame the
socket can take at once is written at once (bench/relay.py measured both: `send_raw` added ~30 µs
per caller frame, websockets' send context and drain ~15 µs more).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.websocket_connection_options import WebSocketConnectionOptions
from websockets.protocol import State


class NotConnected(ConnectionError):
    """There is no socket to send on."""


Send = Callable[[str], Awaitable[None]]


async def no_socket(text: str) -> None:
    raise NotConnected("not connected")


def sender(connection: AsyncRealtimeConnection | None) -> Send:
    """How to send on this connection: the websocket the SDK's connection wraps (openai's
    _websocket_connection.py keeps it as `_connection`; its `send` raises ConnectionClosed like
    send_raw). We never turn the SDK's own reconnects on, so its send queue, which only fills while
    the SDK reconnects, is never needed. Any other shape falls back to `send_raw`."""
    if connection is None:
        return no_socket
    socket = getattr(connection, "_connection", None)
    send = getattr(socket, "send", None)
    if not callable(send):
        return connection.send_raw
    return immediate(socket, send) or send


def immediate(socket: Any, send: Send) -> Send | None:
    """`send`, but a frame that can be written at once is: websockets' `send` runs a context
    manager and a drain per message (~15 µs) that only matter when the socket is not open, a
    fragmented message is under way or the transport's buffer is not empty; then `send` itself
    runs, and raises ConnectionClosed or waits for the buffer as usual. Uses the asyncio
    connection's documented `protocol` (websockets' Sans-I/O layer) and its `transport`;
    None (plain `send`) for any other shape."""
    protocol = getattr(socket, "protocol", None)
    transport = getattr(socket, "transport", None)
    send_data = getattr(socket, "send_data", None)
    if protocol is None or transport is None or not callable(send_data):
        return None
    if not hasattr(socket, "fragmented_send_waiter"):
        return None
    open_state = State.OPEN
    buffered, closing, send_text = transport.get_write_buffer_size, transport.is_closing, protocol.send_text

    async def send_now(text: str) -> None:
        if (
            protocol.state is open_state
            and socket.fragmented_send_waiter is None
            and not buffered()
            and not closing()
        ):
            send_text(text.encode())
            send_data()
        else:
            await send(text)

    return send_now


def connection_options(open_timeout_s: float) -> WebSocketConnectionOptions:
    """The websocket options of a model socket (Realtime's or GPT-Live's): no per-message deflate
    (it costs CPU on every audio frame and buys nothing on base64 audio), room for large events,
    a bounded handshake and a short close."""
    return cast(
        WebSocketConnectionOptions,
        {
            "compression": None,
            "max_size": 16 * 1024 * 1024,
            "open_timeout": open_timeout_s,
            "close_timeout": 1.0,
        },
    )
