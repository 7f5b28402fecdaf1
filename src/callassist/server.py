"""Run the app under uvicorn, with a shutdown that lets live calls end cleanly.

On SIGTERM/SIGINT: stop accepting connections, let every live call say a short goodbye and end
(within CALLASSIST_SHUTDOWN_GRACE_SECONDS), then let uvicorn finish. The whole exit stays under 10 s.

Anyone on the internet can reach this server, so the work it does before a request is authenticated
is bounded here: a request head must arrive whole within seconds and stay under 16 KiB and 100
header lines; a body must be at most 64 KiB (Twilio's webhook forms are a few KB; no route takes
more), never multipart (on /voice/*, a form and nothing else), with one Content-Type and one
Content-Length at most, and arrive within seconds; an idle connection is closed after 5 s.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from callassist.app import create_app
from callassist.media.direct import RawChannel
from callassist.runtime import Runtime
from callassist.settings import Settings

log = logging.getLogger(__name__)

GC_THRESHOLDS = (20_000, 20, 20)

# A request line and its headers: Twilio's are under 2 KiB, a tunnel adds a few hundred bytes.
MAX_REQUEST_HEAD_BYTES = 16 * 1024
MAX_HEADER_LINES = 100
# Twilio's webhook forms are a few KB; none of our routes takes a larger body, or a multipart one.
MAX_BODY_BYTES = 64 * 1024
# Twilio's webhooks: their bodies are forms, nothing else.
TWILIO_PATHS = "/voice/"
TWILIO_FORM = b"application/x-www-form-urlencoded"
# A request head (from the connection's start, or from the end of the previous response) and a body
# must each arrive within this long; an idle keep-alive connection is closed after KEEP_ALIVE_S.
REQUEST_HEAD_TIMEOUT_S = 5.0
REQUEST_BODY_TIMEOUT_S = 5.0
KEEP_ALIVE_S = 5
# A Media Stream peer that stops answering pings is dropped within 20 s.
WS_PING_INTERVAL_S = 10.0
WS_PING_TIMEOUT_S = 10.0


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on every request head.

    uvicorn arms no timer until a first response is sent, and disarms its keep-alive timer on any
    byte received: a connection that sends nothing, or half a request head, was held as long as the
    client liked. Here the whole head must arrive within REQUEST_HEAD_TIMEOUT_S of the connection's
    start or of the previous response's end. (The head's size is bounded by h11 itself:
    `h11_max_incomplete_event_size`.)
    """

    head_timeout_s = REQUEST_HEAD_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_of: object = None
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A new request cycle began (its head is complete), or the connection became a WebSocket.
        if self._head_deadline is not None and (
            self.cycle is not self._head_of or self.transport.get_protocol() is not self
        ):
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        answered = self.cycle
        super().on_response_complete()
        # Unless a pipelined request started already, the next head has the same deadline.
        if self.cycle is answered and not self.transport.is_closing():
            self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_of = self.cycle
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class RequestLimits:
    """Refuses what no route accepts before the app parses anything: too many header lines (431),
    more than one Content-Type or Content-Length header (400), a multipart body (415), a body on a
    Twilio route (/voice/*) that is not application/x-www-form-urlencoded (415), a body over
    `max_body` bytes (413, from Content-Length when there is one, else counted as it arrives) or one
    that trickles in (408). Every refusal closes the
    connection, so nothing more of that body is read.

    A body within the limits is read here, whole, and handed to the app as one message.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int = MAX_BODY_BYTES,
        max_headers: int = MAX_HEADER_LINES,
        body_timeout_s: float = REQUEST_BODY_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_headers = max_headers
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and len(scope["headers"]) > self.max_headers:
            await send({"type": "websocket.close", "code": 1008})  # before accept: a 403
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await _refuse(send, *refusal)
            return
        headers = dict(scope["headers"])
        if headers.get(b"content-length", b"0") == b"0" and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        body = await self._read_body(receive)
        if isinstance(body, tuple):
            if body[0]:
                await _refuse(send, *body)
            return
        await self.app(scope, _replay(body, receive), send)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if len(headers) > self.max_headers:
            return 431, f"more than {self.max_headers} header lines"
        # One of each at most: with two, what is checked here and what the app parses could differ
        # (Starlette reads the first Content-Type line, a dict the last).
        types = [value for name, value in headers if name == b"content-type"]
        lengths = [value for name, value in headers if name == b"content-length"]
        if len(types) > 1 or len(lengths) > 1:
            return 400, "one Content-Type and one Content-Length header at most"
        media_type = types[0].split(b";", 1)[0].strip().lower() if types else b""
        if media_type.startswith(b"multipart/"):
            return 415, "multipart bodies are not accepted"
        length = lengths[0] if lengths else None
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413, f"the body may be {self.max_body} bytes at most"
        has_body = length not in (None, b"0") or any(name == b"transfer-encoding" for name, _ in headers)
        if has_body and scope["path"].startswith(TWILIO_PATHS) and media_type != TWILIO_FORM:
            return 415, f"{TWILIO_FORM.decode()} bodies only"
        return None

    async def _read_body(self, receive: Receive) -> bytes | tuple[int, str]:
        """The whole body, or the refusal to send (status 0: the client left, send nothing)."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return 0, ""
                    chunk: bytes = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        return 413, f"the body may be {self.max_body} bytes at most"
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            return 408, f"the body must arrive within {self.body_timeout_s:g} s"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that gives the app the body already read, then what the server says next
    (a disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def _refuse(send: Send, status: int, reason: str) -> None:
    log.info("refused a request: %d %s", status, reason)
    body = f"{reason}\n".encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        # Whatever else the client meant to send is not read: this connection ends with the answer.
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class CallAwareServer(uvicorn.Server):
    """uvicorn's Server, draining live calls before it closes their sockets."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        # Named `services` still: the test harness (tests/support/server.py) reads it under that name.
        self.services = runtime

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything built so far lives as long as the server: keep the cyclic GC from rescanning it
        # on every collection, and collect less often (each call allocates many short-lived dicts).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Still listening while calls wind down: a new call hears "restarting" instead of an error.
        await self.services.registry.drain(self.services.settings.shutdown_grace_seconds)
        await super().shutdown(sockets)
        # uvicorn re-raises the signal it caught once serving ends, so the process dies of SIGTERM;
        # after a complete drain we'd rather exit with status 0 (a clean stop for any supervisor).
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


def build_server(settings: Settings) -> CallAwareServer:
    """The app under uvicorn, tuned for many long-lived audio WebSockets."""
    app = create_app(settings)
    app.add_middleware(RequestLimits)
    app.add_middleware(RawChannel)  # outermost of ours: the server's own receive and send
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # our logging set-up stays in charge
        access_log=False,
        # We judge "loopback" ourselves (signature.is_direct_loopback); keep the socket's address.
        proxy_headers=False,
        server_header=False,
        # h11 bounds the request head (httptools buffers any size); our subclass adds its deadline.
        http=BoundedH11Protocol,
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
        timeout_keep_alive=KEEP_ALIVE_S,
        ws="websockets-sansio",  # media/direct.py writes to it directly; the legacy one costs more CPU
        ws_per_message_deflate=False,  # compressing base64 audio costs CPU on every frame
        ws_max_size=1024 * 1024,
        ws_ping_interval=WS_PING_INTERVAL_S,
        ws_ping_timeout=WS_PING_TIMEOUT_S,
        timeout_graceful_shutdown=2,
        lifespan="on",
    )
    return CallAwareServer(config, app.state.runtime)


def run(settings: Settings) -> None:
    build_server(settings).run()
