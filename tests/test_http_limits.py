"""Work before authentication is bounded: bodies, headers and idle connections, over raw sockets
against the real server on loopback (issue 9, item 8)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import Any
from urllib.parse import urlencode

import pytest
import starlette.formparsers
from twilio.request_validator import RequestValidator

from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, RunningServer

MB = 1024 * 1024
CHUNK = b"a" * 65536
WEBHOOK = "/voice/incoming"
# A voice webhook's form as Twilio sends it (the keys it always has), a few hundred bytes.
WEBHOOK_FORM = {
    "AccountSid": ACCOUNT_SID,
    "CallSid": "CA" + "1" * 32,
    "From": "+15551230000",
    "To": "+15559870000",
    "CallStatus": "ringing",
    "Direction": "inbound",
}
SMALL_FORM = urlencode(WEBHOOK_FORM).encode()
# The server's limits, as a client sees them (see callassist.server).
WEBHOOK_BODY_LIMIT = 64 * 1024
CLOSE_WITHIN_S = 8.0
PROC_STATUS = Path("/proc/self/status")

pytestmark = pytest.mark.timeout(60)


async def connect(server: RunningServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.settings.port)


async def read_status(reader: asyncio.StreamReader, within_s: float = 5.0) -> int | None:
    """The response's status code, or None if the server closed or reset the connection instead.

    Raises TimeoutError if neither happens within `within_s`: the server is still waiting for us.
    """
    try:
        async with asyncio.timeout(within_s):
            line = await reader.readline()
    except (ConnectionResetError, BrokenPipeError):
        return None
    return int(line.split()[1]) if line else None


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split()[1])
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    body = await reader.readexactly(int(length[1])) if length else b""
    return status, body


async def send_quietly(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """Write and drain; False once the server has closed or reset the connection."""
    try:
        writer.write(data)
        await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        return False
    return True


async def stream(writer: asyncio.StreamWriter, head: bytes, parts: list[bytes], total: int) -> int:
    """Send `head`, then `parts` once and CHUNK until `total` body bytes went out, or the server
    hung up. Returns the body bytes written."""
    sent = 0
    if not await send_quietly(writer, head):
        return 0
    for part in parts:
        if not await send_quietly(writer, part):
            return sent
        sent += len(part)
    while sent < total:
        if not await send_quietly(writer, CHUNK):
            return sent
        sent += len(CHUNK)
    return sent


def close(writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture
def spooled(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes Starlette's multipart parser writes to its (disk-backed) upload spools."""
    written: list[int] = []

    class CountingSpool(SpooledTemporaryFile):  # type: ignore[type-arg]
        def write(self, data: Any) -> int:
            written.append(len(data))
            return super().write(data)

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", CountingSpool)
    return written


async def test_a_multipart_upload_to_a_webhook_is_refused_before_its_body_is_read(
    server: RunningServer, spooled: list[int]
) -> None:
    boundary = "x" * 16
    part_head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    total = 10 * MB
    multipart = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(part_head) + total + len(boundary) + 8),
    }

    # Answered from the head alone: the server does not wait for a byte of the body.
    reader, writer = await connect(server)
    writer.write(request_head("POST", WEBHOOK, multipart))
    await writer.drain()
    assert await read_status(reader, within_s=3) in (413, 415)
    close(writer)

    # The whole 10 MB pushed at once, as an attacker would: refused quickly, nothing spooled.
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await connect(server)
    sender = asyncio.create_task(stream(writer, request_head("POST", WEBHOOK, multipart), [part_head], total))
    status = await read_status(reader, within_s=10)
    elapsed = loop.time() - started
    close(writer)
    await sender
    assert status in (413, 415, None)
    assert elapsed < 5
    assert sum(spooled) == 0

    # The same without a Content-Length (chunked): refused by its content type, nothing spooled.
    chunked = {"Content-Type": multipart["Content-Type"], "Transfer-Encoding": "chunked"}
    reader, writer = await connect(server)
    writer.write(request_head("POST", WEBHOOK, chunked) + b"%x\r\n" % len(part_head) + part_head + b"\r\n")
    await writer.drain()
    assert await read_status(reader, within_s=3) == 415
    close(writer)
    assert sum(spooled) == 0


async def test_a_large_form_is_refused_without_reading_more_than_the_limit(server: RunningServer) -> None:
    form = "application/x-www-form-urlencoded"
    # A declared length over the limit: 413 from the head.
    reader, writer = await connect(server)
    writer.write(request_head("POST", WEBHOOK, {"Content-Type": form, "Content-Length": str(10 * MB)}))
    await writer.drain()
    assert await read_status(reader, within_s=3) == 413
    close(writer)

    # No declared length (chunked): counted as it streams, 413 once past the limit.
    reader, writer = await connect(server)
    head = request_head("POST", WEBHOOK, {"Content-Type": form, "Transfer-Encoding": "chunked"})
    chunk = b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n"
    parts = [chunk] * (4 * WEBHOOK_BODY_LIMIT // len(CHUNK))  # four times the limit, never ended
    sender = asyncio.create_task(stream(writer, head, parts, 0))
    assert await read_status(reader, within_s=5) in (413, None)
    close(writer)
    await sender

    # Twilio's own small signed forms still go through, unsigned ones still get 403.
    url = server.settings.public_url + WEBHOOK
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, WEBHOOK_FORM)
    for headers, expected in (({"X-Twilio-Signature": signature}, 200), ({}, 403)):
        reader, writer = await connect(server)
        writer.write(
            request_head(
                "POST", WEBHOOK, {"Content-Type": form, "Content-Length": str(len(SMALL_FORM)), **headers}
            )
            + SMALL_FORM
        )
        await writer.drain()
        async with asyncio.timeout(5):
            status, _ = await read_response(reader)
        assert status == expected
        close(writer)


def raw_request(method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """A request with its header lines exactly as given, repeated names included."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_two_content_types_are_refused_in_either_order(
    server: RunningServer, spooled: list[int]
) -> None:
    """What the limits check and what the app parses must be the same header: Starlette reads the
    first Content-Type line, a dict the last, so a form-last multipart once reached the parser."""
    boundary = "b" * 16
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\n'.encode()
        + b"A" * 60_000
        + f"\r\n--{boundary}--\r\n".encode()
    )
    multipart, form = f"multipart/form-data; boundary={boundary}", "application/x-www-form-urlencoded"
    for first, last in ((multipart, form), (form, multipart), (form, form)):
        headers = [("Content-Type", first), ("Content-Type", last), ("Content-Length", str(len(body)))]
        reader, writer = await connect(server)
        writer.write(raw_request("POST", WEBHOOK, headers, body))
        await writer.drain()
        async with asyncio.timeout(5):
            status, _ = await read_response(reader)
        assert status == 400, (first, last)
        close(writer)
    assert sum(spooled) == 0

    # Two Content-Length lines that disagree: refused too (by the HTTP parser or by the limits).
    headers = [("Content-Type", form), ("Content-Length", "5"), ("Content-Length", str(len(SMALL_FORM)))]
    reader, writer = await connect(server)
    writer.write(raw_request("POST", WEBHOOK, headers, SMALL_FORM))
    await writer.drain()
    assert await read_status(reader) in (400, None)
    close(writer)


async def test_twilio_routes_take_form_bodies_only(server: RunningServer) -> None:
    async def status_of(headers: list[tuple[str, str]], body: bytes, path: str = WEBHOOK) -> int:
        reader, writer = await connect(server)
        writer.write(raw_request("POST", path, [*headers, ("Content-Length", str(len(body)))], body))
        await writer.drain()
        async with asyncio.timeout(5):
            status, _ = await read_response(reader)
        close(writer)
        return status

    for content_type in ("application/json", "text/plain", "application/octet-stream", "multipart/mixed"):
        assert await status_of([("Content-Type", content_type)], b'{"CallSid": "CA1"}') == 415, content_type
        assert await status_of([("Content-Type", content_type)], b"x", "/voice/dial-result") == 415
    assert await status_of([], SMALL_FORM) == 415  # a body without a type
    # A form, with or without parameters and in any case, reaches the signature check (unsigned: 403).
    for content_type in (
        "application/x-www-form-urlencoded",
        "Application/X-WWW-Form-URLencoded; charset=utf-8",
    ):
        assert await status_of([("Content-Type", content_type)], SMALL_FORM) == 403, content_type
    # Elsewhere, a non-form body is the route's business (here: no such route).
    assert await status_of([("Content-Type", "application/json")], b"{}", "/api/calls") != 415


def rss_kib() -> tuple[int, int]:
    """(current, peak) resident set size of this process (the server runs in it), in KiB."""
    text = PROC_STATUS.read_text()
    current = re.search(r"VmRSS:\s+(\d+)", text)
    peak = re.search(r"VmHWM:\s+(\d+)", text)
    assert current and peak
    return int(current[1]), int(peak[1])


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@pytest.mark.skipif(not PROC_STATUS.exists(), reason="needs /proc to read the resident set size")
async def test_huge_or_countless_headers_are_refused_and_memory_stays_bounded(server: RunningServer) -> None:
    async def huge_header(size: int) -> int | None:
        reader, writer = await connect(server)
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
        parts = [CHUNK] * (size // len(CHUNK)) + [b"\r\n\r\n"]
        sender = asyncio.create_task(stream(writer, head, parts, 0))
        try:
            return await read_status(reader, within_s=20)
        finally:
            close(writer)
            await sender

    measured = reset_peak_rss()
    before, _ = rss_kib()
    statuses = await asyncio.gather(*(huge_header(16 * MB) for _ in range(4)))
    _, peak = rss_kib()
    # Refused: a 4xx (400 from the parser, 431) or the connection closed; never served.
    assert all(status in (400, 431, None) for status in statuses), statuses
    if measured:
        assert peak - before < 50 * 1024, f"peak RSS grew by {(peak - before) // 1024} MB"

    # Many small headers (each fine, far below the size limit): 431.
    reader, writer = await connect(server)
    writer.write(request_head("GET", "/healthz", {f"X-H{i}": "v" for i in range(500)}))
    await writer.drain()
    assert await read_status(reader) in (400, 431)
    close(writer)


async def test_idle_and_slow_connections_are_closed_within_seconds(server: RunningServer) -> None:
    loop = asyncio.get_running_loop()

    async def closed_after(first: bytes) -> tuple[float, bytes]:
        """Seconds until the server closes a connection that sent `first` and then nothing."""
        reader, writer = await connect(server)
        started = loop.time()
        if first:
            writer.write(first)
            await writer.drain()
        received = b""
        try:
            async with asyncio.timeout(CLOSE_WITHIN_S + 4):
                while chunk := await reader.read(65536):
                    received += chunk
        except ConnectionResetError:
            pass
        finally:
            close(writer)
        return loop.time() - started, received

    cases = {
        "nothing sent": b"",
        "half a request head": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        "after a response (keep-alive)": request_head("GET", "/healthz", {}),
        "half a webhook body": request_head(
            "POST",
            WEBHOOK,
            {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "1000"},
        )
        + b"CallSid=CA",
    }
    results = await asyncio.gather(*(closed_after(first) for first in cases.values()))
    for (name, _), (elapsed, received) in zip(cases.items(), results, strict=True):
        assert elapsed < CLOSE_WITHIN_S, f"{name}: held open for {elapsed:.1f} s"
        if name == "after a response (keep-alive)":
            assert received.startswith(b"HTTP/1.1 200")
        if name == "half a webhook body":
            assert received == b"" or received.startswith(b"HTTP/1.1 408"), received[:40]
