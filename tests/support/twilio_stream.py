"""Twilio as the server sees it over real sockets: signed webhooks, the signed Media Stream handshake
of a call, its frames, and what the fake OpenAI side heard. Shared by the admission, stream-replay
and re-split tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import random
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from callassist.store.models import CallRow
from tests.fakes.realtime_server import FakeSession, Reply, Say, Script
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, RunningServer


def twilio_signature(url: str, params: Mapping[str, str] | None = None) -> str:
    """X-Twilio-Signature as Twilio computes it, with the test server's auth token."""
    return RequestValidator(AUTH_TOKEN).compute_signature(url, dict(params or {}))


def signed_headers(url: str, params: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"X-Twilio-Signature": twilio_signature(url, params)}


OWNER = "+15550001111"
ATTACKER = "+15557654321"
ATTESTED_A = "TN-Validation-Passed-A"
STREAM_SID = "MZ" + "5" * 32
OWNER_TOOL = "get_my_agenda"
UNCONFIRMED = "Caller ID can be faked"  # the prompt's rule for a caller whose number isn't confirmed


def noise(ms: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(ms * 8)


def call_sid(n: int) -> str:
    return f"CA{n:032x}"


def webhook(sid: str, from_number: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": from_number,
        "To": "+15559870000",
        **extra,
    }


async def post_signed(server: RunningServer, path: str, params: dict[str, str]) -> tuple[int, str]:
    """A webhook as Twilio sends it (or as an attacker replays it: same body, same signature)."""
    url = server.settings.public_url + path
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=params, headers=signed_headers(url, params)) as response,
    ):
        return response.status, await response.text()


def parameters_of(twiml: str) -> dict[str, str]:
    """The <Stream>'s <Parameter>s: what Twilio sends back in `start.customParameters`."""
    stream = ET.fromstring(twiml).find("Connect/Stream")
    if stream is None:
        return {}
    return {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}


def token_of(twiml: str) -> str | None:
    return parameters_of(twiml).get("token")


async def stream_parameters(
    server: RunningServer, sid: str, from_number: str, **extra: str
) -> dict[str, str]:
    """Twilio's webhook for a new call; the parameters its stream will carry (a token among them)."""
    status, body = await post_signed(server, "/voice/incoming", webhook(sid, from_number, **extra))
    parameters = parameters_of(body)
    assert status == 200 and parameters.get("token"), body
    return parameters


async def issue_token(server: RunningServer, sid: str, from_number: str, **extra: str) -> str:
    return (await stream_parameters(server, sid, from_number, **extra))["token"]


_fresh_calls = itertools.count(0x9000)


def stream_url(server: RunningServer, sid: str, token: str) -> str:
    """The call's own `<Stream url>`, as our TwiML gives it to Twilio."""
    return server.settings.stream_url() + f"/{sid}/{token}"


@contextlib.asynccontextmanager
async def stream(
    server: RunningServer, sid: str | None = None, token: str | None = None, **options: Any
) -> AsyncIterator[ClientConnection]:
    """The Media Stream handshake of a call, signed as Twilio signs it (over the call's own URL).
    Without a call: the handshake of a fresh call whose token is unclaimed (what a tunnel's inspector
    holds for any call it saw ringing)."""
    if sid is None or token is None:
        sid = call_sid(next(_fresh_calls))
        token = await issue_token(server, sid, "+15551230000")
    url = stream_url(server, sid, token)
    async with connect(url, additional_headers=signed_headers(url), **options) as ws:
        yield ws


CONNECTED = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_frame(sid: str, parameters: dict[str, str]) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": STREAM_SID,
                "callSid": sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": parameters,
            },
            "streamSid": STREAM_SID,
        }
    )


def stop_frame(sid: str) -> str:
    return json.dumps(
        {"event": "stop", "streamSid": STREAM_SID, "stop": {"accountSid": ACCOUNT_SID, "callSid": sid}}
    )


async def close_code_of(ws: ClientConnection, within_s: float = 5.0) -> int | None:
    """Read until the server closes the stream; its close code."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(within_s):
            while True:
                await ws.recv()
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


async def received_audio(ws: ClientConnection, size: int) -> bytes:
    audio = b""
    async with asyncio.timeout(10):
        while len(audio) < size:
            message = json.loads(await ws.recv())
            if message["event"] == "media":
                audio += base64.b64decode(message["media"]["payload"])
    return audio


def tools_of(session: FakeSession) -> set[str]:
    return {tool["name"] for tool in session.session_config.get("tools", [])}


async def call_row(server: RunningServer, sid: str) -> CallRow | None:
    async with server.services.database.session(read_only=True) as session:
        return await session.get(CallRow, sid)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def greeting_script(audio: bytes) -> Callable[[], Script]:
    return lambda: Script(replies=[Reply([Say("Hello, Dana's assistant.", audio=audio)])])


async def complete_call(server: RunningServer, sid: str, parameters: dict[str, str], greeting: bytes) -> None:
    """A whole call as Twilio makes it: the stream of `sid` (token from `parameters`) starts, hears
    the greeting, stops; then the server has nothing left open."""
    async with stream(server, sid, parameters["token"]) as ws:
        await ws.send(CONNECTED)
        await ws.send(start_frame(sid, parameters))
        assert await received_audio(ws, len(greeting)) == greeting
        await ws.send(stop_frame(sid))
    await server.services.registry.wait_idle(10)
