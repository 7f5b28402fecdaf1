"""Run a command as a real child process and wait on what it prints (no polling, no sleeps)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# `callassist serve` (or the fake) spends ~5 s of CPU importing before it prints anything on a slow
# 2-core machine; beside three busy test workers that took over 15 s (two failed runs of the suite).
SERVE_START_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def callassist_command(*args: str) -> list[str]:
    """The installed `callassist` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("callassist")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "callassist.cli", *args]


class ChildProcess:
    def __init__(self, command: Sequence[str], env: dict[str, str], cwd: Path = REPO) -> None:
        self.command = list(command)
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.cwd = cwd
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> ChildProcess:
        self._process = await asyncio.create_subprocess_exec(
            *self.command,
            env=self.env,
            cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout and self._process.stderr
        self._readers = [
            asyncio.create_task(self._read(self._process.stdout)),
            asyncio.create_task(self._read(self._process.stderr)),
        ]
        return self

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._changed.set()
        self._changed.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def wait_until_serving(self) -> str:
        """The line saying `callassist serve` listens (a server that never gets there fails)."""
        return await self.wait_for_line("Uvicorn running on", timeout=SERVE_START_S)

    async def wait_for_line(self, needle: str, timeout: float = SERVE_START_S) -> str:  # noqa: ASYNC109
        index = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for line in self.lines[index:]:
                        if needle in line:
                            return line
                    index = len(self.lines)
                    if self.returncode is not None and all(task.done() for task in self._readers):
                        break
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass
        raise AssertionError(f"{self.command[0]} never printed {needle!r}; output:\n{self.output}")

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    def send_signal(self, signum: int) -> None:
        assert self._process is not None
        self._process.send_signal(signum)

    async def wait(self, timeout: float = 15.0) -> int:  # noqa: ASYNC109
        assert self._process is not None
        code = await asyncio.wait_for(self._process.wait(), timeout)
        await asyncio.gather(*self._readers, return_exceptions=True)
        return code

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGKILL)
            await self._process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
