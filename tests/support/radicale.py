"""A real Radicale CalDAV server in a child process, on a free loopback port, for calendar tests.

Basic auth against a plain-text htpasswd file, filesystem storage in a temporary directory, one
calendar collection made with MKCALENDAR before the test sees the server.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from caldav import aio

from tests.support.process import ChildProcess, free_port

USERNAME = "owner"
PASSWORD = "correct horse battery staple"
CALENDAR_NAME = "Work"
READY_LINE = "Radicale server ready"
# Another process may take the port between free_port() and Radicale's bind; then we pick again.
_BIND_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class RadicaleServer:
    url: str  # server root: what a user types into a CalDAV client
    username: str
    password: str
    calendar_name: str  # display name of the calendar made for the test
    calendar_url: str
    process: ChildProcess

    def as_tuple(self) -> tuple[str, str, str, str]:
        return self.url, self.username, self.password, self.calendar_name


def _write_config(root: Path, port: int, username: str, password: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    users = root / "users"
    # htpasswd "plain" encryption: the password sits in clear, which is what a throwaway test wants.
    users.write_text(f"{username}:{password}\n", encoding="utf-8")
    config = root / "config"
    config.write_text(
        f"""\
[server]
hosts = 127.0.0.1:{port}
timeout = 10

[auth]
type = htpasswd
htpasswd_filename = {users}
htpasswd_encryption = plain
# Radicale sleeps after a failed login by default; the wrong-password test should not wait.
delay = 0

[rights]
type = owner_only

[storage]
filesystem_folder = {root / "collections"}

[web]
type = none

[logging]
# info is the quietest level that still prints the "server ready" line we wait for.
level = info
mask_passwords = True
""",
        encoding="utf-8",
    )
    return config


async def _start(root: Path, username: str, password: str) -> tuple[ChildProcess, int]:
    for _attempt in range(_BIND_ATTEMPTS):
        port = free_port()
        config = _write_config(root, port, username, password)
        # --config replaces the default search path, so no /etc/radicale or ~/.config leaks in.
        process = ChildProcess([sys.executable, "-m", "radicale", "--config", str(config)], env={})
        await process.start()
        try:
            await process.wait_for_line(READY_LINE, timeout=15.0)
        except AssertionError:
            await process.stop()
            if "cannot create server socket" in process.output:
                continue
            raise
        return process, port
    raise AssertionError(f"Radicale could not bind a free port in {_BIND_ATTEMPTS} attempts")


async def make_calendar(
    url: str,
    username: str,
    password: str,
    name: str,
    *,
    cal_id: str,
    components: Sequence[str] = ("VEVENT", "VTODO"),
) -> str:
    """Create a calendar collection (MKCALENDAR) in the user's home and return its URL."""
    async with aio.AsyncDAVClient(url=url, username=username, password=password, timeout=10) as client:
        principal = await client.get_principal()
        calendar = await principal.make_calendar(
            name=name, cal_id=cal_id, supported_calendar_component_set=list(components)
        )
        return str(calendar.url)


@asynccontextmanager
async def running_radicale(
    root: Path,
    *,
    username: str = USERNAME,
    password: str = PASSWORD,
    calendar_name: str = CALENDAR_NAME,
    more_calendars: Sequence[str] = (),
    task_lists: Sequence[str] = (),
) -> AsyncIterator[RadicaleServer]:
    """Start Radicale with its files under `root`, make the calendars, yield, then kill it.

    The calendar `calendar_name` always exists; `more_calendars` and `task_lists` (VTODO only) are
    made next to it.
    """
    process, port = await _start(root, username, password)
    try:
        url = f"http://127.0.0.1:{port}/"
        calendar_url = await make_calendar(url, username, password, calendar_name, cal_id="work")
        for index, name in enumerate(more_calendars):
            await make_calendar(url, username, password, name, cal_id=f"extra-{index}")
        for index, name in enumerate(task_lists):
            # Calendars that hold only VTODOs: a backend must not pick one of these for events.
            await make_calendar(url, username, password, name, cal_id=f"tasks-{index}", components=["VTODO"])
        yield RadicaleServer(url, username, password, calendar_name, calendar_url, process)
    finally:
        await process.stop()
