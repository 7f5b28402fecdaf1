"""The README's way of running things, as real processes: `callassist serve`, `callassist call`, SIGTERM."""

from __future__ import annotations

import signal
import sys
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callassist.simulator import CallerSimulator
from callassist.simulator.audio import tone
from callassist.store.db import Database
from callassist.store.models import CallRow
from tests.fakes.realtime_server import FakeRealtimeServer, Reply, Say, Script
from tests.support.process import ChildProcess, callassist_command, free_port
from tests.support.server import AUTH_TOKEN


def server_env(openai_base_url: str, port: int, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": openai_base_url,
        "OWNER_NAME": "Dana",
        "CALLASSIST_DATA_DIR": str(data_dir),
        "CALLASSIST_PORT": str(port),
        **extra,
    }


@pytest.fixture
async def children() -> AsyncIterator[list[ChildProcess]]:
    started: list[ChildProcess] = []
    yield started
    for child in started:
        await child.stop()


async def test_readme_flow_serve_then_call_against_the_fake(
    tmp_path: Path, children: list[ChildProcess]
) -> None:
    fake_port, port = free_port(), free_port()
    fake = await ChildProcess(
        [sys.executable, "-m", "tests.fakes.realtime_server", "--port", str(fake_port)], env={}
    ).start()
    children.append(fake)
    await fake.wait_for_line("fake OpenAI Realtime")
    serve = await ChildProcess(
        callassist_command("serve"),
        env=server_env(f"http://127.0.0.1:{fake_port}/v1", port, tmp_path / "data"),
    ).start()
    children.append(serve)
    await serve.wait_for_line("Uvicorn running on")

    reply = tmp_path / "reply.wav"
    call = await ChildProcess(
        callassist_command(
            "call",
            "--url",
            f"http://127.0.0.1:{port}",
            "--say",
            "Hi, can you add a meeting tomorrow at 2pm?",
            "--out",
            str(reply),
            "--seconds",
            "20",
        ),
        env={},
    ).start()
    children.append(call)
    assert await call.wait(timeout=40) == 0, call.output
    assert "Greeting latency" in call.output and "Turn latency" in call.output
    with wave.open(str(reply)) as wav:
        assert wav.getframerate() == 8000
        assert wav.getnframes() > 8000  # the greeting and the answer: several seconds of audio
    # The summary is asked for before the record closes, so the last line comes a moment later.
    await serve.wait_for_line("call ended: caller-hung-up", timeout=10)


async def test_sigterm_says_goodbye_and_exits_within_ten_seconds(
    tmp_path: Path, children: list[ChildProcess]
) -> None:
    greeting = b"\x10\x20\x30\x40" * 1000
    answer = b"\x11\x22\x33\x44" * 1000
    goodbye = b"\x50\x60\x70\x80" * 2000
    script = Script(
        replies=[
            Reply([Say("Hi", audio=greeting)]),
            Reply([Say("Sure", audio=answer)]),
            Reply([Say("Bye", audio=goodbye)]),
        ],
        transcripts=["Is Dana around?"],
    )
    async with FakeRealtimeServer(script) as fake:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        serve = await ChildProcess(
            callassist_command("serve"),
            env=server_env(
                fake.base_url,
                port,
                tmp_path / "data",
                TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                PUBLIC_BASE_URL=base,
                CALLASSIST_SHUTDOWN_GRACE_SECONDS="6",
            ),
        ).start()
        children.append(serve)
        await serve.wait_for_line("Uvicorn running on")
        call = await CallerSimulator(base, auth_token=AUTH_TOKEN).place_call()
        await call.wait_until_quiet(quiet_ms=200, timeout=10)
        said = time.monotonic()
        await call.say(tone(800, 300))  # a conversation: the call will want a summary at the end
        await call.wait_until_quiet(quiet_ms=200, timeout=10, after=said)

        signalled = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        assert await serve.wait(timeout=10) == 0, serve.output
        assert time.monotonic() - signalled < 10
        # The caller heard the goodbye before the line closed, normally.
        await call.wait_closed(timeout=2)
        assert bytes(call.audio_heard) == greeting + answer + goodbye
        assert call.close_code == 1000
        session = fake.sessions[0]
        goodbye_request = [
            e.event
            for e in session.client_events
            if e.type == "response.create" and e.event["response"].get("conversation") != "none"
        ][-1]
        assert "restart" in goodbye_request["response"]["instructions"]
        assert session.closed
        assert "call ended: server-shutdown" in serve.output
        assert fake.validation_failures == []
    # The record was completed before the process exited.
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'callassist.db'}")
    try:
        async with database.session(read_only=True) as session:
            row = await session.get(CallRow, call.call_sid)
    finally:
        await database.close()
    assert row is not None and row.outcome == "server-shutdown" and row.ended_at is not None
