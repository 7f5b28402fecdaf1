"""The Media Stream's socket without the framework in between, where the server allows it.

Every audio chunk to Twilio went through Starlette's WebSocket, two of its exception-handling
wrappers and uvicorn's ASGI `send` (a message dict per chunk, its type checked at each layer), and
every caller frame came back through Starlette's state checks. `DirectChannel` keeps the server's
own ASGI `receive` (taken from the scope by `RawChannel`, the outermost middleware) and, on uvicorn's
`websockets-sansio` protocol, writes text frames the way that protocol's own `send` does (its
websockets Sans-I/O `conn.send_text`, then one `transport.write`), several frames in one write: a
chunk and its mark cost one system call. Whenever the socket is not plainly open and writable
(paused by a full buffer, closing, a handshake not done), `write` returns False and the caller
uses the framework's path, which waits or raises as usual. Any other server: no direct path at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.protocol import State

CHANNEL_KEY = "callassist.channel"  # where RawChannel leaves the server's own (receive, send)
_OPEN = State.OPEN


class RawChannel:
    """Leaves the server's own `receive` and `send` in a WebSocket's scope, before any wrapper."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        scope[CHANNEL_KEY] = (receive, send)
        try:
            await self.app(scope, receive, send)
        finally:  # the scope would hold the protocol through its bound methods: a reference cycle
            scope.pop(CHANNEL_KEY, None)


Write = Callable[[tuple[str, ...]], bool]


class DirectChannel:
    """The server's `receive` for a scope RawChannel saw (else None), and a `write` on uvicorn's
    sansio protocol (else None)."""

    __slots__ = ("receive", "write")

    def __init__(self, scope: Scope) -> None:
        raw = scope.get(CHANNEL_KEY)
        receive, send = raw if isinstance(raw, tuple) and len(raw) == 2 else (None, None)
        self.receive: Receive | None = receive
        self.write: Write | None = _writer(getattr(send, "__self__", None))


def _writer(protocol: Any) -> Write | None:
    """uvicorn's WebSocketsSansIOProtocol (websockets_sansio_impl.py): `conn` (a websockets
    ServerProtocol), `transport`, `writable` (cleared while the transport is paused), and the
    flags its `send` checks; any other shape: None."""
    names = ("conn", "transport", "writable", "close_sent", "disconnected", "handshake_complete")
    if protocol is None or not all(hasattr(protocol, name) for name in names):
        return None
    conn = protocol.conn
    if not callable(getattr(conn, "send_text", None)) or not callable(getattr(conn, "data_to_send", None)):
        return None
    transport, writable = protocol.transport, protocol.writable
    send_text, data_to_send = conn.send_text, conn.data_to_send

    def write(texts: tuple[str, ...]) -> bool:
        if (
            conn.state is not _OPEN
            or not writable.is_set()
            or protocol.close_sent
            or protocol.disconnected
            or not protocol.handshake_complete
            or getattr(protocol, "initial_response", None) is not None
            or transport.is_closing()
        ):
            return False
        try:
            frames = [text.encode() for text in texts]  # before anything is queued in `conn`
        except UnicodeEncodeError:  # a lone surrogate: the framework's path raises it
            return False
        for frame in frames:
            send_text(frame)  # cannot fail: the connection is OPEN
        transport.write(b"".join(data_to_send()))
        return True

    return write
