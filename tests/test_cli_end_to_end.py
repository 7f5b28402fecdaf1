"""The README's way of running things, as real processes: `callassist serve`, `callassist call`,
`callassist calls show`, SIGTERM, and the one-line refusals of a database that can't be used."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import sys
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callassist.simulator import CallerSimulator
from callassist.simulator.audio import silence, tone, write_wav
from callassist.store.db import Database
from callassist.store.models import CallRow
from tests.fakes.realtime_server import FakeRealtimeServer, Reply, Say, Script
from tests.support.process import ChildProcess, callassist_command, free_port
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN


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


async def test_readme_local_trial_books_a_meeting_and_takes_a_message(
    tmp_path: Path, children: list[ChildProcess]
) -> None:
    """The README's "Try it without Twilio or OpenAI", command for command: the fake plays its demo
    through the real tools, `calendar list` and `messages list` show the booking and the message,
    and the turn latency `call` prints is the one `calls show` stored."""
    fake_port, port = free_port(), free_port()
    project = tmp_path / "checkout"
    # The README's .env, with free ports instead of 8765 and 8000.
    write_dotenv(
        project,
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=f"http://127.0.0.1:{fake_port}/v1",
        CALLASSIST_WORKING_HOURS="Mon-Sun 09:00-17:00",
        CALLASSIST_PORT=str(port),
    )
    # The tests' environment names no .env (CALLASSIST_ENV_FILE=none): this one is the checkout's.
    dotenv = {"CALLASSIST_ENV_FILE": str(project / ".env")}

    def command(*args: str) -> ChildProcess:
        child = ChildProcess(callassist_command(*args), env=dotenv, cwd=project)
        children.append(child)
        return child

    fake = await ChildProcess(
        [sys.executable, "-m", "tests.fakes.realtime_server", "--port", str(fake_port)], env={}
    ).start()
    children.append(fake)
    await fake.wait_for_line("fake OpenAI Realtime")
    serve = await command("serve").start()
    await serve.wait_until_serving()

    reply = tmp_path / "reply.wav"
    say = "Hi, can you book me a meeting with Dana tomorrow?"
    call = await command("call", "--say", say, "--out", str(reply)).start()
    assert await call.wait(timeout=90) == 0, call.output
    assert "Greeting latency" in call.output and "the assistant ended the call" in call.output
    assert "No protocol violations." in call.output
    with wave.open(str(reply)) as wav:
        assert wav.getframerate() == 8000
        assert wav.getnframes() > 5 * 8000  # the greeting, the tools' answers and the goodbye
    await serve.wait_for_line("call ended: assistant-hung-up", timeout=15)

    call_sid = re.search(r"Call (CA[0-9a-f]{32})", call.output)
    assert call_sid is not None, call.output
    shown, calendar, messages = (
        command("calls", "show", "--json", call_sid[1]),
        command("calendar", "list"),
        command("messages", "list"),
    )
    await asyncio.gather(shown.start(), calendar.start(), messages.start())
    for child in (shown, calendar, messages):
        assert await child.wait(timeout=30) == 0, child.output
    assert "Call with Alex Kim" in calendar.output
    assert "Alex Kim" in messages.output and "call me back" in messages.output
    record = json.loads(shown.output)
    assert [tool["name"] for tool in record["tool_calls"]] == [
        "check_availability", "create_event", "take_message", "end_call"
    ]  # fmt: skip
    assert all(tool["ok"] for tool in record["tool_calls"])
    [row] = [line for line in call.lines if "Turn latency" in line]
    printed = [int(ms) for ms in re.findall(r"(\d+) ms", row)]
    stored = record["latency"]["turns_ms"]
    assert printed and len(printed) == len(stored), (row, stored)
    assert abs(printed[0] - stored[0]) < 50, (printed, stored)


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
        await serve.wait_until_serving()
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
        # The goodbye extends the session's instructions (persona, rules), never replaces them: either
        # as a system note added to the conversation, or as the session's instructions plus a line.
        if "instructions" in goodbye_request["response"]:
            assert "restart" in goodbye_request["response"]["instructions"]
            assert "Dana" in goodbye_request["response"]["instructions"]
        else:
            notes = [
                json.dumps(e.event["item"])
                for e in session.client_events
                if e.type == "conversation.item.create" and e.event["item"].get("role") == "system"
            ]
            assert notes and "restart" in notes[-1]
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


def write_dotenv(directory: Path, **values: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".env").write_text("".join(f"{name}={value}\n" for name, value in values.items()))


async def test_call_reads_the_dotenv_serve_reads(tmp_path: Path, children: list[ChildProcess]) -> None:
    """`callassist call` with no options finds the server's port, signs with its TWILIO_AUTH_TOKEN
    against its PUBLIC_BASE_URL, all from the .env `serve` reads; a setting that has nothing to do
    with calling being wrong is a warning, not a failure."""
    script = Script(replies=[Reply([Say("Hi", audio=tone(300, 440))])])
    async with FakeRealtimeServer(script) as fake:
        port = free_port()
        project = tmp_path / "project"
        write_dotenv(
            project,
            OPENAI_API_KEY="sk-test",
            OPENAI_BASE_URL=fake.base_url,
            OWNER_NAME="Dana",
            CALLASSIST_PORT=str(port),
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,  # the server refuses webhooks from any other account
            PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        )
        # The tests' environment names no .env (CALLASSIST_ENV_FILE=none): this one is the project's.
        dotenv = {"CALLASSIST_ENV_FILE": str(project / ".env")}
        serve = await ChildProcess(callassist_command("serve"), env=dotenv, cwd=project).start()
        children.append(serve)
        await serve.wait_until_serving()
        call = await ChildProcess(
            callassist_command("call", "--seconds", "10"),
            env={**dotenv, "CALLASSIST_VOICE": "robot"},
            cwd=project,
        ).start()
        children.append(call)
        assert await call.wait(timeout=30) == 0, call.output
    [warning] = [line for line in call.lines if line.startswith("warning: `serve` would refuse")]
    assert "CALLASSIST_VOICE: unknown voice 'robot'" in warning
    assert f"Calling http://127.0.0.1:{port} " in call.output and "Media stream open" in call.output
    assert "caller hung up" in call.output and AUTH_TOKEN not in call.output
    assert "refused" not in serve.output  # every webhook and the stream were signed as the server expects


@pytest.mark.skipif(shutil.which("sox") is None, reason="--audio needs sox")
async def test_the_turn_latency_call_prints_is_what_calls_show_stored(
    tmp_path: Path, children: list[ChildProcess]
) -> None:
    """The caller stops talking 1.5 s before their clip ends (trailing silence, as in a recording);
    the answer starts during that silence. `callassist call` and the server both count from the end
    of the speech, and agree within 50 ms."""
    clip = tmp_path / "caller.wav"
    write_wav(clip, tone(900, 300) + silence(1500))
    script = Script(
        replies=[Reply([Say("Hi", audio=tone(300, 440))]), Reply([Say("Sure", audio=tone(600, 500))])],
        transcripts=["Can Dana call me back?"],
    )
    async with FakeRealtimeServer(script) as fake:
        port = free_port()
        records = server_env(fake.base_url, port, tmp_path / "data")
        serve = await ChildProcess(callassist_command("serve"), env=records, cwd=tmp_path).start()
        children.append(serve)
        await serve.wait_until_serving()
        call = await ChildProcess(
            callassist_command("call", "--audio", str(clip), "--seconds", "20"),
            env={"CALLASSIST_PORT": str(port)},
            cwd=tmp_path,
        ).start()
        children.append(call)
        assert await call.wait(timeout=40) == 0, call.output
        await serve.wait_for_line("call ended: caller-hung-up", timeout=15)

    call_sid = re.search(r"Call (CA[0-9a-f]{32})", call.output)
    assert call_sid is not None, call.output
    [row] = [line for line in call.lines if "Turn latency" in line]
    printed = [int(ms) for ms in re.findall(r"(\d+) ms", row)]
    as_json, as_text = (
        ChildProcess(callassist_command("calls", "show", *args, call_sid[1]), env=records, cwd=tmp_path)
        for args in (("--json",), ())
    )
    children.extend((as_json, as_text))
    await asyncio.gather(as_json.start(), as_text.start())
    assert await as_json.wait(timeout=30) == 0 and await as_text.wait(timeout=30) == 0, as_json.output
    stored = json.loads(as_json.output)["latency"]["turns_ms"]
    assert len(printed) == len(stored) == 1, (row, stored)
    assert abs(printed[0] - stored[0]) < 50, (printed, stored)
    # The server VAD's silence window (500 ms) is part of it: counted from the clip's end, it would
    # have been about a second less, or not measured at all.
    assert printed[0] > 400, printed
    [shown] = [line for line in as_text.lines if "Turn latency" in line]
    assert f"{stored[0]} ms" in shown


async def test_an_unusable_database_stops_serve_and_commands_in_one_line(
    tmp_path: Path, children: list[ChildProcess]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unreachable = f"postgresql://owner:s3cret@127.0.0.1:{free_port()}/callassist"
    # "error: could not <do what the command does>: <database, password masked>: <why>", or for an
    # unsupported URL "error: unsupported database <URL, password masked>: use ...".
    cases = [
        ({"DATABASE_URL": unreachable}, ": postgresql+asyncpg://owner:***@127.0.0.1:"),
        ({"CALLASSIST_DATA_DIR": str(blocker / "data")}, f".db: cannot create its directory {blocker}"),
        ({"DATABASE_URL": "mysql://owner:s3cret@db.example/app"}, "error: unsupported database mysql://"),
    ]
    runs: list[tuple[ChildProcess, str]] = []
    for env, expected in cases:
        for command in (("serve",), ("calls", "list"), ("calendar", "list")):
            child = ChildProcess(
                callassist_command(*command),
                env={"OPENAI_API_KEY": "sk-test", "CALLASSIST_PORT": str(free_port()), **env},
                cwd=tmp_path,
            )
            children.append(child)
            runs.append((child, expected))
    await asyncio.gather(*(child.start() for child, _ in runs))
    for child, expected in runs:
        assert await child.wait(timeout=60) != 0, child.output
        assert len(child.lines) == 1 and child.lines[0].startswith("error: "), (child.command, child.output)
        assert expected in child.lines[0], (child.command, child.output)
        assert "s3cret" not in child.output and "Traceback" not in child.output
