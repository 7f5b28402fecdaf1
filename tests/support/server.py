"""The real callassist server on a real loopback port, inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callassist.runtime import Runtime as Services
from callassist.server import CallAwareServer, build_server
from callassist.settings import Settings, load_settings

AUTH_TOKEN = "test-twilio-auth-token"
ACCOUNT_SID = "AC" + "0" * 32
# Nothing listens on the discard port: a test that should not reach OpenAI can't leave loopback.
NO_OPENAI = "http://127.0.0.1:9/v1"


@dataclass
class RunningServer:
    base_url: str
    settings: Settings
    services: Services
    server: CallAwareServer


@asynccontextmanager
async def running_server(
    openai_base_url: str | None, data_dir: Path, **overrides: Any
) -> AsyncIterator[RunningServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    values: dict[str, Any] = {
        "_env_file": None,
        "port": port,
        "public_base_url": base_url,
        "openai_api_key": "sk-test",
        "openai_base_url": openai_base_url,
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        # Twilio's REST API (texts, transfers, the health check) is a stand-in or nothing: never the
        # internet. Port 9 (discard) on loopback refuses at once.
        "twilio_api_base_url": "http://127.0.0.1:9",
        "owner_name": "Dana",
        "timezone": "America/New_York",
        "data_dir": data_dir,
        "shutdown_grace_seconds": 3.0,
    }
    values.update(overrides)
    settings = load_settings(**values)
    server = build_server(settings)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="callassist-server")
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield RunningServer(base_url, settings, server.services, server)
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(15):
                await task
        finally:
            sock.close()
